"""The gallery of a clustering: a static HTML site that shows every cluster as a card.

What it writes (``build``): DIR/index.html (summary, plots, page list, search box),
DIR/pages/c00001.html ... (cluster cards), DIR/pages/s00001.html ... (singletons),
DIR/splits.html (with truth), DIR/search.html + DIR/search/00000.js ... (the name index in
shards of ``SHARD_ROWS`` rows, loaded with <script> tags: browsers refuse fetch() of
file:// URLs, not scripts), DIR/thumbs/ (thumbnails.py), DIR/plots/*.png. No server, no
network, no external file. What the cards show is computed in cluster_view.py.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import answers as A
from .cluster_view import PER_PAGE, display_order, largest_splits, paginate, truth_summary

SHARD_ROWS = 20000    # names in one search shard (~1 MB)
MARKER = ".cftools-gallery"  # a folder holding it may be replaced by a rebuild


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


def _tail(up: str = "") -> str:
    return f"</main>{CHECK_JS}{A.script_tag(up)}</body></html>\n"


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
    features_id: str = ""        # the set the answers are about (report/answers.py)
    clusters_id: str = ""
    questions: dict | None = None  # cf-eval review's questions: review.html


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
    (out_dir / "style.css").write_text(CSS + A.CSS)
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
            pts = point_order[offset[rank] + a:offset[rank] + b]
            page_of_point[pts] = pi
            page_of_cluster.setdefault(rank, page.name)
            core = point_order[offset[rank]:offset[rank] + 3]
            body.append(_cluster_card(data, int(cluster_order[rank]), pts, a, b, truth_info, core,
                                      int(strays_in[cluster_order[rank]]), kind, render))
        body.append(_pager(group, gi, "singletons" if is_single else "clusters"))
        body.append(_tail("../"))
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
    A.write_script(out_dir, data.features_id, n, data.clusters_id)
    if data.questions is not None:
        figures["questions"] = _write_review(out_dir, data, other, cluster_order, point_order,
                                             offset, title)
    _write_index(out_dir, data, figures, pages, singles, title, summary or {}, plots or {})
    (out_dir / MARKER).write_text(json.dumps(figures) + "\n")
    return figures


def _write_review(out_dir: Path, data: GalleryData, other, cluster_order, point_order, offset,
                  title: str) -> int:
    """review.html: the questions, each side shown by a few of its cluster's members."""
    members = {int(data.label_of[c]): point_order[offset[r]:offset[r] + A.SHOWN_PER_SIDE]
               for r, c in enumerate(cluster_order.tolist())}
    (out_dir / "review.html").write_text(A.review_page(
        data.questions, _member_renderer(data, other, ""),
        lambda lab: [int(x) for x in members.get(int(lab), [])]
        if lab is not None and int(lab) >= 0 else [],
        _head(f"{title}: review", ""), _tail()), encoding="utf-8")
    return len(data.questions.get("questions", []))


def _cluster_card(data: GalleryData, c: int, pts, a: int, b: int, truth_info, core, nstray: int,
                  kind: str, render) -> str:
    """The card of cluster c (members a..b of it when it spans pages)."""
    size = int(data.sizes[c])
    part = "" if (a == 0 and b == size) else f" <small>(members {a + 1}-{b} of {size})</small>"
    info = ""
    if truth_info is not None:
        maj, mc, kn = truth_info[0][c], truth_info[1][c], truth_info[2][c]
        info = (f" <small>purity {100.0 * mc / kn:.0f}% · majority identity "
                f"{_esc(_ident(data, int(maj)))}</small>" if kn else
                " <small>no member of known identity</small>")
    strays = (f" <small>· likely strays: {nstray}</small>" if nstray else "")
    return (f"<section class=\"card {kind}\" id=c{int(data.label_of[c])}"
            f"{A.card_attrs(data.label_of[c], core)}>"
            f"<h2>cluster {int(data.label_of[c])} <small>· {size} members</small>"
            f"{part}{info}{strays}</h2><div class=ms>" + "".join(map(render, pts.tolist()))
            + "</div></section>")


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
if((ql&&x[0].toLowerCase().indexOf(ql)>=0)||(cl!==null&&x[1]===cl)){hits++;
var li=document.createElement('li'),
a=document.createElement('a');a.href='pages/'+x[2]+'.html#i'+x[3];a.textContent=x[0];li.appendChild(a);
li.appendChild(document.createTextNode(' · cluster '+x[1]+' · page '+x[2]));ol.appendChild(li);}}
st.textContent='searched '+(i+1)+' of '+SHARDS+' shards: '+hits+' hits'+(hits>=LIMIT?' (first '+LIMIT+')':'');
if(i+1<SHARDS&&hits<LIMIT)load(i+1);else st.setAttribute('data-done','1');}
function load(i){var s=document.createElement('script');s.src='search/'+('0000'+i).slice(-5)+'.js';
document.body.appendChild(s);}
if(q){st.textContent='searching...';load(0);}
else{st.textContent='type part of a name, or #label for a cluster';}
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
    if data.questions is not None:
        links.append(f"<a href=\"review.html\">review</a> "
                     f"({len(data.questions.get('questions', []))} questions to answer)")
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
