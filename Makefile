PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-slow check-wheel lint format train bench gpu-check clean

install:  ## a virtual environment with wycifar (editable) and the dev tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"

test:  ## the default suite (slow tests excluded), a worker per core
	$(BIN)/python -m pytest -q -n auto

test-slow:  ## the slow tests only
	$(BIN)/python -m pytest -q -m slow

check-wheel:  ## build the wheel, install it in a fresh venv, and use it from another folder
	PYTHON=$(PYTHON) scripts/check_wheel.sh

lint:
	$(BIN)/ruff check wycifar hydra_plugins tests scripts
	$(BIN)/ruff format --check wycifar hydra_plugins tests scripts

format:
	$(BIN)/ruff format wycifar hydra_plugins tests scripts
	$(BIN)/ruff check --fix wycifar hydra_plugins tests scripts

train:
	$(BIN)/python -m wycifar.train $(ARGS)

bench:
	$(BIN)/python -m wycifar.bench $(ARGS)

# the GPU check of docs/performance.md (a CUDA GPU; GPU_CHECK_DEVICE=cpu runs it on the CPU)
gpu-check:
	PYTHON=$(BIN)/python scripts/gpu_check.sh

clean:
	rm -rf outputs/train outputs/*-multirun build dist .pytest_cache
