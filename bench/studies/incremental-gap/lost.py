"""Issue 14, the demo's gap: the true pairs that clustering a random 80% of D_U from
scratch (bench/incremental.py's batch 0) loses and gains against the all-at-once
clustering on the same points, and the false pairs each makes (precision or recall?).

    python bench/add_gap/lost.py demo inc-seed0      # after bench/incremental.py --seed 0
"""
import sys, json, h5py, numpy as np
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[2])
sys.path.insert(0, ROOT)
from cftools.core.metrics import pairwise_scores
name, inc = sys.argv[1], sys.argv[2]
W = f'{ROOT}/work/incremental/{name}'
r = f'{W}/w/round1'
with h5py.File(f'{r}/unlabelled.h5') as f: x, y = f['features'][()], f['labels'][()]
cl = 'clusters.h5' if 'model' not in inc else 'clusters-model.h5'
once = h5py.File(f'{r}/{cl}')['labels'][()]
n = x.shape[0]; seed = int(inc.split('seed')[1].split('-')[0])
perm = np.random.default_rng(seed).permutation(n); n0 = int(round(0.8*n))
old = perm[:n0]
def pairs_same(lab):
    # set of (i,j) index pairs within given lab
    out=set()
    for c in np.unique(lab[lab>=0]):
        m=np.flatnonzero(lab==c)
        for a in range(m.size):
            for b in range(a+1,m.size): out.add((m[a],m[b]))
    return out
base = h5py.File(f'{W}/{inc}/clusters0.h5')['labels'][()]
fin = h5py.File(f'{W}/{inc}/clusters4.h5')['labels'][()]
yo, oo = y[old], once[old]
T = pairs_same(yo); B = pairs_same(base); O = pairs_same(oo)
print('identities in D_U', np.unique(y).size, 'sizes: median', np.median(np.bincount(np.unique(y,return_inverse=True)[1])))
print('true pairs among 80%:', len(T), ' found by once:', len(T&O), ' by base:', len(T&B))
lost = (T&O)-B; gained=(T&B)-O
print('true pairs once has, base lacks (lost):', len(lost), ' base has, once lacks:', len(gained))
print('false pairs: once', len(O-T), ' base', len(B-T))
# lost pairs: split between two base clusters (both assigned) -> pairs of base clusters
bp = {}
for i,j in lost:
    a,b = sorted((base[i],base[j])); bp[(a,b)] = bp.get((a,b),0)+1
print('lost pairs lie across', len(bp), 'pairs of base clusters')
# in the final incremental clustering, do new points connect them? check final clusters of new points:
# build: for each base cluster, new points of final labels: merged? (old ids kept, so check final labels of old)
fo = fin[:n0]
print('lost pairs rejoined in final:', sum(fo[i]==fo[j] for i,j in lost))
# new-point evidence: use final links: new rows pointing into both base clusters with cosine >= thr
for tag, lab, yy in (('once(80%)', oo, yo), ('base', base, yo), ('once(all)', once, y), ('final', fin, y[np.r_[old, perm[n0:]]]), ('once on final order', once[np.r_[old, perm[n0:]]], y[np.r_[old, perm[n0:]]])):
    s = pairwise_scores(lab, yy); print(tag, {k: round(100*v,2) for k,v in s.items() if k.startswith('pairwise')})
# false pairs: base clusters mixing identities, compare
fp_b = B-T; fp_o = O-T
extra = fp_b - fp_o
cp={}
for i,j in extra:
    cp[base[i]] = cp.get(base[i],0)+1
top=sorted(cp.items(), key=lambda kv:-kv[1])[:8]
for c,v in top:
    m=base==c; ids,cnt=np.unique(yo[m],return_counts=True)
    print('base cluster',c,'size',m.sum(),'extra false pairs',v,'identities',dict(zip(ids.tolist(),cnt.tolist())), 'once labels', np.unique(oo[m]).size)
# the split pairs of base clusters that new points connect: a new point with kept links
# (weight >= the decoder's threshold, its own row) into both clusters
with h5py.File(f'{W}/{inc}/links4.h5') as f: li, lp = f['indices'][()], f['probabilities'][()]
th = float(h5py.File(f'{W}/{inc}/clusters4.h5').attrs['threshold'])
reach = {}
for v in range(n0, li.shape[0]):
    ok = (li[v] < n0) & (lp[v] >= th) & (li[v] != v)
    reach[v] = set(base[li[v][ok]].tolist())
conn = [(a, b) for (a, b) in bp if any(a in s and b in s for s in reach.values())]
print('split pairs of base clusters (lost pairs across them) connected by >= 1 new point:',
      len(conn), 'of', len(bp), '; lost pairs across them:', sum(bp[c] for c in conn), 'of', len(lost))
