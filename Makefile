# cftools: `make round` runs the semi-supervised round on the demo set; `make test` the tests.
# Both set up everything first: a virtual environment with torch (the CPU build where there
# is no CUDA GPU), faiss (faiss-gpu on GPU hosts) and cftools in editable mode.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
GPU    := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
EXTRAS := $(if $(GPU),gpu,cpu),dev

DATA   ?= demo
ROUND  ?= 1
WORK   ?= work/$(DATA)

.PHONY: setup test test-fast lint round bench man clean-work help
help:
	@echo "make setup | test | test-fast | lint | round [DATA=name] [ROUND=n] | add NEW=dir [DATA=name] | bench [QUICK=1] | man"

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Pinned torch first: pip takes the CPU build from local disk on CPU hosts, and the
	# CUDA build from PyPI where a GPU host has no local wheel.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

# pytest exits 5 when it collects no test: that is not a failure of the suite.
# TEST_WORKERS pytest processes (pytest-xdist), each test file kept whole on one of them so
# that a module's shared fixture (a round, a training) is made once; 0: one process
TEST_WORKERS ?= 2
PYTEST_PAR := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: setup
	$(BIN)/python -m pytest -q $(PYTEST_PAR) $(PYTEST_ARGS) || [ $$? -eq 5 ]

# the inner loop: every test not marked slow (a few minutes less than make test)
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_PAR) $(PYTEST_ARGS) || [ $$? -eq 5 ]

# ruff over the package, tests and benchmarks; mypy over the paths pyproject.toml names
lint: setup
	$(BIN)/python -m ruff check cftools tests bench
	$(BIN)/python -m mypy

include round.mk

bench: setup
	$(BIN)/python bench/run.py $(if $(QUICK),--quick,)

man:
	@for page in man/*.[17]; do MANWIDTH=100 man -l "$$page" >/dev/null || exit 1; done; \
	echo "man pages render"

clean-work:
	rm -rf $(WORK)
