"""The gallery of a clustering: a static HTML site that shows every cluster as a card.

What it computes (vectorised numpy: no Python loop over points, so 1M points take seconds):

- ``dense_clusters``: cluster ids 0..C-1 with sizes; unassigned points (-1) are singletons.
- membership strength of every point in its cluster, the order of its card:
  ``strength_from_links``: the mean link weight to the rest of the cluster,
      s_i = sum_{j in C(i), j != i, j among i's links} w_ij / min(|C(i)| - 1, links of i),
      a missing link counting 0 (w: the reciprocal weights (p_ij + p_ji) / 2 cf-merge reads);
  ``strength_from_features``: the mean cosine to the rest of the cluster,
      s_i = (x_i . S_C - 1) / (|C| - 1) with S_C the sum of the cluster's unit features.
  Singletons have no strength (NaN).
- ``likely_strays``: in clusters of 3 or more, members whose strength is below a share
  of their cluster's median strength (0.5 for links, 0.7 for cosine; see STRAY_RATIO),
  or below an absolute bound when one is given.
- ``display_order``: clusters by falling size (ties: by label), members by falling strength.
- ``paginate``: cards packed onto pages of at most ``per_page`` images; a cluster larger
  than a page is split across consecutive pages; singletons get pages of their own.
- ``truth_summary``/``largest_splits``: with true identities, each cluster's majority
  identity and purity, the members of another identity, and the identities spread over
  the most clusters.

What it writes (``build``): DIR/index.html (summary, plots, page list, search box),
DIR/pages/c00001.html ... (cluster cards), DIR/pages/s00001.html ... (singletons),
DIR/splits.html (with truth), DIR/search.html + DIR/search/00000.js ... (the name index in
shards of ``SHARD_ROWS`` rows, loaded with <script> tags: browsers refuse fetch() of
file:// URLs, not scripts), DIR/thumbs/ab/<content hash>.jpg (96 px thumbnails, made in
parallel, named by the SHA-1 of the image's bytes so a rebuild reuses them and identical
images share one), DIR/plots/*.png. No server, no network, no external file.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CfError

THUMB_PX = 96
PER_PAGE = 300        # images (or names) on one page at most
SINGLES_PER_PAGE = 300
SHARD_ROWS = 20000    # names in one search shard (~1 MB)
# Strays: strength below this share of the cluster's median. Measured on the demo round
# (1940 points, 417 members of another identity than their cluster's majority): links
# 0.5 -> 303 marked, 67% of them truly of another identity; cosine 0.7 -> 104, 75%.
STRAY_RATIO = {"link weight": 0.5, "cosine": 0.7}
STRAY_MIN_SIZE = 3
MARKER = ".cftools-gallery"  # a folder holding it may be replaced by a rebuild
BLOCK_ROWS = 1 << 16


# --------------------------------------------------------------------------- clusters


def dense_clusters(labels: np.ndarray):
    """(cid, sizes, label_of): dense ids 0..C-1 per point, the size of each cluster, and
    the file's label of each cluster (-1 for an unassigned point, each its own singleton)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    assigned = labels >= 0
    uniq, inv = np.unique(labels[assigned], return_inverse=True)
    cid = np.empty(n, dtype=np.int64)
    cid[assigned] = inv
    n_un = int(n - assigned.sum())
    cid[~assigned] = uniq.size + np.arange(n_un)
    label_of = np.concatenate([uniq, np.full(n_un, -1, dtype=np.int64)])
    sizes = np.bincount(cid, minlength=label_of.size).astype(np.int64)
    return cid, sizes, label_of


def strength_from_links(cid, sizes, indices, weights, block_rows: int = BLOCK_ROWS):
    """Mean link weight of each point to the rest of its cluster (NaN for singletons)."""
    n = cid.shape[0]
    out = np.full(n, np.nan, dtype=np.float32)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        idx = np.asarray(indices[start:stop])
        w = np.asarray(weights[start:stop], dtype=np.float32)
        rows = np.arange(start, stop)[:, None]
        valid = (idx >= 0) & (idx != rows)
        mine = cid[start:stop]
        same = valid & (cid[np.where(valid, idx, 0)] == mine[:, None])
        total = np.where(same, w, 0).sum(axis=1)
        denom = np.minimum(sizes[mine] - 1, valid.sum(axis=1))
        ok = denom > 0
        out[start:stop][ok] = total[ok] / denom[ok]
        out[start:stop][(sizes[mine] > 1) & ~ok] = 0.0  # in a cluster, but no link at all
    return out


