"""Scores run.sh's folders: ours against the free baseline chosen on the same labelled part.
    python score.py WORKDIR [WORKDIR ...]"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from omniglot import round_quality  # noqa: E402

for w in map(Path, sys.argv[1:]):
    for part in ("P1", "P2"):
        q = round_quality(w / part, (10, 20, 30, 50, 80))
        b = q["baseline"]
        g = q["guard"]
        print(f"{w.name} {part}: ours {q['F_P']:.2f} / {q['F_B']:.2f} ({q['links']} L {q['link_length']}, "
              f"guard {g.get('winner')} ahead {g.get('model_ahead')}), baseline "
              f"{b['F_P']:.2f} / {b['F_B']:.2f} -> "
              f"{q['F_P'] - b['F_P']:+.2f} / {q['F_B'] - b['F_B']:+.2f}", flush=True)
        (w / part / "quality.json").write_text(json.dumps(q, default=float))
