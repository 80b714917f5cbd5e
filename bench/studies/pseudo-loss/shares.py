"""Each run.sh output's recognition beside the round's own round 2 (a bench/omniglot.py JSON
of the same rounds 1): top-1 E and TAR@FAR=0.01, and the share of the upper bound's gain
over the step-matched baseline.

    python shares.py ROUNDS.json OUT_FOLDER...     (folders named s<seed>-<variant>)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cftools.commands.eval.report import gain_recovered
from cftools.core.recognition.identification import top1_expected
from cftools.formats.features import load_features


def value(rec: dict, key: str) -> float:
    return rec["tar"]["0.01"] if key == "tar" else rec[key]


def main(rounds_json: str, folders: list[str]) -> None:
    refs = {s["recognition"]["seed"]: s["recognition"]
            for s in json.loads(Path(rounds_json).read_text())["seeds"]}
    for folder in map(Path, folders):
        ref = refs["s" + folder.name.split("-")[0][1:]]
        test = load_features(folder / "test.h5")
        got = json.loads((folder / "recognition.json").read_text())
        ours = {"top1_e": top1_expected(test.features, test.labels)["top1"],
                "tar": got["verification"]["tar_at_far"]}
        cells = []
        for key in ("top1_e", "tar"):
            base, upper, plain = (value(ref[p], key) for p in ("base", "upper", "r2"))
            v = value(ours, key)
            cells.append(f"{key} {100 * v:.2f} share {100 * gain_recovered(v, base, upper):.0f}% "
                         f"(plain {100 * plain:.2f}, "
                         f"{100 * gain_recovered(plain, base, upper):.0f}%)")
        print(folder.name, "; ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