def strength_from_features(cid, sizes, read_block, n: int, block_rows: int = BLOCK_ROWS):
    """Mean cosine of each point to the rest of its cluster (NaN for singletons).
    ``read_block(start, stop)`` returns unit feature rows; the features are read twice,
    a block at a time, and only clusters of 2 or more hold a sum (C2 x d floats)."""
    from scipy import sparse

    multi = sizes > 1
    compact = np.full(sizes.size, -1, dtype=np.int64)
    compact[multi] = np.arange(int(multi.sum()))
    sums = None
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        x = np.asarray(read_block(start, stop), dtype=np.float32)
        c = compact[cid[start:stop]]
        keep = np.flatnonzero(c >= 0)
        if sums is None:
            sums = np.zeros((int(multi.sum()), x.shape[1]), dtype=np.float64)
        if keep.size:
            onehot = sparse.csr_matrix((np.ones(keep.size), (c[keep], keep)),
                                       shape=(sums.shape[0], stop - start))
            sums += onehot @ x.astype(np.float64)
    out = np.full(n, np.nan, dtype=np.float32)
    if sums is None or sums.shape[0] == 0:
        return out
    sums = sums.astype(np.float32)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        c = compact[cid[start:stop]]
        keep = np.flatnonzero(c >= 0)
        if not keep.size:
            continue
        x = np.asarray(read_block(start, stop), dtype=np.float32)[keep]
        dots = np.einsum("ij,ij->i", x, sums[c[keep]])
        out[start + keep] = (dots - 1.0) / (sizes[cid[start + keep]] - 1)
    return out


