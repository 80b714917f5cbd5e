"""variant.py CARRIED VARIANT OUT: the link model's training set from cf-data carry-labels'
output. all: as it is; no-rest: D_L's rows and the pseudo-labelled rows of D_U only;
rest-only: every row, D_U's labels all unknown (-1)."""

import sys

import numpy as np

from cftools.formats.artifacts import open_artifact
from cftools.formats.features import write_features

carried, variant, out = sys.argv[1:4]
with open_artifact(carried, "features") as a:
    features, labels, source = a.read("features"), a.read("labels"), a.read("source")
    names = a.read("names") if "names" in a else None
keep = np.ones(labels.size, dtype=bool)
if variant == "no-rest":
    keep = (source == 0) | (labels >= 0)
elif variant == "rest-only":
    labels = np.where(source == 1, -1, labels)
elif variant != "all":
    sys.exit(f"variant.py: unknown variant {variant!r} (all, no-rest, rest-only)")
write_features(out, features[keep], labels=labels[keep],
               names=None if names is None else names[keep])
