"""Issue 14, the demo's gap: a random FRAC of D_U clustered from scratch by the round's
commands against the all-at-once clustering on the same points (FRAC 1.0: the same
points in another row order, the clustering's own spread).

    python bench/add_gap/perm.py demo SEED FRAC [auto|model]
"""
# control: all of D_U clustered again from scratch in another row order (same points, same
# commands and model): how far does the clustering move by order alone?
import sys, subprocess, h5py, numpy as np
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[2])
sys.path.insert(0, ROOT)
from cftools.core.metrics import pairwise_scores, bcubed_scores
from cftools.formats.features import write_features
name, seed, frac = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
links = sys.argv[4] if len(sys.argv) > 4 else 'auto'
W = f'{ROOT}/work/incremental/{name}'; r = f'{W}/w/round1'
B = f'{ROOT}/.venv/bin/'
with h5py.File(f'{r}/unlabelled.h5') as f: x, y = f['features'][()], f['labels'][()]
once = h5py.File(f'{r}/' + ('clusters.h5' if links == 'auto' else f'clusters-{links}.h5'))['labels'][()]
dec = str(h5py.File(f'{r}/clusters.h5').attrs['method'])
perm = np.random.default_rng(seed).permutation(y.size)[: int(round(frac * y.size))]
d = f'{ROOT}/work/add_gap/perm-{name}-{seed}-{frac}-{links}'; subprocess.run(['mkdir', '-p', d])
write_features(f'{d}/f.h5', x[perm], labels=y[perm])
def run(*a): subprocess.run([B + a[0], *map(str, a[1:]), '-q'], check=True, capture_output=True)
run('cf-knn', f'{d}/f.h5', '-o', f'{d}/k.h5', '-k', 81)
run('cf-seq', f'{d}/k.h5', '--features', f'{d}/f.h5', '-o', f'{d}/s.h5', '-L', 81)
run('cf-link', f'{d}/s.h5', '--features', f'{d}/f.h5', '--model', f'{r}/model.h5', '-o', f'{d}/l.h5', '--method', links)
run('cf-merge', f'{d}/l.h5', '-o', f'{d}/c.h5', '--method', dec)
lab = h5py.File(f'{d}/c.h5')['labels'][()]
yy = y[perm]
sc = lambda l: (100*pairwise_scores(l, yy)['pairwise_f'], 100*bcubed_scores(l, yy)['bcubed_f'], 100*pairwise_scores(l, yy)['pairwise_precision'], 100*pairwise_scores(l, yy)['pairwise_recall'])
a, b = sc(lab), sc(once[perm])
print(f'{name} seed {seed} frac {frac} {links}: scratch F_P {a[0]:.2f} F_B {a[1]:.2f} (P {a[2]:.2f} R {a[3]:.2f}); at once on same pts F_P {b[0]:.2f} F_B {b[1]:.2f} (P {b[2]:.2f} R {b[3]:.2f}); gap {a[0]-b[0]:+.2f} / {a[1]-b[1]:+.2f}')
