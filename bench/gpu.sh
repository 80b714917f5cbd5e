#!/usr/bin/env bash
# The GPU check of cftools, one prepared script (issue 12).
#
#   bash bench/gpu.sh [bench/gpu.py options]
#
# On a host where nvidia-smi sees an NVIDIA GPU: sets up the GPU build (faiss-gpu in place
# of faiss-cpu: pip install -e .[gpu]), runs the suite's GPU-marked tests (pytest -m gpu),
# times knn + seq + link + merge on a 584K x 256 demo set on the GPU and the same stages
# on this host's CPU (at fewer points, scaled), and the paper preset's link throughput on
# both, then writes one JSON under bench/results/. Inside 8 minutes on one modern GPU:
# bench/gpu.py skips, saying so, whatever its time budget (GPU_BUDGET, default 450 s
# in all, the set-up's time taken off) cannot fit.
#
# On a host without a GPU: says so, runs the same stages as a CPU dry run at small N,
# writes its JSON and exits 0 (non-zero only when the dry run itself breaks).
#
# Python: $PYTHON, else the project's .venv (made by `make setup` where missing on a host
# without GPU), else python3 (e.g. an image whose python3 holds torch with CUDA). The
# working tree is put first on PYTHONPATH, so an offline host with torch, h5py, click,
# faiss and infomap runs it without installing cftools.

set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
mkdir -p bench/results
stamp=$(date -u +%Y%m%d-%H%M%S)

if nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: $(nvidia-smi -L | head -n 4 | tr '\n' ' ')" >&2
    PY=${PYTHON:-}
    if [ -z "$PY" ]; then
        if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
    fi
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
    # the GPU build: faiss-gpu replaces faiss-cpu (both install the module 'faiss', so the
    # CPU one goes first, but only once the GPU wheel is at hand)
    if "$PY" -c "import faiss, sys; sys.exit(0 if hasattr(faiss, 'StandardGpuResources') else 1)" 2>/dev/null; then
        echo "gpu.sh: faiss GPU build already installed" >&2
    elif [ "${GPU_SETUP:-1}" = 0 ]; then
        echo "gpu.sh: SKIPPED the GPU build: GPU_SETUP=0" >&2
    elif timeout 240 "$PY" -m pip download -q --no-deps --retries 0 --timeout 15 \
            -d /tmp/cftools-gpu-wheels "faiss-gpu>=1.8" >/dev/null 2>&1; then
        "$PY" -m pip uninstall -y -q faiss-cpu >/dev/null 2>&1
        timeout 240 "$PY" -m pip install -q -e ".[gpu]" \
            || echo "gpu.sh: SKIPPED part of the GPU build: pip install -e .[gpu] failed" >&2
    else
        echo "gpu.sh: SKIPPED the GPU build: faiss-gpu could not be fetched (offline?); faiss runs on the CPU" >&2
    fi
    "$PY" -c "import torch, h5py, click, faiss, infomap" 2>/dev/null || {
        echo "gpu.sh: SKIPPED everything: $PY lacks one of torch, h5py, click, faiss, infomap (install them, or make setup)" >&2
        exit 1
    }
    spent=$(( $(date +%s) - start ))
    budget=$(( ${GPU_BUDGET:-450} - spent ))
    [ "$budget" -lt 60 ] && budget=60
    json=${GPU_JSON:-bench/results/gpu-$stamp.json}
    "$PY" bench/gpu.py --json "$json" --budget "$budget" "$@"
    rc=$?
    echo "gpu.sh: done in $(( $(date +%s) - start )) s; $json" >&2
    exit $rc
fi

echo "gpu.sh: no NVIDIA GPU on this host (nvidia-smi sees none): CPU dry run at small N" >&2
echo "gpu.sh: SKIPPED the GPU build, the GPU tests' GPU paths and every GPU stage: no GPU" >&2
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    [ -x .venv/bin/python ] || make setup >&2 || exit 1
    PY=.venv/bin/python
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
json=${GPU_JSON:-bench/results/gpu-dryrun.json}
"$PY" bench/gpu.py --dry-run --json "$json" --budget "${GPU_BUDGET:-420}" "$@" || exit 1
echo "gpu.sh: CPU dry run done in $(( $(date +%s) - start )) s; $json" >&2
exit 0
