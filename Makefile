# engine-runtime: `make run` serves the example engines, `make test` runs the whole suite.
# Both create the virtual environment in .venv/ on first use and install everything they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 50051

.PHONY: help venv run test lint format proto proto-check buf-lint check bench clean

help:
	@echo "make run          serve the example engines on $(HOST):$(PORT)"
	@echo "make test         run the whole test suite"
	@echo "make check        lint + types + proto drift + tests (run before every commit)"
	@echo "make proto        regenerate generated/ from protos/"
	@echo "make bench        run the benchmarks against a bare grpc.aio server"

venv: $(STAMP)

# Reinstall when the project's metadata changes; the stamp keeps later runs instant.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	@echo "Serving the example engines on $(HOST):$(PORT). Try, in another shell:"
	@echo "  $(BIN)/engine-client --target $(HOST):$(PORT) list"
	@echo "  $(BIN)/engine-client --target $(HOST):$(PORT) generate echo '{\"text\": \"hello streaming world\", \"delay_s\": 0.2}'"
	$(BIN)/engine-server --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

proto-check: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

check: lint proto-check test

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
