"""Issue 14, the demo's gap: the best any merge rule could do. Merges of the final
incremental clusters (old ids kept, so merging is the only repair) that the all-at-once
clustering joins, chosen greedily *with the truth* (an upper bound, not a method): if even
these leave the gap above 1 point, no merge rule closes it.

    python bench/add_gap/oracle.py demo inc-seed0    # after bench/incremental.py --seed 0
"""
import sys, h5py, numpy as np
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[2])
sys.path.insert(0, ROOT)
from cftools.core.metrics import pairwise_scores, bcubed_scores
name, inc = sys.argv[1], sys.argv[2]
W = f'{ROOT}/work/incremental/{name}'; r = f'{W}/w/round1'
with h5py.File(f'{r}/unlabelled.h5') as f: y = f['labels'][()]
cl = 'clusters-model.h5' if 'model' in inc else 'clusters.h5'
once = h5py.File(f'{r}/{cl}')['labels'][()]
n = y.size; seed = int(inc.split('seed')[1].split('-')[0])
perm = np.random.default_rng(seed).permutation(n); n0 = int(round(0.8*n))
order = np.r_[perm[:n0], perm[n0:]]
yy, oo = y[order], once[order]
fin = h5py.File(f'{W}/{inc}/clusters4.h5')['labels'][()].copy()
F = lambda l: 100*pairwise_scores(l, yy)['pairwise_f']
FB = lambda l: 100*bcubed_scores(l, yy)['bcubed_f']
p = pairwise_scores(fin, yy); po = pairwise_scores(oo, yy)
print(f'{name} {inc}: final F_P {F(fin):.2f} (P {100*p["pairwise_precision"]:.2f} R {100*p["pairwise_recall"]:.2f}); once {F(oo):.2f} (P {100*po["pairwise_precision"]:.2f} R {100*po["pairwise_recall"]:.2f})')
# candidate merges: pairs of final clusters (old part) that once puts together
cand = set()
for c in np.unique(oo):
    labs = np.unique(fin[oo == c])
    for a in range(labs.size):
        for b in range(a+1, labs.size): cand.add((labs[a], labs[b]))
print('candidate merges (final clusters joined by once):', len(cand))
# all merged
lab = fin.copy()
parent = {}
def find(x):
    while parent.get(x, x) != x: x = parent[x]
    return x
for a, b in cand:
    ra, rb = find(a), find(b)
    if ra != rb: parent[rb] = ra
allm = np.array([find(v) for v in fin])
print(f'merge every candidate: F_P {F(allm):.2f} F_B {FB(allm):.2f}')
# greedy oracle: merge a candidate only if it raises F_P (truth used: an upper bound)
lab = fin.copy(); best = F(lab); gained = 0
improved = True
while improved:
    improved = False
    for a, b in sorted(cand):
        la, lb = a, b
        # map through current labels
        if not ((lab == la).any() and (lab == lb).any()): continue
        t = lab.copy(); t[t == lb] = la
        f = F(t)
        if f > best + 1e-9:
            lab, best, improved, gained = t, f, True, gained + 1
print(f'oracle merges (truth-chosen, upper bound of any merge rule): {gained} merges -> F_P {best:.2f} F_B {FB(lab):.2f}; gap to once {best - F(oo):+.2f}')
