#!/bin/bash
# D_U's F (reads its labels) with each model's links forced and with cosine links at
# cf-train's cosine length and thresholds: does the guard's verdict hold on D_U?
#   bash du_leads.sh UNLABELLED.h5 WORK_DIR MODEL.h5 [MODEL.h5 ...]
set -euo pipefail
du=$1; w=$2; shift 2
mkdir -p "$w"
for m in "$@"; do
  cf-knn "$du" -o "$w/knn.h5" --for-model "$m" -q
  cf-seq "$w/knn.h5" --features "$du" -o "$w/seq.h5" --for-model "$m" -q
  for method in model cosine; do
    cf-link "$w/seq.h5" --features "$du" --model "$m" -o "$w/links.h5" --method $method -q 2>/dev/null
    cf-merge "$w/links.h5" -o "$w/clusters.h5" --method infomap -q 2>/dev/null
    cf-eval "$w/clusters.h5" --truth "$du" --json -q | python -c "import json, sys
e = json.load(sys.stdin)
print(f\"$m $method: F_P {100 * e['pairwise_f']:.2f} F_B {100 * e['bcubed_f']:.2f}\")"
  done
done
