# mmret: one entry point. `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmret-installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -m "not slow and not gpu"

.PHONY: setup demo test test-all lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install $(TORCH_PINS)
	$(BIN)/pip install -e ".[all,test]"
	# mergekit: the parity reference of mmret.merging's tests; its merge functions import
	# without its own requirements (datasets, sentencepiece, ...), which would pin others
	$(BIN)/pip install --no-deps "mergekit==0.1.5"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m mmret.demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -m "not gpu"

lint: setup
	$(BIN)/ruff check mmret tests tools

bench: setup
	$(BIN)/python tools/bench/bench_ranking.py --scale coco
	$(BIN)/python tools/bench/bench_index.py
	$(BIN)/python tools/bench/bench_text_buckets.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
