#!/usr/bin/env bash
# The wheels bench/gpu.sh installs on a GPU host that has no package index, fetched here
# into bench/wheels/ (git-ignored; carried beside the tree, about 43 MB):
#
#   bash bench/gpu_wheels.sh [PYTHON_VERSION]     # default 3.12, the GPU host's Python
#
# faiss-cpu (one abi3 wheel for every Python >= 3.10) and infomap (built per Python
# version: give the host's) at the versions of this project's .venv, and pytest with its
# dependencies (pure Python). manylinux x86_64 only.

set -eu
cd "$(dirname "$0")/.."
pyver=${1:-3.12}
PY=${PYTHON:-.venv/bin/python}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p bench/wheels
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d bench/wheels \
    "faiss-cpu==$(version faiss-cpu)" "infomap==$(version infomap)" \
    "pytest==$(version pytest)" "pluggy==$(version pluggy)" \
    "iniconfig==$(version iniconfig)" "packaging==$(version packaging)" \
    "pygments==$(version pygments)"
ls -la bench/wheels
du -sh bench/wheels
