import sys, time, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from cftools.core.neighbours.index import knn
from cftools.core.decoding.decoders import decode_infomap
from cftools.core.decoding.weights import reciprocal
from cftools.core.metrics import pairwise_scores, bcubed_scores
SH = str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data") + "/"
def load(name):
    d = SH + name + "/"
    x = np.load(d + "features.npy"); y = np.load(d + "labels.npy")
    li = np.load(d + "labelled_idx.npy"); ui = np.load(d + "unlabelled_idx.npy")
    return (x[li], y[li]), (x[ui], y[ui])
def score(pred, y):
    return 100*pairwise_scores(pred, y)["pairwise_f"], 100*bcubed_scores(pred, y)["bcubed_f"]
