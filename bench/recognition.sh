#!/bin/bash
# Recognition as the round's final score, measured: rounds 1 and 2, the step-matched
# baseline and the upper bound, then the report, on the demo or on AT&T faces split by
# identity (15 D_L, 15 D_U, 10 test identities). One seed per call:
#
#   bench/recognition.sh demo 0      bench/recognition.sh att 0
#
# Writes OUT/<set>-s<seed>/ (the round's work folder) and OUT/<set>-s<seed>.report.md.
# Small settings, so one seed runs in minutes on 2 CPU cores.
set -euo pipefail
SET=$1; S=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/cf-recognition}
W=$OUT/$SET-s$S
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
case $SET in
  demo)
    ARGS=(WORK="$W" QUIET=-q SEED="$S"
          "DEMO_ARGS=--identities 150 --mean-images 10 --image-size 32 --seed $S"
          "EMBED_ARGS=--depth 18 --width 8 --image-size 32 --dim 64 --epochs 40 --batch-size 64 --scale 32 --margin 0.3 --workers 0 --seed $S") ;;
  att)
    D=$OUT/att-data-s$S
    rm -rf "$D"; mkdir -p "$D/labelled" "$D/unlabelled" "$D/test"
    python3 - "$S" "$D" "$REPO/../shared/data/att-faces" <<'PY'
import os, random, sys
seed, dest, src = int(sys.argv[1]), sys.argv[2], os.path.abspath(sys.argv[3])
ids = sorted(x for x in os.listdir(src) if x.startswith("s"))
random.Random(seed).shuffle(ids)
for part, chunk in (("labelled", ids[:15]), ("unlabelled", ids[15:30]), ("test", ids[30:])):
    for i in chunk:
        os.symlink(os.path.join(src, i), os.path.join(dest, part, i))
PY
    ARGS=(DATA=att DATADIR="$D" WORK="$W" QUIET=-q SEED="$S" K=20 L=20
          "EMBED_ARGS=--depth 18 --width 16 --image-size 64 --dim 128 --epochs 30 --batch-size 16 --scale 32 --margin 0.3 --workers 0 --seed $S") ;;
  *) echo "usage: $0 demo|att SEED" >&2; exit 2 ;;
esac
cd "$REPO"
start=$(date +%s)
make -s round "${ARGS[@]}" > "$W.r1.log" 2>&1
make -s round ROUND=2 "${ARGS[@]}" > "$W.r2.log" 2>&1
make -s baseline upper-bound "${ARGS[@]}" > "$W.ref.log" 2>&1
make -s report "${ARGS[@]}" > "$W.report.md" 2> "$W.report.log"
echo "$SET seed $S: $(( $(date +%s) - start )) s" >&2
cat "$W.report.md"
