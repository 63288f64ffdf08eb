# bisector: `make demo` sets everything up and runs the main job on a sample model;
# `make test` runs the test suite (`make test-all` adds the slow tests). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0 installs from this machine's disk in seconds; elsewhere choose
# your own, e.g. make demo TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
TORCH_SPEC ?= torch==2.13.0
# ONNX Runtime comes as an extra: the CUDA build where one exists (Linux x86-64; it runs on CPU
# too), the CPU build elsewhere. Override with e.g. make demo ORT_EXTRA=cpu.
ORT_EXTRA ?= $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),gpu,cpu)
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=
# The suite runs on two pytest-xdist workers: a test mostly waits on its probes' child processes,
# so two of them keep a 2-core machine busy. Whole files go to a worker (loadfile), so a module's
# shared fixture (a project repaired once, a run directory later tests reuse) is built once.
# (--dist loadgroup would be finer, but pytest 9.2 ignores the node ids xdist 3.8 renames for it.)
# Files go out in collection order: tests/conftest.py puts the longest files first (LONGEST_FIRST),
# then the other end-to-end ones, the quick unit ones last to even out the two workers' ends
# (xdist's default would send the files with the most tests first, not the longest).
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: demo test test-all lint venv bench clean

# The ray extra is for the fleet tests (repair --executor ray on a local Ray): ~15 s and ~300 MB
# on top of torch's 1.6 GB; users who never run a cluster install plain `bisector`.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[$(ORT_EXTRA),dev,ray]"
	touch $@

venv: $(VENV)/.installed

# Exit 1 from bisector means "found a leak": that is the demo's point, not a failure of make.
demo: venv
	$(VENV)/bin/bisector find sample_models/hf_gpt2.py:LeakyNet --input ids=B,T:int64:0:1000 --dim B=1:4 --dim T=5:64 --stage eager --stage inference || test $$? -eq 1

# The code's own checks first (seconds): style, formatting, and the architecture's import contracts.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: lint
	$(PYTEST) $(PYTEST_ARGS)

# Also the tests marked slow (long benches whose behaviour the default run covers more cheaply).
test-all: lint
	$(PYTEST) -m "" $(PYTEST_ARGS)

bench: venv
	$(PY) bench/probe_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
