# The two commands of the README: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
# CPU wheel by default; on a GPU machine: make demo TORCH=torch
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: install test lint demo benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/sparsecircuits demo --out runs/demo

benchmark: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf runs .pytest_cache
