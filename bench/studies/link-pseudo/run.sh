#!/usr/bin/env bash
# run.sh RETRAIN ROUND OUT SEED [VARIANT]
#
# The link model of a finished round (make round DATA=omniglot-bg SEED=s: ROUND holds its
# labelled.h5 and unlabelled.h5) learnt again from D_L + D_U, labelled by the retraining set
# RETRAIN (cf-merge labels: a round's cores) carried onto ROUND's features, then D_U linked
# and clustered as round.mk does and scored on D_U's labels. VARIANT: all (D_U's other points
# kept as unknowns, what round.mk's second pass does), no-rest (only D_L and the
# pseudo-labelled rows), rest-only (all of D_U, every label of it unknown).
set -euo pipefail
RETRAIN=$1; ROUND=$2; OUT=$3; SEED=$4; VARIANT=${5:-all}
BIN=${BIN:-.venv/bin}
HERE=$(dirname "$0")
mkdir -p "$OUT"
"$BIN/cf-data" carry-labels "$RETRAIN" --labelled "$ROUND/labelled.h5" \
  --unlabelled "$ROUND/unlabelled.h5" -o "$OUT/carried.h5" -q
"$BIN/python" "$HERE/variant.py" "$OUT/carried.h5" "$VARIANT" "$OUT/set.h5"
"$BIN/cf-knn" "$OUT/set.h5" -o "$OUT/knn_set.h5" -k 81 -q
"$BIN/cf-seq" "$OUT/knn_set.h5" --features "$OUT/set.h5" -o "$OUT/seq_set.h5" -L 81 -q
"$BIN/cf-train" "$OUT/seq_set.h5" --features "$OUT/set.h5" -o "$OUT/model.h5" --preset small \
  -L auto --epochs 8 --lr 1e-3 --seed "$SEED" --decoders infomap 2> "$OUT/train.log"
"$BIN/cf-knn" "$ROUND/unlabelled.h5" -o "$OUT/knn_unlabelled.h5" --for-model "$OUT/model.h5" -q
"$BIN/cf-seq" "$OUT/knn_unlabelled.h5" --features "$ROUND/unlabelled.h5" \
  -o "$OUT/seq_unlabelled.h5" --for-model "$OUT/model.h5" -q
"$BIN/cf-link" "$OUT/seq_unlabelled.h5" --features "$ROUND/unlabelled.h5" --model "$OUT/model.h5" \
  -o "$OUT/links.h5" --method auto --gate infomap -q
"$BIN/cf-merge" "$OUT/links.h5" -o "$OUT/clusters.h5" --method infomap -q
"$BIN/cf-eval" "$OUT/clusters.h5" --truth "$ROUND/unlabelled.h5" --json -q > "$OUT/eval.json"
"$BIN/python" -c "import json, sys; d = json.load(open(sys.argv[1])); \
print(sys.argv[2], round(100 * d['pairwise_f'], 2), round(100 * d['bcubed_f'], 2))" \
  "$OUT/eval.json" "$OUT"
