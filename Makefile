# The two commands of the README: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
# CPU wheel by default; on a GPU machine: make demo TORCH=torch
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: install browser test lint demo benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Web pages are tested in a real browser: Debian's headless chromium.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) \
	  >/dev/null || (echo "error: page tests need chromium (apt-get install chromium)" && false)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint browser
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/sparsecircuits demo --out runs/demo

benchmark: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf runs .pytest_cache
