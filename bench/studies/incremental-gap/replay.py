"""Issue 14: other merge rules (MERGE_SHARE, --merge-links) replayed on the 80% + 4
batches simulation, in-process, cosine links. On PART labelled (D_L) this is how a merge
rule would be chosen by capped pairwise F (the round's calibration objective); on
unlabelled (D_U) it only measures what that choice would give.

    python bench/add_gap/replay.py SET labelled|unlabelled SEED
"""
# replay the 4 adds in-process with other merge rules (share, merge_links); cosine links
import sys, subprocess, json, itertools, h5py, numpy as np
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[2])
sys.path.insert(0, ROOT)
from cftools.core import incremental, decoding
from cftools.core.metrics import pairwise_scores, bcubed_scores, capped_pairwise_f
from cftools.formats.features import write_features
name, part, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
grid = [(0.75, 3), (0.5, 3), (0.5, 2), (0.25, 2), (0.25, 1), (0.0, 2), (0.0, 1)]
W = f'{ROOT}/work/incremental/{name}'; r = f'{W}/w/round1'
B = f'{ROOT}/.venv/bin/'
with h5py.File(f'{r}/{part}.h5') as f: x, y = f['features'][()], f['labels'][()]
n = y.size; perm = np.random.default_rng(seed).permutation(n); n0 = int(round(0.8 * n))
parts = np.array_split(perm[n0:], 4)
d = f'{ROOT}/work/add_gap/replay-{name}-{part}-{seed}'; subprocess.run(['mkdir', '-p', d])
dec = str(h5py.File(f'{r}/clusters.h5').attrs['method'])
def run(*a): subprocess.run([B + a[0], *map(str, a[1:]), '-q'], check=True, capture_output=True)
write_features(f'{d}/old.h5', x[perm[:n0]], labels=y[perm[:n0]])
run('cf-knn', f'{d}/old.h5', '-o', f'{d}/k.h5', '-k', 81)
run('cf-seq', f'{d}/k.h5', '--features', f'{d}/old.h5', '-o', f'{d}/s.h5', '-L', 81)
run('cf-link', f'{d}/s.h5', '--features', f'{d}/old.h5', '--model', f'{r}/model.h5', '-o', f'{d}/l.h5', '--method', 'auto')
run('cf-merge', f'{d}/l.h5', '-o', f'{d}/c.h5', '--method', dec)
with h5py.File(f'{d}/l.h5') as f: idx0, pr0, lm = f['indices'][()], f['probabilities'][()], str(f.attrs['method'])
with h5py.File(f'{d}/c.h5') as f: lab0 = f['labels'][()]; at = dict(f.attrs)
assert lm == 'cosine', lm
mode = str(at.get('link_mode', 'directed')); th = float(at['threshold'])
order = np.r_[perm[:n0], np.concatenate(parts)]; yy = y[order]
def sc(l, t):
    return (round(100 * pairwise_scores(l, t)['pairwise_f'], 2), round(100 * bcubed_scores(l, t)['bcubed_f'], 2), round(100 * capped_pairwise_f(l, t), 2))
res = {'set': name, 'part': part, 'seed': seed, 'threshold': th, 'mode': mode, 'base': sc(lab0, y[perm[:n0]])}
if part == 'unlabelled':
    once = h5py.File(f'{r}/clusters.h5')['labels'][()]
    res['once'] = sc(once[order], yy); res['once_base'] = sc(once[perm[:n0]], y[perm[:n0]])
for share, ml in grid:
    incremental.MERGE_SHARE = share
    feats, idx, pr, lab = x[perm[:n0]], idx0, pr0, lab0
    nm = 0
    for p in parts:
        out = incremental.add_points(feats, x[p], idx, pr, lab, link_method='cosine', decoder=dec, threshold=th, mode=mode,
            singletons=str(at.get('singletons', 'keep')), merge_links=ml, seed=0,
            intimacy_ratio=float(at.get('intimacy_ratio', decoding.DEFAULT_INTIMACY_RATIO)))
        feats, idx, pr, lab = np.concatenate([feats, x[p]]), out.indices, out.probabilities, out.labels
        nm += len(out.merges)
    res[f'share{share}_links{ml}'] = (*sc(lab, yy), nm)
print(json.dumps(res))
