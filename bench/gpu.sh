#!/usr/bin/env bash
# The GPU check of cftools, one script for a short GPU lease (issue 25).
#
#   bash bench/gpu.sh [bench/gpu.py options]       # e.g. --sizes 584000
#
# On a host where torch sees a CUDA GPU: installs the wheels carried in bench/wheels/
# (faiss-cpu, infomap, pytest and its four dependencies; `bash bench/gpu_wheels.sh` fetches
# them on a machine with a package index) into a folder of its own, with no package index
# and no change to the host's Python; then bench/gpu.py measures the bf16 GEMM rate, runs
# the suite's GPU tests (pytest -m gpu) and times cf-knn + cf-seq + cf-link + cf-merge on
# 584K and 5.21M demo points (256-d, k 80), with the small model made on the CPU
# (bench/gpu-model.h5). Everything fits GPU_BUDGET seconds (default 340, under 6 minutes
# with the set-up): a stage that does not fit is skipped or stopped, saying so.
#
# Without a GPU: a dry run of the same stages on the CPU at 20K and 60K points.
#
# It writes one JSON and one log: into $OUT when set (the device runner's folder), else
# bench/results/gpu-<time>.{json,log}. Python: $PYTHON, else the project's .venv where
# there is one, else python3 (the host's, holding torch, numpy, h5py, click, rich, tqdm).
# The working tree goes first on PYTHONPATH: cftools runs without being installed.

set -u
cd "$(dirname "$0")/.."
start=$(date +%s)
export PYTHONUNBUFFERED=1
stamp=$(date -u +%Y%m%d-%H%M%S)
out=${OUT:-bench/results}
mkdir -p "$out"
if [ -n "${OUT:-}" ]; then json=$out/gpu.json; log=$out/gpu.log
else json=$out/gpu-$stamp.json; log=$out/gpu-$stamp.log; fi
exec > >(tee -a "$log") 2>&1

PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
echo "gpu.sh: $(date -u +%FT%TZ) on $(hostname); python $PY"
nvidia-smi -L 2>/dev/null | head -n 4

# where the host's Python lacks them, the carried wheels, into a folder of their own (no
# index, no dependency resolution: numpy and the rest are the host's); pip where it works,
# else the wheels unzipped
deps=${GPU_DEPS:-/tmp/cftools-gpu-deps}
wheels=${GPU_WHEELS:-bench/wheels}
if "$PY" -c "import faiss, infomap, pytest" 2>/dev/null; then
    echo "gpu.sh: $PY has faiss, infomap and pytest; the carried wheels are not used"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif ls "$wheels"/*.whl >/dev/null 2>&1; then
    mkdir -p "$deps"
    if ! "$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check \
            --target "$deps" "$wheels"/*.whl 2>/dev/null; then
        echo "gpu.sh: pip could not install the wheels; unzipping them into $deps"
        for w in "$wheels"/*.whl; do "$PY" -m zipfile -e "$w" "$deps" || exit 1; done
    fi
    export PYTHONPATH="$PWD:$deps${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "gpu.sh: no wheels in $wheels (bash bench/gpu_wheels.sh fetches them); using what $PY has"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import torch, numpy, h5py, click, faiss, infomap, pytest" || {
    echo "gpu.sh: $PY lacks one of torch, numpy, h5py, click, faiss, infomap, pytest"
    exit 1
}
echo "gpu.sh: set-up done in $(( $(date +%s) - start )) s"

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
    budget=$(( ${GPU_BUDGET:-340} - ($(date +%s) - start) ))
    "$PY" bench/gpu.py --json "$json" --budget "$budget" "$@"
    rc=$?
else
    echo "gpu.sh: torch sees no CUDA GPU: a dry run of the same stages on the CPU at small N"
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    "$PY" bench/gpu.py --dry-run --json "$json" --budget "${GPU_BUDGET:-900}" "$@"
    rc=$?
fi
echo "gpu.sh: done in $(( $(date +%s) - start )) s (exit $rc); $json, $log"
exit $rc
