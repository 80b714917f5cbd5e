#!/usr/bin/env bash
# run.sh ROUND1 OUT SEED VARIANT TEST_IMAGES
#
# Round 2's backbone from a finished round 1 (make round DATA=omniglot-bg SEED=s), trained
# as round.mk trains it (cf-embed train ROUND1/retrain.h5 --init ROUND1/backbone.h5 with
# round.mk's EMBED_ARGS: 8 epochs over the same retraining set, so the same steps as the
# round's references) but with train.py's VARIANT of the loss; then the test part's
# features and their recognition.
# SET=FILE: train on this retraining set instead of ROUND1/retrain.h5; STEPS=N: for exactly
# N steps (e.g. the round's own steps, when SET is larger than the round's set).
set -euo pipefail
R1=$1; OUT=$2; SEED=$3; VARIANT=$4; TEST=$5
BIN=${BIN:-.venv/bin}
HERE=$(dirname "$0")
mkdir -p "$OUT"
"$BIN/python" "$HERE/train.py" "$VARIANT" "${SET:-$R1/retrain.h5}" --init "$R1/backbone.h5" \
  -o "$OUT/backbone.h5" --depth 18 --width 16 --image-size 64 --dim 128 --epochs 8 \
  --scale 32 --margin 0.3 --workers 1 --seed "$SEED" ${STEPS:+--steps $STEPS} 2> "$OUT/train.log"
"$BIN/cf-embed" extract "$OUT/backbone.h5" "$TEST" -o "$OUT/test.h5" --workers 1 -q
"$BIN/cf-eval" identify "$OUT/test.h5" -o "$OUT/recognition.json" -q
