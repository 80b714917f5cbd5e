"""Open a gallery from disk in headless chromium and check it as a reader would.

    python bench/gallery_browser.py DIR --clusters CLUSTERS.h5 [--shots OUT] [--max-pages 50]

Follows the links from DIR/index.html page by page (up to --max-pages pages), and on each
reads the DOM after the load event: every <img> must have loaded (the page records
data-images / data-loaded / data-broken on <html>), every relative link and image must
lead to a file. Counts the distinct cluster cards against the clusters of 2 or more in
CLUSTERS, runs one search, and saves screenshots of the index, the first two cluster
pages, the splits page and the search into --shots. Prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def browse(url: str, *extra) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        sys.exit("no chromium on PATH (Debian: apt-get install chromium)")
    res = subprocess.run([exe, "--headless", "--disable-gpu", "--no-sandbox",
                          "--virtual-time-budget=10000", *extra, url],
                         capture_output=True, text=True, timeout=180)
    if res.returncode:
        sys.exit(f"chromium failed on {url}: {res.stderr[-500:]}")
    return res.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path)
    ap.add_argument("--clusters", required=True)
    ap.add_argument("--shots", type=Path, default=None)
    ap.add_argument("--max-pages", type=int, default=50)
    ap.add_argument("--query", default=None, help="search for this (default: part of a name)")
    args = ap.parse_args()
    import h5py

    with h5py.File(args.clusters, "r") as f:
        labels = f["labels"][()]
    _, counts = np.unique(labels[labels >= 0], return_counts=True)
    want_cards = int((counts >= 2).sum())
    site = args.site.resolve()
    visited, todo, problems = [], ["index.html"], []
    cards, images, loaded, broken = set(), 0, 0, 0
    while todo and len(visited) < args.max_pages:
        rel = todo.pop(0)
        if rel in visited:
            continue
        visited.append(rel)
        dom = browse((site / rel).as_uri(), "--dump-dom")
        m = re.search(r'data-images="(\d+)" data-loaded="(\d+)" data-broken="(\d+)"', dom)
        if not m:
            problems.append(f"{rel}: no load record")
            continue
        images += int(m.group(1))
        loaded += int(m.group(2))
        broken += int(m.group(3))
        if rel.startswith("pages/c"):
            cards |= set(re.findall(r'<section class="card [tn]" id="c(-?\d+)"', dom))
        base = (site / rel).parent
        for href in re.findall(r'(?:href|src)="([^"#?]+)', dom):
            if href.startswith("file:"):
                if not Path(href[7:]).exists():
                    problems.append(f"{rel}: original {href} missing")
                continue
            target = (base / href).resolve()
            if not target.exists():
                problems.append(f"{rel}: {href} leads nowhere")
                continue
            inner = target.relative_to(site).as_posix()
            if inner.endswith(".html") and inner != "search.html" and inner not in visited:
                todo.append(inner)
    all_cluster_pages = sorted((site / "pages").glob("c*.html"))
    all_cards = set()
    for p in all_cluster_pages:
        all_cards |= set(re.findall(r'<section class="card [tn]" id=c(-?\d+)', p.read_text()))
    query = args.query
    if query is None:
        first = re.search(r'alt="([^"]+)"|title="([^" ]+)', (site / "pages" /
                          all_cluster_pages[0].name).read_text())
        query = Path(first.group(1) or first.group(2)).name if first else "1"
    sdom = browse((site / "search.html").as_uri() + f"?q={query}", "--dump-dom")
    status = re.search(r'id="status"[^>]*>([^<]*)', sdom)
    shots = []
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
        tag = "-".join(site.parts[-3:-1]) if len(site.parts) > 3 else site.name
        for rel, name in [("index.html", "index"), ("pages/c00001.html", "clusters1"),
                          ("pages/c00002.html", "clusters2"), ("splits.html", "splits"),
                          ("pages/s00001.html", "singletons")]:
            if (site / rel).exists():
                out = args.shots / f"{tag}-{name}.png"
                browse((site / rel).as_uri(), f"--screenshot={out}", "--window-size=1280,1400")
                shots.append(str(out))
        out = args.shots / f"{tag}-search.png"
        browse((site / "search.html").as_uri() + f"?q={query}", f"--screenshot={out}",
               "--window-size=1280,900")
        shots.append(str(out))
    print(json.dumps({
        "site": str(site), "pages_visited": len(visited),
        "pages_in_site": len(list(site.rglob("*.html"))),
        "images_on_visited_pages": images, "loaded": loaded, "broken": broken,
        "cards_seen_while_browsing": len(cards), "cards_in_site": len(all_cards),
        "clusters_of_2_or_more": want_cards, "cards_match": len(all_cards) == want_cards,
        "search": {"query": query, "status": status.group(1) if status else None},
        "problems": problems[:20], "screenshots": shots}, indent=2))


if __name__ == "__main__":
    main()
