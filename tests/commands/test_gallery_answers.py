"""Answering in the gallery, in a real browser by clicking (headless chromium driven
through the DevTools protocol over a pipe): answer review questions, mark members "not
this identity", name a cluster, save the corrections file (a download), feed it to
cf-merge and see the cluster split. Also what the static site holds for answering."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_cmd

from cftools.formats.features import write_features
from cftools.formats.writing import write_artifact


class Browser:
    """Headless chromium and the DevTools protocol over --remote-debugging-pipe: commands
    go to its fd 3, replies and events come from its fd 4, each JSON text ended by NUL."""

    def __init__(self, exe: str, profile: Path, downloads: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._evt_r, evt_w = os.pipe()

        def child():  # the pipe ends become fds 3 and 4 (dup first: neither lost)
            a, b = os.dup(cmd_r), os.dup(evt_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1200,900",
             "about:blank"], pass_fds=(3, 4), preexec_fn=child,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(evt_w)
        self.buf, self.n, self.events = b"", 0, []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"]
                    if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        self.call("Browser.setDownloadBehavior", behavior="allow",
                  downloadPath=str(downloads), eventsEnabled=True)
        self.call("Page.enable", page=True)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium said nothing")
            chunk = os.read(self._evt_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        text, self.buf = self.buf.split(b"\0", 1)
        return json.loads(text)

    def call(self, method: str, page: bool = False, **params):
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params}
        if page:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self.n:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})
            self.events.append(reply)

    def event(self, name: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == name:
                    return self.events.pop(i)
            self.events.append(self._message(deadline))

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", page=True, url=path.resolve().as_uri())
        self.event("Page.loadEventFired")

    def js(self, expr: str):
        res = self.call("Runtime.evaluate", page=True, expression=expr, returnByValue=True)
        return res["result"].get("value")

    def click(self, selector: str) -> None:
        """A left click at the middle of the element, as a mouse makes it."""
        box = self.js(f"(function(){{var e=document.querySelector({json.dumps(selector)});"
                      "if(!e)return null;e.scrollIntoView({block:'center'});"
                      "var r=e.getBoundingClientRect();return [r.left+r.width/2,"
                      "r.top+r.height/2];})()")
        assert box is not None, f"nothing to click at {selector}"
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", page=True, type=kind, x=box[0], y=box[1],
                      button="left", clickCount=1)

    def type(self, text: str) -> None:
        self.call("Input.insertText", page=True, text=text)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self._cmd_w, self._evt_r):
            os.close(fd)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the browser check "
                "of answering is skipped")


def look_alikes(d: Path):
    """Images of identity A (8), a look-alike B (4) and C (6), their features and cosine
    links; clustered by components at a threshold that puts A and B together."""
    from PIL import Image

    rng = np.random.default_rng(5)
    centre = rng.standard_normal(16)
    other = rng.standard_normal(16)
    groups = [("A", centre, 8), ("B", centre + 0.9 * rng.standard_normal(16), 4),
              ("C", other, 6)]
    names, truth, rows = [], [], []
    for g, (tag, c, size) in enumerate(groups):
        for j in range(size):
            name = f"imgs/{tag}/{j}.png"
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 48), (60 * g + 40, 25 * j, 120)).save(d / name)
            names.append(name)
            truth.append(g)
            rows.append(c + 0.25 * rng.standard_normal(16))
    x = np.array(rows)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    write_features(d / "feat.h5", x, labels=np.array(truth), names=names)
    from cftools.formats.features import load_features

    fid = load_features(d / "feat.h5").id
    sim = x @ x.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :8]
    order[:, 0] = np.arange(len(x))
    with write_artifact(d / "links.h5", "links", attrs={"features_id": fid,
                                                        "method": "cosine"}) as f:
        f.create_dataset("indices", data=order.astype(np.int64))
        f.create_dataset("probabilities",
                         data=np.take_along_axis(sim, order, 1).astype(np.float32))
    within_a = sim[:8, :8][np.triu_indices(8, 1)].min()
    a_to_b = sim[:8, 8:12].max()
    assert a_to_b > 0.3, "the look-alike must link to A"
    threshold = float(min(a_to_b, within_a) - 1e-3)
    run_cmd("merge", d / "links.h5", "-o", d / "c.h5", "--method", "components",
            "--threshold", threshold, "-q", check=True)
    return np.array(truth), threshold


@pytest.mark.slow
def test_answering_in_the_browser_splits_the_cluster(tmp_path):
    exe = chromium()
    truth, threshold = look_alikes(tmp_path)
    with h5py.File(tmp_path / "c.h5") as f:
        before = f["labels"][()]
    assert before[0] == before[8]  # A and its look-alike B share a cluster
    run_cmd("eval", "review", tmp_path / "c.h5", "--links", tmp_path / "links.h5", "-o",
            tmp_path / "q.json", "--features", tmp_path / "feat.h5", "--top", 5, "-q",
            check=True)
    run_cmd("eval", "gallery", tmp_path / "c.h5", "-f", tmp_path / "feat.h5", "--links",
            tmp_path / "links.h5", "--questions", tmp_path / "q.json", "-o", tmp_path / "site",
            "-q", check=True)
    site = tmp_path / "site"
    questions = json.loads((tmp_path / "q.json").read_text())["questions"]
    browser = Browser(exe, tmp_path / "profile", tmp_path / "downloads")
    try:
        # the review page: each question answered as a person who knows would
        browser.open(site / "review.html")
        assert browser.js("document.documentElement.getAttribute('data-answering')") == "1"
        assert browser.js("document.images.length") >= 2  # the questions' images
        for q in questions:
            said = "same" if truth[q["a"][0]] == truth[q["b"][0]] else "different"
            browser.click(f".q[data-q='{q['id']}'] button[data-answer={said}]")
        assert browser.js("document.getElementById('cf-count').textContent") == \
            f"{len(questions)} answers"
        # a cluster page: every B member marked "not this identity", the cluster named
        browser.open(site / "pages" / "c00001.html")
        lab = int(before[0])
        for row in range(8, 12):
            browser.click(f"section#c{lab} .cf-x[data-row='{row}']")
        browser.click(f"section#c{lab} input.cf-name")
        browser.type("Alice")
        browser.click(f"section#c{lab} button.cf-name-set")
        assert "Alice" in browser.js(f"document.querySelector('section#c{lab} .cf-named')"
                                     ".textContent")
        marked = browser.js("document.querySelectorAll('.cf-x.on').length")
        assert marked == 4
        # answers survive going to another page, and the save downloads them
        browser.open(site / "index.html")
        browser.click("#cf-save")
        while browser.event("Browser.downloadProgress")["params"]["state"] != "completed":
            pass
    finally:
        browser.close()
    saved = tmp_path / "downloads" / "corrections.json"
    doc = json.loads(saved.read_text())
    assert len(doc["answers"]) == len(questions) + 4 + 1
    run_cmd("merge", tmp_path / "links.h5", "-o", tmp_path / "c2.h5", "--method", "components",
            "--threshold", threshold, "--corrections", saved, "--previous", tmp_path / "c.h5",
            check=True)
    with h5py.File(tmp_path / "c2.h5") as f:
        after = f["labels"][()]
        names = json.loads(f.attrs["cluster_names"])
    assert len(set(after[8:12])) == 1 and after[8] != after[0]  # B split off A
    assert set(after[:8]) == {after[0]} and after[0] == before[0]  # A keeps its id
    assert names == {str(after[0]): "Alice"}

    # merging two clusters by clicking: "merge" on one card, "merge here" on the other
    browser = Browser(exe, tmp_path / "profile2", tmp_path / "downloads2")
    try:
        browser.open(site / "pages" / "c00001.html")
        one, two = browser.js("Array.from(document.querySelectorAll('section.card[data-core]'))"
                              ".map(function(c){return c.getAttribute('data-label');})")[:2]
        browser.click(f"section#c{one} button.cf-merge")
        assert browser.js(f"document.querySelector('section#c{two} button.cf-merge')"
                          ".textContent") == "merge here"
        browser.click(f"section#c{two} button.cf-merge")
        browser.click("#cf-save")
        while browser.event("Browser.downloadProgress")["params"]["state"] != "completed":
            pass
    finally:
        browser.close()
    merged = tmp_path / "downloads2" / "corrections.json"
    assert [a["action"] for a in json.loads(merged.read_text())["answers"]] == ["merge"]
    run_cmd("merge", tmp_path / "links.h5", "-o", tmp_path / "c3.h5", "--method", "components",
            "--threshold", threshold, "--corrections", merged, check=True)
    with h5py.File(tmp_path / "c3.h5") as f:
        joined = f["labels"][()]
    assert joined[before == int(one)][0] == joined[before == int(two)][0]


@pytest.mark.slow
def test_the_site_holds_what_answering_needs(tmp_path):
    truth, _ = look_alikes(tmp_path)
    run_cmd("eval", "review", tmp_path / "c.h5", "--links", tmp_path / "links.h5", "-o",
            tmp_path / "q.json", "-q", check=True)
    res = run_cmd("eval", "gallery", tmp_path / "c.h5", "-f", tmp_path / "feat.h5",
                  "--questions", tmp_path / "q.json", "-o", tmp_path / "site", "-q")
    assert res.returncode == 0, res.stderr
    site = tmp_path / "site"
    script = (site / "answers.js").read_text()
    from cftools.formats.features import load_features

    assert f'"features_id": "{load_features(tmp_path / "feat.h5").id}"' in script
    assert '"n_points": 18' in script
    page = (site / "pages" / "c00001.html").read_text()
    assert 'data-core="' in page and "answers.js" in page
    review = (site / "review.html").read_text()
    n_q = len(json.loads((tmp_path / "q.json").read_text())["questions"])
    assert review.count("<section class=q ") == n_q and "review.html" in \
        (site / "index.html").read_text()
    # questions about another set are refused with one line
    (tmp_path / "q2.json").write_text(json.dumps({"cftools_kind": "questions",
                                                  "n_points": 5, "questions": []}))
    res = run_cmd("eval", "gallery", tmp_path / "c.h5", "-f", tmp_path / "feat.h5",
                  "--questions", tmp_path / "q2.json", "-o", tmp_path / "site2")
    assert res.returncode != 0 and "asks about 5 points" in res.stderr
    assert not (tmp_path / "site2").exists()
