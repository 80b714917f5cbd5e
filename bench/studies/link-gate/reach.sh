#!/usr/bin/env bash
# reach.sh MODEL SEQ_U FEATURES_U OUT REACH... : D_U's clusters when the gate reads only the
# rows within each REACH (logits) of the Infomap threshold: a copy of MODEL whose recorded
# reach is REACH, cf-link --method model --gate infomap, cf-merge --method infomap, cf-eval
# against FEATURES_U's labels; one line per reach (the rows the model read, F_P, F_B).
set -euo pipefail
MODEL=$1; SEQ=$2; FEAT=$3; OUT=$4; shift 4
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
for r in "$@"; do
  "$BIN/python" - "$MODEL" "$OUT/model_$r.h5" "$r" <<'PY'
import json, shutil, sys
import h5py
src, dst, reach = sys.argv[1], sys.argv[2], float(sys.argv[3])
shutil.copy(src, dst)
with h5py.File(dst, "r+") as f:
    training = json.loads(f.attrs["training"])
    training["gate"]["infomap"]["reach"] = reach
    f.attrs["training"] = json.dumps(training)
PY
  "$BIN/cf-link" "$SEQ" --features "$FEAT" --model "$OUT/model_$r.h5" -o "$OUT/links_$r.h5" \
    --method model --gate infomap -q
  "$BIN/cf-merge" "$OUT/links_$r.h5" -o "$OUT/clusters_$r.h5" --method infomap -q
  rows=$("$BIN/python" -c "import h5py; print(h5py.File('$OUT/links_$r.h5')['/'].attrs['model_rows'])")
  f=$("$BIN/cf-eval" "$OUT/clusters_$r.h5" --truth "$FEAT" --json -q | "$BIN/python" -c \
    "import json, sys; d = json.load(sys.stdin); print(f\"{100 * d['pairwise_f']:.2f} / {100 * d['bcubed_f']:.2f}\")")
  echo "reach $r: the model read $rows rows; F_P / F_B $f"
done
