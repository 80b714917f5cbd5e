"""cf-eval gallery: the command end to end, and the site loaded from disk in a real browser
(headless chromium). The ordering, paging, strays and purity it shows: tests/report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, chromium

from cftools.formats.features import write_features
from cftools.formats.writing import write_artifact


def cf_eval(*args, cwd=None, timeout=300):
    env = dict(os.environ, COLUMNS="100")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "cftools.commands.eval", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


# --------------------------------------------------------------------------- the command


def _image(path: Path, colour, size=(40, 50)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def small_round(d: Path, *, with_images=True, n_ids=6, per_id=5, singles=4):
    """Images of a few identities, their 'features' (clustered with one mistake), clusters."""
    rng = np.random.default_rng(0)
    names, truth = [], []
    for i in range(n_ids):
        for j in range(per_id):
            name = f"imgs/id{i:02d}/{j:03d}.png"
            names.append(name)
            truth.append(i)
            if with_images:
                _image(d / name, (40 * i % 256, 20 * j % 256, 200))
    for s in range(singles):
        name = f"imgs/single/{s:03d}.png"
        names.append(name)
        truth.append(-1)
        if with_images:
            _image(d / name, (255, 255, 10 * s))
    n = len(names)
    truth = np.array(truth)
    centres = rng.standard_normal((n_ids + singles, 16))
    feat_ids = np.where(truth >= 0, truth, n_ids + np.arange(n) - n_ids * per_id)
    x = centres[feat_ids] + 0.3 * rng.standard_normal((n, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    write_features(d / "feat.h5", x, labels=truth,
                   names=names if with_images else [f"face-{i}" for i in range(n)])
    pred = np.where(truth >= 0, truth, -1)
    pred[0] = 1          # one member of identity 0 put into cluster 1: a stray, another id
    pred[truth < 0] = -1
    with write_artifact(d / "clusters.h5", "clusters") as f:
        f.create_dataset("labels", data=pred.astype(np.int64))
    return pred, truth


def test_gallery_writes_a_site_with_thumbnails(tmp_path):
    pred, truth = small_round(tmp_path)
    res = cf_eval("gallery", "clusters.h5", "--features", "feat.h5", "--truth", "feat.h5",
                  "-o", "site", "--per-page", "10", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    site = tmp_path / "site"
    assert res.stdout.strip() == str(Path("site") / "index.html")
    pages = sorted((site / "pages").glob("c*.html"))
    assert len(pages) >= 3
    text = "".join(p.read_text() for p in pages)
    assert len(re.findall(r'<section class="card', text)) >= 6
    for p in pages:
        assert len(re.findall(r"<img ", p.read_text())) <= 10
    thumbs = list((site / "thumbs").rglob("*.jpg"))
    assert len(thumbs) == len(pred)
    from PIL import Image

    with Image.open(thumbs[0]) as im:
        assert max(im.size) <= 96
    assert ' class="m o"' in text or ' class="m s o"' in text  # the misplaced member
    assert "purity" in text and (site / "splits.html").exists()
    assert (site / "plots" / "sizes.png").stat().st_size > 1000
    assert (site / "pages" / "s00001.html").exists()
    # a rebuild replaces the site and reuses the thumbnails (same content, same name)
    before = {p.name: p.stat().st_ino for p in thumbs}
    res = cf_eval("gallery", "clusters.h5", "--features", "feat.h5", "-o", "site", "-q",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    after = {p.name: p.stat().st_ino for p in (site / "thumbs").rglob("*.jpg")}
    assert after == before  # hard links of the cached thumbnails
    assert not (site / "splits.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site")]


def test_gallery_names_only_without_images(tmp_path):
    small_round(tmp_path, with_images=False)
    res = cf_eval("gallery", "clusters.h5", "-f", "feat.h5", "-o", "site", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "site" / "pages" / "c00001.html").read_text()
    assert "<img" not in page and "face-" in page
    assert not (tmp_path / "site" / "thumbs").exists()


def test_gallery_refuses_a_folder_that_is_not_a_gallery(tmp_path):
    small_round(tmp_path, with_images=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    res = cf_eval("gallery", "clusters.h5", "-f", "feat.h5", "-o", "mine", cwd=tmp_path)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a cftools gallery" in lines[0]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_gallery_refuses_features_of_another_size(tmp_path):
    small_round(tmp_path, with_images=False)
    x = np.eye(3, dtype=np.float32)
    write_features(tmp_path / "other.h5", x)
    res = cf_eval("gallery", "clusters.h5", "-f", "other.h5", "-o", "site", cwd=tmp_path)
    assert res.returncode != 0 and "rows but the clusters have" in res.stderr
    assert not (tmp_path / "site").exists()


# --------------------------------------------------------------------------- a real browser


def browse(url: str, *extra, timeout=120) -> str:
    """The DOM of url after its load event, from headless chromium."""
    res = subprocess.run([chromium("the gallery"), "--headless", "--disable-gpu", "--no-sandbox",
                          "--virtual-time-budget=10000",
                          *extra, url], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.slow
def test_gallery_in_headless_chromium(tmp_path):
    chromium("the gallery")
    pred, truth = small_round(tmp_path, n_ids=8, per_id=6)
    res = cf_eval("gallery", "clusters.h5", "-f", "feat.h5", "-t", "feat.h5", "-o", "site",
                  "--per-page", "12", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    site = tmp_path / "site"
    n_cards = int((np.unique(pred[pred >= 0], return_counts=True)[1] >= 2).sum())
    cards, images, visited = 0, 0, set()
    todo = ["index.html"]
    while todo:  # follow every link between pages, as a reader would
        rel = todo.pop()
        if rel in visited:
            continue
        visited.add(rel)
        dom = browse((site / rel).as_uri(), "--dump-dom")
        assert 'data-broken="0"' in dom, f"{rel}: a thumbnail did not load"
        n_img = int(re.search(r'data-images="(\d+)"', dom).group(1))
        assert f'data-loaded="{n_img}"' in dom
        images += n_img if rel.startswith("pages/") else 0
        if rel.startswith("pages/c"):
            cards += len(re.findall(r'<section class="card', dom))
        base = (site / rel).parent
        for href in re.findall(r'(?:href|src)="([^"#?]+)', dom):
            if href.startswith("file:"):
                continue
            target = (base / href).resolve()
            assert target.exists(), f"{rel}: link {href} leads nowhere"
            inner = target.relative_to(site.resolve()).as_posix()
            if inner.endswith(".html") and inner != "search.html":
                todo.append(inner)
    assert cards >= n_cards  # a card split over pages counts once per page
    with_pieces = sum(len(re.findall(r'<section class="card t" id=', (site / "pages" / p).read_text()))
                      for p in os.listdir(site / "pages") if p.startswith("c"))
    assert len({m for p in os.listdir(site / "pages") if p.startswith("c")
                for m in re.findall(r'id="?c(\d+)', (site / "pages" / p).read_text())}) == n_cards
    assert with_pieces == cards
    assert images == len(pred)  # every point's thumbnail, on cluster and singleton pages
    assert any(p.startswith("pages/c00002") for p in visited)  # paging works
    # the search loads its shards with <script> from file:// and finds names
    dom = browse((site / "search.html").as_uri() + "?q=id03", "--dump-dom")
    assert 'data-done="1"' in dom
    assert re.search(r"searched 1 of 1 shards: 6 hits", dom)
    # and a picture of the first page
    shot = tmp_path / "page.png"
    browse((site / "pages" / "c00001.html").as_uri(), f"--screenshot={shot}",
           "--window-size=1000,800")
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 5000