def _group_median(cid_sorted, values_sorted, starts, counts):
    """Median of each group of a (cid, value)-sorted array, groups given by starts/counts."""
    lo = values_sorted[starts + (counts - 1) // 2]
    hi = values_sorted[starts + counts // 2]
    return (lo + hi) / 2


def cluster_medians(cid, sizes, strength) -> np.ndarray:
    """Median strength of each cluster (NaN for singletons), by one sort of all points."""
    med = np.full(sizes.size, np.nan)
    pts = np.flatnonzero(~np.isnan(strength))
    if pts.size:
        order = np.lexsort((strength[pts], cid[pts]))
        c, v = cid[pts][order], strength[pts][order].astype(np.float64)
        groups, starts, counts = np.unique(c, return_index=True, return_counts=True)
        med[groups] = _group_median(c, v, starts, counts)
    return med


def likely_strays(cid, sizes, strength, *, ratio: float | None = None,
                  below: float | None = None, min_size: int = STRAY_MIN_SIZE) -> np.ndarray:
    """Boolean mask of likely strays: in clusters of ``min_size`` or more, a strength
    below ``ratio`` times the cluster's median strength; and (when given) any strength
    below the absolute bound ``below``."""
    n = cid.shape[0]
    stray = np.zeros(n, dtype=bool)
    has = ~np.isnan(strength)
    if below is not None:
        stray |= has & (strength < below)
    if ratio is not None:
        med = cluster_medians(cid, sizes, strength)
        big = has & (sizes[cid] >= min_size)
        stray[big] |= strength[big] < ratio * med[cid[big]]
    return stray


def display_order(cid, sizes, label_of, strength):
    """(cluster_order, point_order): clusters by falling size then label (unassigned
    last among singletons), and all points grouped by cluster in that order, each
    cluster's members by falling strength (ties: by index)."""
    unassigned = label_of < 0
    cluster_order = np.lexsort((np.where(unassigned, np.iinfo(np.int64).max, label_of),
                                unassigned, -sizes))
    rank = np.empty_like(cluster_order)
    rank[cluster_order] = np.arange(cluster_order.size)
    s = np.where(np.isnan(strength), -np.inf, strength)
    point_order = np.lexsort((np.arange(cid.size), -s, rank[cid]))
    return cluster_order, point_order


@dataclass
class Page:
    """One page: its file name and the pieces of clusters on it, as (cluster rank, first
    member, end member) in display order; a cluster split over pages has several pieces."""

    name: str
    pieces: list = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(b - a for _, a, b in self.pieces)


def paginate(sizes_by_rank: np.ndarray, per_page: int = PER_PAGE,
             singles_per_page: int = SINGLES_PER_PAGE):
    """(cluster pages, singleton pages) for clusters given by size in display order.
    Cards are packed greedily; no page holds more than per_page members."""
    sizes_by_rank = np.asarray(sizes_by_rank, dtype=np.int64)
    multi = int((sizes_by_rank > 1).sum())
    pages, current = [], Page("")
    for rank in range(multi):  # a loop over clusters, not points
        size = int(sizes_by_rank[rank])
        if current.count and current.count + size > per_page:
            pages.append(current)
            current = Page("")
        start = 0
        while start < size:
            take = min(size - start, per_page - current.count)
            current.pieces.append((rank, start, start + take))
            start += take
            if current.count >= per_page:
                pages.append(current)
                current = Page("")
    if current.pieces:
        pages.append(current)
    for i, p in enumerate(pages):
        p.name = f"c{i + 1:05d}.html"
    n_single = sizes_by_rank.size - multi
    singles = []
    for i, a in enumerate(range(0, n_single, singles_per_page)):
        b = min(n_single, a + singles_per_page)
        singles.append(Page(f"s{i + 1:05d}.html", [(multi + a, 0, b - a)]))
    return pages, singles


# --------------------------------------------------------------------------- truth


def truth_summary(cid, n_clusters: int, truth):
    """(majority, majority_count, known, other): per cluster its majority identity (-1
    when no member's identity is known), how many members hold it and how many have a
    known identity (purity = majority_count / known); per point, whether its known
    identity differs from its cluster's majority."""
    truth = np.asarray(truth, dtype=np.int64)
    known_pt = truth >= 0
    majority = np.full(n_clusters, -1, dtype=np.int64)
    maj_count = np.zeros(n_clusters, dtype=np.int64)
    known = np.bincount(cid[known_pt], minlength=n_clusters).astype(np.int64)
    if known_pt.any():
        pairs = np.stack([cid[known_pt], truth[known_pt]], axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        # per cluster, the pair with the largest count (ties: the smaller identity)
        order = np.lexsort((uniq[:, 1], -counts, uniq[:, 0]))
        first = np.ones(order.size, dtype=bool)
        first[1:] = uniq[order[1:], 0] != uniq[order[:-1], 0]
        best = order[first]
        majority[uniq[best, 0]] = uniq[best, 1]
        maj_count[uniq[best, 0]] = counts[best]
    other = known_pt & (truth != majority[cid])
    return majority, maj_count, known, other


def largest_splits(cid, truth, top: int = 100):
    """The identities spread over the most clusters: a list of (identity, size, pieces)
    with pieces [(cluster id, members of the identity in it), ...] largest first."""
    truth = np.asarray(truth, dtype=np.int64)
    known = truth >= 0
    if not known.any():
        return []
    pairs = np.stack([truth[known], cid[known]], axis=1)
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    ids, first, n_pieces = np.unique(uniq[:, 0], return_index=True, return_counts=True)
    size = np.add.reduceat(counts, first)
    split = n_pieces > 1
    order = np.lexsort((ids[split], -size[split], -n_pieces[split]))[:top]
    out = []
    for i in np.flatnonzero(split)[order]:  # at most `top` identities
        sl = slice(first[i], first[i] + n_pieces[i])
        pc = sorted(zip(uniq[sl, 1].tolist(), counts[sl].tolist()), key=lambda t: (-t[1], t[0]))
        out.append((int(ids[i]), int(size[i]), pc))
    return out


# --------------------------------------------------------------------------- thumbnails


def _thumb_one(args):
    """Worker: (source path, output root, old root or None) -> relative thumb path or
    an error string starting with '!'."""
    src, root, old = args
    try:
        with open(src, "rb") as fh:
            data = fh.read()
    except OSError as err:
        return "!" + (err.strerror or type(err).__name__)
    digest = hashlib.sha1(data).hexdigest()[:20]
    rel = f"thumbs/{digest[:2]}/{digest}.jpg"
    dst = os.path.join(root, rel)
    if os.path.exists(dst):
        return rel
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if old is not None and os.path.exists(os.path.join(old, rel)):
        try:
            os.link(os.path.join(old, rel), dst)
            return rel
        except OSError:
            pass
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a lower scale
            im = im.convert("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB")
            im.thumbnail((THUMB_PX, THUMB_PX))
            tmp = f"{dst}.{os.getpid()}.tmp"
            im.save(tmp, "JPEG", quality=85)
            os.replace(tmp, dst)
    except Exception as err:  # noqa: BLE001 - a bad image never stops the gallery
        return "!" + (str(err).splitlines()[0][:80] if str(err) else type(err).__name__)
    return rel


def make_thumbnails(paths, root, *, old_root=None, workers: int | None = None, progress=None):
    """Thumbnails of ``paths`` under root/thumbs (in parallel); returns one relative path
    per input, or None where the image could not be read, and the error of each of those."""
    workers = max(1, workers or os.cpu_count() or 1)
    jobs = [(p, str(root), None if old_root is None else str(old_root)) for p in paths]
    results = []
    if workers == 1 or len(jobs) < 64:
        for j in jobs:
            results.append(_thumb_one(j))
            if progress is not None:
                progress.update(1)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for r in pool.map(_thumb_one, jobs, chunksize=64):
                results.append(r)
                if progress is not None:
                    progress.update(1)
    rels = [None if r.startswith("!") else r for r in results]
    errors = {p: r[1:] for p, r in zip(paths, results) if r.startswith("!")}
    return rels, errors


# --------------------------------------------------------------------------- the site

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{background:#263238;color:#eee;padding:8px 16px;display:flex;gap:16px;align-items:center;
flex-wrap:wrap}header a{color:#cfe}header form{margin-left:auto}
main{padding:12px 16px}a{color:#1565c0}
.card{background:#fff;border-radius:6px;margin:0 0 14px;padding:8px 10px;box-shadow:0 1px 2px #0002}
.card h2{font-size:15px;margin:0 0 6px}.card h2 small{font-weight:normal;color:#555}
.ms{display:flex;flex-wrap:wrap;gap:4px}
.m{display:inline-block;position:relative;border:3px solid transparent;border-radius:3px;
line-height:0}.m img{width:96px;height:96px;object-fit:contain;background:#ddd}
.n .m{line-height:1.3;padding:2px 5px;background:#eef;border-radius:3px;font-size:12px}
.m.s{border:3px dashed #d32f2f}.m.o{outline:3px solid #ff9800;outline-offset:-1px}
.m.s::after{content:"stray";position:absolute;left:0;top:0;background:#d32f2f;color:#fff;
font-size:10px;line-height:1.2;padding:0 2px}.n .m.s::after{position:static;margin-left:4px}
.m.broken img{outline:3px solid magenta}
.m:target{box-shadow:0 0 0 4px #1565c0}
nav.pager{margin:8px 0;display:flex;gap:10px;flex-wrap:wrap;align-items:center}
table{border-collapse:collapse;background:#fff}td,th{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:left}td.r,th.r{text-align:right}.plots img{max-width:100%;background:#fff;margin:4px}
.legend span{margin-right:14px}.key{display:inline-block;width:14px;height:14px;vertical-align:middle}
"""

# Marks images that failed to load (magenta) and records the count on <html>, where a
# headless browser's DOM dump (and a person) can read it.
CHECK_JS = """<script>window.addEventListener('load',function(){var im=document.images,b=0,l=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)l++;else{b++;
var p=im[i].parentNode;if(p)p.className+=' broken';}}
document.documentElement.setAttribute('data-images',im.length);
document.documentElement.setAttribute('data-loaded',l);
document.documentElement.setAttribute('data-broken',b);});</script>"""


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _head(title: str, up: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_esc(title)}"
            f"</title><link rel=stylesheet href=\"{up}style.css\"></head><body>"
            f"<header><b>cftools gallery</b><a href=\"{up}index.html\">index</a>"
            f"<form action=\"{up}search.html\" method=get><input name=q placeholder=\"search names"
            f" or #cluster\" size=28> <button>search</button></form></header><main>")


def _tail() -> str:
    return f"</main>{CHECK_JS}</body></html>\n"


def _pager(pages, i: int, what: str) -> str:
    n = len(pages)
    parts = [f"{what} page {i + 1} of {n}"]
    if i > 0:
        parts.append(f"<a href=\"{pages[0].name}\">first</a>")
        parts.append(f"<a rel=prev href=\"{pages[i - 1].name}\">previous</a>")
    if i + 1 < n:
        parts.append(f"<a rel=next href=\"{pages[i + 1].name}\">next</a>")
        parts.append(f"<a href=\"{pages[-1].name}\">last</a>")
    return "<nav class=pager>" + " · ".join(parts) + "</nav>"


@dataclass
class GalleryData:
    """Everything the pages show, per point and per cluster (dense ids)."""

    names: np.ndarray            # N strings (object)
    cid: np.ndarray              # N dense cluster ids
    sizes: np.ndarray            # C
    label_of: np.ndarray         # C file labels (-1 unassigned)
    strength: np.ndarray         # N float (NaN singletons)
    stray: np.ndarray            # N bool
    thumbs: list | None = None   # N relative thumb paths (None: no image) or None: names only
    links: list | None = None    # N hrefs to the originals (or None)
    truth: np.ndarray | None = None
    truth_names: dict | None = None
    strength_kind: str = "links"  # or "cosine"


def _ident(data: GalleryData, t: int) -> str:
    if t < 0:
        return "unknown"
    if data.truth_names and str(t) in data.truth_names:
        return str(data.truth_names[str(t)])
    return str(t)


def _member_renderer(data: GalleryData, other: np.ndarray, up: str):
    """A function point -> its HTML; per-point values are turned into Python lists once
    (indexing numpy scalars one by one costs several times more at 1M points)."""
    names = data.names.tolist() if isinstance(data.names, np.ndarray) else list(data.names)
    stray, oth = data.stray.tolist(), other.tolist()
    strength = data.strength.tolist()
    truth = data.truth.tolist() if data.truth is not None else None
    thumbs, links, kind = data.thumbs, data.links, data.strength_kind

    def render(i: int) -> str:
        cls = "m" + (" s" if stray[i] else "") + (" o" if oth[i] else "")
        s = strength[i]
        tip = names[i] + ("" if s != s else f" · {kind} {s:.3f}")
        if truth is not None:
            tip += f" · identity {_ident(data, truth[i])}"
        tip = _esc(tip)
        thumb = thumbs[i] if thumbs is not None else None
        if thumb is None:
            return f"<span class=\"{cls}\" id=i{i} title=\"{tip}\">{_esc(names[i])}</span>"
        href = links[i] if links is not None and links[i] else f"{up}{thumb}"
        return (f"<a class=\"{cls}\" id=i{i} title=\"{tip}\" href=\"{_esc(href)}\">"
                f"<img src=\"{up}{thumb}\" alt=\"{_esc(names[i])}\" width=96 height=96></a>")

    return render


def build(out_dir, data: GalleryData, *, title: str = "clusters", summary: dict | None = None,
          plots: dict | None = None, per_page: int = PER_PAGE, splits_top: int = 100,
          progress=None) -> dict:
    """Write the site into out_dir (an existing empty folder). Returns figures about it."""
    out_dir = Path(out_dir)
    (out_dir / "pages").mkdir(exist_ok=True)
    (out_dir / "search").mkdir(exist_ok=True)
    (out_dir / "style.css").write_text(CSS)
    n, C = data.cid.size, data.sizes.size
    cluster_order, point_order = display_order(data.cid, data.sizes, data.label_of, data.strength)
    sizes_by_rank = data.sizes[cluster_order]
    pages, singles = paginate(sizes_by_rank, per_page, per_page)
    # where each point sits in point_order: members of the cluster of rank r occupy
    # point_order[offset[r]:offset[r] + size]
    offset = np.concatenate([[0], np.cumsum(sizes_by_rank)])
    truth_info = None
    if data.truth is not None:
        truth_info = truth_summary(data.cid, C, data.truth)
    other = truth_info[3] if truth_info else np.zeros(n, dtype=bool)
    page_of_point = np.empty(n, dtype=np.int32)  # index into pages + singles
    page_of_cluster = {}  # cluster rank -> first page name (clusters of 2+ only)
    all_pages = pages + singles
    render = _member_renderer(data, other, "../")
    strays_in = np.bincount(data.cid, weights=data.stray, minlength=C).astype(np.int64)
    kind = "n" if data.thumbs is None else "t"
    bar = progress(total=len(all_pages), desc="writing pages", unit="page") if progress else None
    for pi, page in enumerate(all_pages):
        is_single = page.name.startswith("s")
        group = singles if is_single else pages
        gi = pi - (len(pages) if is_single else 0)
        body = [_head(f"{title}: {'singletons' if is_single else 'clusters'} page {gi + 1}", "../"),
                _pager(group, gi, "singletons" if is_single else "clusters"), _legend(data)]
        for rank, a, b in page.pieces:
            if is_single:
                pts = point_order[offset[rank]:offset[rank] + (b - a)]
                page_of_point[pts] = pi
                body.append(f"<section class=\"card {kind}\"><h2>{b - a} singletons "
                            f"<small>(clusters of one member, unassigned points included)</small>"
                            f"</h2><div class=ms>")
                body.append("".join(map(render, pts.tolist())))
                body.append("</div></section>")
                continue
            c = int(cluster_order[rank])
            pts = point_order[offset[rank] + a:offset[rank] + b]
            page_of_point[pts] = pi
            page_of_cluster.setdefault(rank, page.name)
            size = int(data.sizes[c])
            part = "" if (a == 0 and b == size) else f" <small>(members {a + 1}-{b} of {size})</small>"
            info = ""
            if truth_info is not None:
                maj, mc, kn = truth_info[0][c], truth_info[1][c], truth_info[2][c]
                info = (f" <small>purity {100.0 * mc / kn:.0f}% · majority identity "
                        f"{_esc(_ident(data, int(maj)))}</small>" if kn else
                        " <small>no member of known identity</small>")
            nstray = int(strays_in[c])
            strays = (f" <small>· likely strays: {nstray}</small>" if nstray else "")
            body.append(f"<section class=\"card {kind}\" id=c{int(data.label_of[c])}>"
                        f"<h2>cluster {int(data.label_of[c])} <small>· {size} members</small>"
                        f"{part}{info}{strays}</h2><div class=ms>")
            body.append("".join(map(render, pts.tolist())))
            body.append("</div></section>")
        body.append(_pager(group, gi, "singletons" if is_single else "clusters"))
        body.append(_tail())
        (out_dir / "pages" / page.name).write_text("".join(body), encoding="utf-8")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    n_shards = _write_search(out_dir, data, point_order, page_of_point, all_pages)
    n_split_ids = 0
    if data.truth is not None:
        splits = largest_splits(data.cid, data.truth, splits_top)
        n_split_ids = len(splits)
        _write_splits(out_dir, data, splits, cluster_order, page_of_cluster, point_order,
                      offset, title)
    figures = {"points": int(n), "clusters": int(C), "cards": int((data.sizes > 1).sum()),
               "singletons": int((data.sizes == 1).sum()),
               "cluster_pages": len(pages), "singleton_pages": len(singles),
               "search_shards": n_shards, "strays": int(data.stray.sum()),
               "largest": int(data.sizes.max()) if C else 0, "split_identities": n_split_ids}
    _write_index(out_dir, data, figures, pages, singles, title, summary or {}, plots or {})
    (out_dir / MARKER).write_text(json.dumps(figures) + "\n")
    return figures


def _legend(data: GalleryData) -> str:
    parts = [f"members ordered by mean {data.strength_kind} to the rest of their cluster"
             " (hover for names)",
             "<span><i class=key style=\"border:3px dashed #d32f2f\"></i> likely stray</span>"]
    if data.truth is not None:
        parts.append("<span><i class=key style=\"outline:3px solid #ff9800\"></i> "
                     "another identity than the cluster's majority</span>")
    return "<p class=legend>" + " · ".join(parts) + "</p>"


def _write_search(out_dir: Path, data: GalleryData, point_order, page_of_point, all_pages) -> int:
    """Shards search/00000.js ... each calling cfShard(i, rows) with rows [name, cluster
    label, page, point]; search.html loads them one by one with <script> tags."""
    names = data.names[point_order]
    clusters = data.label_of[data.cid[point_order]].tolist()
    page_names = [p.name[:-5] for p in all_pages]
    pages = [page_names[p] for p in page_of_point[point_order].tolist()]
    pts = point_order.tolist()
    n_shards = max(1, -(-len(pts) // SHARD_ROWS))
    for s in range(n_shards):
        a, b = s * SHARD_ROWS, min(len(pts), (s + 1) * SHARD_ROWS)
        rows = list(zip(names[a:b].tolist(), clusters[a:b], pages[a:b], pts[a:b]))
        (out_dir / "search" / f"{s:05d}.js").write_text(
            f"cfShard({s},{json.dumps(rows, separators=(',', ':'), ensure_ascii=False)});\n",
            encoding="utf-8")
    (out_dir / "search.html").write_text(
        _head("search", "") + "<h1>search</h1><p id=status></p><ol id=hits></ol>"
        + SEARCH_JS.replace("__SHARDS__", str(n_shards)) + _tail(), encoding="utf-8")
    return n_shards


SEARCH_JS = """<script>
var SHARDS=__SHARDS__,LIMIT=500,q=(new URLSearchParams(location.search).get('q')||'').trim(),
ql=q.toLowerCase(),cl=/^#?\\d+$/.test(q)?parseInt(q.replace('#',''),10):null,hits=0,
st=document.getElementById('status'),ol=document.getElementById('hits');
document.querySelector('header input').value=q;
function cfShard(i,rows){for(var r=0;r<rows.length&&hits<LIMIT;r++){var x=rows[r];
if((ql&&x[0].toLowerCase().indexOf(ql)>=0)||(cl!==null&&x[1]===cl)){hits++;var li=document.createElement('li'),
a=document.createElement('a');a.href='pages/'+x[2]+'.html#i'+x[3];a.textContent=x[0];li.appendChild(a);
li.appendChild(document.createTextNode(' · cluster '+x[1]+' · page '+x[2]));ol.appendChild(li);}}
st.textContent='searched '+(i+1)+' of '+SHARDS+' shards: '+hits+' hits'+(hits>=LIMIT?' (first '+LIMIT+')':'');
if(i+1<SHARDS&&hits<LIMIT)load(i+1);else st.setAttribute('data-done','1');}
function load(i){var s=document.createElement('script');s.src='search/'+('0000'+i).slice(-5)+'.js';
document.body.appendChild(s);}
if(q){st.textContent='searching...';load(0);}else{st.textContent='type part of a name, or #label for a cluster';}
</script>"""


def _write_splits(out_dir, data, splits, cluster_order, page_of_cluster, point_order, offset,
                  title):
    rank = np.empty_like(cluster_order)
    rank[cluster_order] = np.arange(cluster_order.size)
    # the strongest member of each (identity, cluster) piece: first in display order
    C = np.int64(data.sizes.size)
    keys = data.truth[point_order].astype(np.int64) * C + data.cid[point_order]
    uniq, first_at = np.unique(keys, return_index=True)

    def representative(ident: int, c: int) -> int:
        return int(point_order[first_at[np.searchsorted(uniq, ident * C + c)]])

    rows = []
    for ident, size, pieces in splits:
        cells = []
        singles = 0
        for c, cnt in pieces[:30]:
            r = int(rank[c])
            if data.sizes[c] == 1:
                singles += 1
                continue
            where = page_of_cluster.get(r)
            label = int(data.label_of[c])
            first = representative(ident, c)
            thumb = ""
            if data.thumbs is not None and data.thumbs[first] is not None:
                thumb = f"<img src=\"{data.thumbs[first]}\" width=48 height=48 alt=\"\"> "
            cells.append(f"<a href=\"pages/{where}#c{label}\">{thumb}cluster {label}</a> "
                         f"({cnt} of {int(data.sizes[c])})")
        singles += sum(1 for c, _ in pieces[30:] if data.sizes[c] == 1)
        more = len([1 for c, _ in pieces[30:] if data.sizes[c] > 1])
        if singles:
            cells.append(f"{singles} as singletons")
        if more:
            cells.append(f"and {more} more clusters")
        rows.append(f"<tr><td>{_esc(_ident(data, ident))}</td><td class=r>{size}</td>"
                    f"<td class=r>{len(pieces)}</td><td>{' · '.join(cells)}</td></tr>")
    (out_dir / "splits.html").write_text(
        _head(f"{title}: largest splits", "") + "<h1>largest splits</h1><p>True identities "
        "spread over the most clusters (singletons counted as clusters), most pieces first.</p>"
        "<table><tr><th>identity</th><th class=r>images</th><th class=r>clusters</th>"
        "<th>where</th></tr>" + "".join(rows) + "</table>" + _tail(), encoding="utf-8")


def _write_index(out_dir, data, figures, pages, singles, title, summary, plots):
    f = figures
    parts = [_head(title, ""), f"<h1>{_esc(title)}</h1>",
             f"<p>{f['points']} points in {f['cards']} clusters of 2 or more "
             f"(largest {f['largest']}) and {f['singletons']} singletons; {f['strays']} likely "
             f"strays marked. Members are ordered by their mean {data.strength_kind} to the rest"
             " of their cluster.</p>"]
    if summary:
        parts.append("<table>" + "".join(f"<tr><td>{_esc(k)}</td><td class=r>{_esc(v)}</td></tr>"
                                          for k, v in summary.items()) + "</table>")
    links = []
    if pages:
        links.append(f"<a href=\"pages/{pages[0].name}\">clusters</a> ({len(pages)} pages)")
    if singles:
        links.append(f"<a href=\"pages/{singles[0].name}\">singletons</a> ({len(singles)} pages)")
    if data.truth is not None:
        links.append("<a href=\"splits.html\">largest splits</a>")
    parts.append("<p>" + " · ".join(links) + "</p>")
    if pages:
        first = pages[:40]
        parts.append("<h2>cluster pages</h2><p class=pagelist>" + " ".join(
            f"<a href=\"pages/{p.name}\">{i + 1}</a>" for i, p in enumerate(first))
            + (f" ... <a href=\"pages/{pages[-1].name}\">{len(pages)}</a>" if len(pages) > 40
               else "") + "</p>")
    if plots:
        parts.append("<h2>plots</h2><div class=plots>" + "".join(
            f"<a href=\"{_esc(rel)}\"><img src=\"{_esc(rel)}\" alt=\"{_esc(name)}\" "
            f"title=\"{_esc(name)}\"></a>" for name, rel in plots.items()) + "</div>")
    parts.append(_tail())
    (out_dir / "index.html").write_text("".join(parts), encoding="utf-8")


# --------------------------------------------------------------------------- atomic folder


class AtomicDir:
    """Build a folder beside its final name, then swap it in: a failed or interrupted
    build leaves DIR as it was. DIR may be replaced only if it is missing, empty, or a
    gallery written before (it holds the MARKER file)."""

    def __init__(self, out):
        self.out = Path(out)
        parent = self.out.parent if str(self.out.parent) else Path(".")
        if not parent.is_dir():
            raise CfError(f"output directory {parent} does not exist", self.out)
        if self.out.exists():
            if not self.out.is_dir():
                raise CfError("exists and is not a folder", self.out)
            if any(self.out.iterdir()) and not (self.out / MARKER).exists():
                raise CfError("exists, is not empty and is not a cftools gallery; "
                              "choose another folder", self.out)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp = self.out.with_name(f".{self.out.name}.cf-tmp-{tag}")
        self.old = self.out.with_name(f".{self.out.name}.cf-old-{tag}")
        self.previous = self.out if (self.out / MARKER).exists() else None

    def __enter__(self):
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if self.out.exists():
            os.replace(self.out, self.old)
        os.replace(self.tmp, self.out)
        shutil.rmtree(self.old, ignore_errors=True)
        return False
