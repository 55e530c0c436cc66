# Two commands do all the set-up: `make train` and `make test` (each creates .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The extras follow the hardware: fbgemm's CUDA build and triton where nvidia-smi sees a GPU, else fbgemm's CPU
# build and no triton (1 GB that only runs on a GPU). `make install`/`make train` stop there; `make test` and
# `make lint` add the dev extra (pytest, hypothesis, ruff, pyarrow, and triton for its CPU interpreter tier).
EXTRAS := $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda,triton || echo cpu)
PYTEST_ARGS ?=

.PHONY: install train test test-all test-gpu lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS),dev]"
	touch $(DEV_STAMP)

train: $(STAMP)
	$(VENV)/bin/recframe train +experiment=dlrm

test: $(DEV_STAMP)
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

# The gpu-marked tests (tests/gpu: CUDA paths, the triton kernels compiled), on a machine with a GPU
# (there tests/conftest.py leaves TRITON_INTERPRET unset).
test-gpu: $(DEV_STAMP)
	$(PY) -m pytest -m gpu tests/gpu $(PYTEST_ARGS)

test-all: $(DEV_STAMP)
	$(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check recframe tests scripts

bench: $(STAMP)
	$(PY) scripts/bench_sparse.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
