#!/usr/bin/env bash
# Round 1 on omniglot-bg with the link model trained on characters the backbone never saw.
# The backbone trains on half of D_L's alphabets (P1); cf-train then learns links from the
# other half's features (P2, "unseen") or, as the control on the same backbone, from P1's
# ("seen", what the round does today with all of D_L). D_U is clustered with each model,
# round.mk's options otherwise; the free baseline is chosen on the same labelled part.
#   bash run.sh SEED WORKDIR
set -euo pipefail
SEED=$1; W=$2
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CF=$ROOT/.venv/bin
D=$ROOT/../shared/data/omniglot-bg
EMBED_ARGS="--depth 18 --width 16 --image-size 64 --dim 128 --epochs 8 --scale 32 --margin 0.3 --workers 1"
# whole alphabets, about half of D_L's characters each (169 and 163)
P1="Grantha Armenian Malay_(Jawi_-_Arabic) Syriac_(Estrangelo) Hebrew"
P2="Tifinagh Asomtavruli_(Georgian) Latin Early_Aramaic Alphabet_of_the_Magi"
VAL=${VAL:-0.32}  # at least 50 identities held out of either part, for the guard
mkdir -p "$W"
for part in P1 P2; do
  mkdir -p "$W/img/$part"
  for a in ${!part}; do for c in "$D"/labelled/"$a"-character*; do
    ln -sfn "$c" "$W/img/$part/$(basename "$c")"; done; done
done
# as many steps as the round's backbone takes over all of D_L: only the classes differ
[ -f "$W/backbone.h5" ] || $CF/cf-embed train "$W/img/P1" -o "$W/backbone.h5" $EMBED_ARGS --seed "$SEED" \
  --match-steps "$D/labelled" -q
for x in P1 P2; do
  [ -f "$W/$x.h5" ] || $CF/cf-embed extract "$W/backbone.h5" "$W/img/$x" -o "$W/$x.h5" --workers 1 -q
done
[ -f "$W/unlabelled.h5" ] || $CF/cf-embed extract "$W/backbone.h5" "$D/unlabelled" -o "$W/unlabelled.h5" --workers 1 -q
for x in P1 P2; do
  R=$W/$x; mkdir -p "$R"
  ln -sfn ../$x.h5 "$R/labelled.h5"; ln -sfn ../unlabelled.h5 "$R/unlabelled.h5"
  $CF/cf-knn "$R/labelled.h5" -o "$R/knn_labelled.h5" -k 81 -q
  $CF/cf-seq "$R/knn_labelled.h5" --features "$R/labelled.h5" -o "$R/seq_labelled.h5" -L 81 -q
  $CF/cf-train "$R/seq_labelled.h5" --features "$R/labelled.h5" -o "$R/model.h5" --preset small \
    -L auto --epochs 8 --lr 1e-3 --seed "$SEED" --decoders infomap --val-fraction "$VAL" \
    --distractors "$R/unlabelled.h5" 2> "$R/train.log"
  $CF/cf-knn "$R/unlabelled.h5" -o "$R/knn_unlabelled.h5" --for-model "$R/model.h5" -q
  $CF/cf-seq "$R/knn_unlabelled.h5" --features "$R/unlabelled.h5" -o "$R/seq_unlabelled.h5" --for-model "$R/model.h5" -q
  $CF/cf-link "$R/seq_unlabelled.h5" --features "$R/unlabelled.h5" --model "$R/model.h5" -o "$R/links.h5" --method auto --gate infomap -q
  $CF/cf-merge "$R/links.h5" -o "$R/clusters.h5" --method infomap -q
  $CF/cf-eval "$R/clusters.h5" --truth "$R/unlabelled.h5" --json -q > "$R/eval.json"
done
