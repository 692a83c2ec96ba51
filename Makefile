# denoisrec: `make train` and `make test` each create .venv themselves when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
GPU ?= 0
NPROC ?= 2
PRESET ?= small
DATA ?= data/$(PRESET)
OUT ?= runs/default
# The training set-up: a preset of trainer/config/presets.py. `recommended` is the observation model in its examination
# form with the tower held for the first quarter of the run, 3 epochs (benchmarks/README.md); the same run is
# `denoisrec torchrun --standalone --nproc_per_node 2 -- --preset recommended --data data/small` (one process,
# `denoisrec train --preset recommended ...`, is the same set-up on a global batch of 2048: another run).
TRAIN_PRESET ?= recommended
# DENOISER=bce (or any other) replaces the preset's denoiser and its options; EPOCHS=N its 3 epochs.
DENOISER ?=
EPOCHS ?=
ARGS ?=
# The folder of the local Slurm cluster of `make slurm-up` (short, under /tmp: munged wants a reachable socket).
SLURM_DIR ?= /tmp/denoisrec-slurm-$(shell id -u)
# Extra index for the CUDA torch build when GPU=1 (pick the CUDA version your driver supports).
TORCH_INDEX ?= https://download.pytorch.org/whl/cu128
# make gpu-check: report folder, and a folder of wheels for the offline route (see launch/gpu_check.sh).
GPU_CHECK_OUT ?= runs/gpu-check
WHEELS ?=

PY := $(VENV)/bin/python
RUFF ?= $(VENV)/bin/ruff
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed-gpu$(GPU)
RUNTIME_NEEDS := tensordict torchmetrics tqdm pyre-extensions typing-inspect torchx pyarrow numpy scipy pyyaml fsspec tensorboard

ifeq ($(GPU),1)
  PINS := -c requirements/cpu.txt -c requirements/gpu.txt
  TORCH_STACK := --extra-index-url $(TORCH_INDEX) torch fbgemm-gpu
else
  PINS := -c requirements/cpu.txt
  TORCH_STACK := torch fbgemm-gpu-cpu
endif

.PHONY: venv data train test lint lint-fix gpu-check clean help slurm-up slurm-down

help:
	@echo "make train   # set up .venv, generate data/$(PRESET) if missing, train on $(NPROC) ranks"
	@echo "make test    # set up .venv, make lint, run the test suite"
	@echo "make lint    # ruff check, ruff format --check, mypy (pyproject.toml); make lint-fix: ruff's fixes; make test NOLINT=1: tests only"
	@echo "make gpu-check [WHEELS=dir]  # on a CUDA machine: GPU env, GPU tests, throughput, report; else says so"
	@echo "make slurm-up / slurm-down   # a one-host Slurm cluster in \$$SLURM_DIR (packages: .ci/install-slurm)"
	@echo "variables: TRAIN_PRESET=$(TRAIN_PRESET) DENOISER=bce (the baseline) EPOCHS=N GPU=1 NPROC=N PRESET=tiny|small|medium|product|criteo (data) DATA=dir OUT=dir ARGS='--model deepfm ...'"

venv: $(STAMP)

$(STAMP): requirements/cpu.txt requirements/gpu.txt requirements/test.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PINS) $(TORCH_STACK)
	$(PIP) install $(PINS) $(RUNTIME_NEEDS) -r requirements/test.txt
	$(PIP) install $(PINS) --no-deps torchrec
	$(PIP) install --no-deps -e .
	$(PY) -c "import torch, fbgemm_gpu, torchrec, denoisrec.trainer; print('stack ok: torch', torch.__version__)"
	@rm -f $(VENV)/.installed-gpu*; touch $(STAMP)

$(DATA)/schema.json: | $(STAMP)
	$(VENV)/bin/denoisrec gen-data --preset $(PRESET) --out $(DATA)

data: $(DATA)/schema.json

# ARGS='--denoiser NAME ...' (the older form) replaces the preset's denoiser and its options as DENOISER does.
TRAIN_ARGS = --preset $(TRAIN_PRESET) --data $(DATA) --out $(OUT) $(if $(DENOISER),--denoiser $(DENOISER)) \
	$(if $(EPOCHS),--epochs $(EPOCHS)) --set run.overwrite=true $(ARGS)

train: $(STAMP) $(DATA)/schema.json
	@$(VENV)/bin/denoisrec train $(TRAIN_ARGS) --print-config > /dev/null  # a mistake: one line, before torchrun
	$(if $(filter 1,$(NPROC)),,OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}) $(VENV)/bin/denoisrec torchrun --standalone \
		--nproc_per_node $(NPROC) -- $(TRAIN_ARGS)

# NOLINT=1 skips make lint (e.g. between merges, before .ci/lint-fix has formatted the tree); CI keeps it on.
NOLINT ?=
test: $(STAMP) $(if $(NOLINT),,lint)
	$(PY) -m pytest -q tests

# mypy sees the four folders and denoisrec/__init__.py under their installed names through build/typecheck/denoisrec/
# (links).
TYPECHECK := build/typecheck/denoisrec
LINT_PACKAGES := trainer models denoisers launch

lint: $(STAMP)
	@mkdir -p $(TYPECHECK) && for p in $(LINT_PACKAGES); do ln -sfn ../../../$$p $(TYPECHECK)/$$p; done \
		&& ln -sfn ../../../denoisrec/__init__.py $(TYPECHECK)/__init__.py
	@ok=0; set -x; $(RUFF) check . || ok=1; $(RUFF) format --check --output-format concise . || ok=1; \
		$(PY) -m mypy -m denoisrec $(addprefix -p denoisrec.,$(LINT_PACKAGES)) || ok=1; exit $$ok

lint-fix: $(STAMP)
	RUFF=$(RUFF) .ci/lint-fix

gpu-check:
	@WHEELS="$(WHEELS)" OUT="$(GPU_CHECK_OUT)" ARGS="$(ARGS)" PYTHON="$(PYTHON)" VENV="$(VENV)" \
		TORCH_INDEX="$(TORCH_INDEX)" bash launch/gpu_check.sh

# A one-host Slurm cluster for `torchx run -s slurm` by hand (docs/launch.md); the tests start their own.
slurm-up: $(STAMP)
	$(PY) -m denoisrec.launch.slurm_local up --dir $(SLURM_DIR)

slurm-down:
	$(PY) -m denoisrec.launch.slurm_local down --dir $(SLURM_DIR)

clean:
	rm -rf $(VENV) runs data/tiny data/small .pytest_cache
