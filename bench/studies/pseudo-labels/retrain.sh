#!/usr/bin/env bash
# retrain.sh ROUND1 OUT SEED STEPS TEST_IMAGES [cf-merge labels options...]
#
# Round 2's backbone from a finished round 1 with other pseudo-labels, for as many steps as
# the references (baseline, upper bound) of that round took, so that only the labels differ:
# cf-merge labels with the options given, cf-embed train --init round 1's backbone --steps
# STEPS (round.mk's EMBED_ARGS), the test part's features and their recognition.
# STEPS: the "steps" in the config attribute of the round's baseline/backbone.h5.
# CLUSTERS=FILE: label from these clusters of D_U instead of the round's clusters.h5 (e.g.
# cf-merge ROUND1/links.h5 --method infomap --threshold T, or --pseudo); SET=FILE: train on
# this ready retraining set (e.g. limits.py --oracle's) and skip cf-merge labels.
# EMBED_SEED=N: the backbone training's seed (default SEED).
set -euo pipefail
R1=$1; OUT=$2; SEED=$3; STEPS=$4; TEST=$5; shift 5
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
if [ -n "${SET:-}" ]; then
  cp "$SET" "$OUT/retrain.h5"
else
  "$BIN/cf-merge" labels "${CLUSTERS:-$R1/clusters.h5}" --unlabelled-features "$R1/unlabelled.h5" \
    --labelled-features "$R1/labelled.h5" -o "$OUT/retrain.h5" --meta "$OUT/retrain.meta" "$@" \
    2> "$OUT/labels.log"
fi
"$BIN/cf-embed" train "$OUT/retrain.h5" --init "$R1/backbone.h5" -o "$OUT/backbone.h5" \
  --depth 18 --width 16 --image-size 64 --dim 128 --epochs 8 --scale 32 --margin 0.3 \
  --workers 1 --seed "${EMBED_SEED:-$SEED}" --steps "$STEPS" -q
"$BIN/cf-embed" extract "$OUT/backbone.h5" "$TEST" -o "$OUT/test.h5" --workers 1 -q
"$BIN/cf-eval" identify "$OUT/test.h5" -o "$OUT/recognition.json" -q
