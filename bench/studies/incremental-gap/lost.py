"""Issue 14, the demo's gap: the true pairs that clustering a random 80% of D_U from
scratch (bench/incremental.py's batch 0) loses and gains against the all-at-once
clustering on the same points, and the false pairs each makes (precision or recall?).

    python bench/studies/incremental-gap/lost.py demo inc-seed0   # after bench/incremental.py --seed 0
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np
from runs import first_share, labels_of, round_of, seed_of, work_of

from cftools.core.metrics import pairwise_scores


def pairs_same(lab):
    """The set of (i, j) index pairs, i < j, within one cluster of ``lab`` (-1: none)."""
    out = set()
    for c in np.unique(lab[lab >= 0]):
        m = np.flatnonzero(lab == c)
        for a in range(m.size):
            for b in range(a + 1, m.size):
                out.add((m[a], m[b]))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", help="a set bench/incremental.py ran, e.g. demo")
    ap.add_argument("inc", help="its run folder, e.g. inc-seed0 or inc-seed1-model")
    a = ap.parse_args(argv)
    w, r = work_of(a.set) / a.inc, round_of(a.set)
    with h5py.File(r / "unlabelled.h5") as f:
        x, y = f["features"][()], f["labels"][()]
    once = labels_of(r / ("clusters.h5" if "model" not in a.inc else "clusters-model.h5"))
    n = x.shape[0]
    perm, n0 = first_share(n, seed_of(a.inc))
    old = perm[:n0]
    base = labels_of(w / "clusters0.h5")
    fin = labels_of(w / "clusters4.h5")
    yo, oo = y[old], once[old]
    truth, in_base, in_once = pairs_same(yo), pairs_same(base), pairs_same(oo)
    print("identities in D_U", np.unique(y).size, "sizes: median",
          np.median(np.bincount(np.unique(y, return_inverse=True)[1])))
    print("true pairs among 80%:", len(truth), " found by once:", len(truth & in_once),
          " by base:", len(truth & in_base))
    lost = (truth & in_once) - in_base
    gained = (truth & in_base) - in_once
    print("true pairs once has, base lacks (lost):", len(lost), " base has, once lacks:", len(gained))
    print("false pairs: once", len(in_once - truth), " base", len(in_base - truth))
    # lost pairs: split between two base clusters (both assigned) -> pairs of base clusters
    bp: dict = {}
    for i, j in lost:
        pair = tuple(sorted((base[i], base[j])))
        bp[pair] = bp.get(pair, 0) + 1
    print("lost pairs lie across", len(bp), "pairs of base clusters")
    # old ids are kept, so the final labels of the old points say whether a pair rejoined
    fo = fin[:n0]
    print("lost pairs rejoined in final:", sum(fo[i] == fo[j] for i, j in lost))
    order = np.r_[old, perm[n0:]]
    for tag, lab, yy in (("once(80%)", oo, yo), ("base", base, yo), ("once(all)", once, y),
                         ("final", fin, y[order]), ("once on final order", once[order], y[order])):
        s = pairwise_scores(lab, yy)
        print(tag, {k: round(100 * v, 2) for k, v in s.items() if k.startswith("pairwise")})
    # false pairs: base clusters mixing identities, compared with once
    extra = (in_base - truth) - (in_once - truth)
    cp: dict = {}
    for i, _ in extra:
        cp[base[i]] = cp.get(base[i], 0) + 1
    for c, v in sorted(cp.items(), key=lambda kv: -kv[1])[:8]:
        m = base == c
        ids, cnt = np.unique(yo[m], return_counts=True)
        print("base cluster", c, "size", m.sum(), "extra false pairs", v, "identities",
              dict(zip(ids.tolist(), cnt.tolist())), "once labels", np.unique(oo[m]).size)
    # the split pairs of base clusters that new points connect: a new point with kept links
    # (weight >= the decoder's threshold, its own row) into both clusters
    with h5py.File(w / "links4.h5") as f:
        li, lp = f["indices"][()], f["probabilities"][()]
    with h5py.File(w / "clusters4.h5") as f:
        th = float(f.attrs["threshold"])
    reach = {}
    for v in range(n0, li.shape[0]):
        ok = (li[v] < n0) & (lp[v] >= th) & (li[v] != v)
        reach[v] = set(base[li[v][ok]].tolist())
    conn = [(p, q) for (p, q) in bp if any(p in s and q in s for s in reach.values())]
    print("split pairs of base clusters (lost pairs across them) connected by >= 1 new point:",
          len(conn), "of", len(bp), "; lost pairs across them:", sum(bp[c] for c in conn), "of", len(lost))


if __name__ == "__main__":
    main()
