# Two commands set up and run everything on a fresh machine:
#   make repro   - create the virtual environment if missing, then run the whole DVC pipeline (2 workers)
#   make test    - create the virtual environment if missing, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

LOCKER := .cache/pip-tools
# requirements.lock is resolved for Python 3.11: another version stops here, not halfway through the install
PY311 := import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is needed (PYTHON=python3.11 make ...)")

.PHONY: repro test lint lock paper paper-inputs parallel bench-features bench-train bench-kernels bench-parallel

# every package at the exact version and hash of requirements.lock, then the project itself without resolving
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || ($(PYTHON) -c '$(PY311)' && $(PYTHON) -m venv $(VENV))
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

lock:  ## refresh requirements.lock: the newest versions pyproject.toml's ranges allow, with their hashes
	test -x $(LOCKER)/bin/pip-compile || ($(PYTHON) -m venv $(LOCKER) && $(LOCKER)/bin/pip install --quiet pip-tools)
	$(LOCKER)/bin/pip-compile --upgrade --generate-hashes --allow-unsafe --strip-extras --extra dev \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

repro: $(STAMP)  ## the whole DAG on two local workers (a final `dvc status` finds nothing stale)
	rsckd parallel --workers 2

test: $(STAMP)
	pytest

lint: $(STAMP)
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks

paper: $(STAMP)  ## switch params.yaml to the paper profile (commit it on its own branch) once its inputs are there
	rsckd check-params --params configs/paper.yaml --inputs
	cp configs/paper.yaml params.yaml

paper-inputs: $(STAMP)  ## download the paper profile's inputs (pinned, verified, DVC-tracked); the only online step
	rsckd fetch

parallel: $(STAMP)  ## WORKERS=4 GPUS=0,1 make parallel; CLUSTER=slurm WORKERS=16 make parallel (configs/cluster.yaml)
	rsckd parallel --workers $(or $(WORKERS),2) $(if $(GPUS),--gpus $(GPUS)) $(if $(CLUSTER),--cluster $(CLUSTER))

bench-features: $(STAMP)
	python benchmarks/prepare_features.py

bench-train: $(STAMP)  ## training samples/s per runtime.compile mode: full-size BTS on a GPU, tiny on a CPU
	python benchmarks/train_throughput.py

bench-parallel: $(STAMP)  ## serial `dvc repro` vs rsckd parallel on 1 and 2 workers, each in a fresh clone
	python benchmarks/parallel_dag.py

bench-kernels: $(STAMP)  ## after make repro: what runtime.cpu_kernels: portable costs per architecture
	python benchmarks/cpu_kernels.py
