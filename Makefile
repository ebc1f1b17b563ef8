# engine-runtime: `make run` serves the example engines, `make test` runs the whole suite.
# Both create the virtual environment in .venv/ on first use and install everything they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 50051

BUF := tools/buf/node_modules/.bin/buf

.PHONY: help venv run test soak lint format proto proto-check buf-lint buf-breaking check bench peer-venv clean

help:
	@echo "make run          serve the example engines on $(HOST):$(PORT)"
	@echo "make test         run the test suite (all but the soaks)"
	@echo "make soak         run the long soaks and benchmark smoke runs"
	@echo "make check        lint + types + proto drift + tests (run before every commit)"
	@echo "make proto        regenerate generated/ from protos/"
	@echo "make bench        run the benchmarks against a bare grpc.aio server (and the origin's runtime)"
	@echo "make peer-venv    install the origin's runtime (ai-dynamo-runtime) for the benchmarks, in its own venv"

venv: $(STAMP)

# Reinstall when the project's metadata changes; the stamp keeps later runs instant.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,otel]'
	touch $(STAMP)

run: $(STAMP)
	@echo "Serving the example engines on $(HOST):$(PORT). Try, in another shell:"
	@echo "  $(BIN)/engine-client --target $(HOST):$(PORT) list"
	@echo "  $(BIN)/engine-client --target $(HOST):$(PORT) generate echo '{\"text\": \"hello streaming world\", \"delay_s\": 0.2}'"
	@echo "(a development server: Ctrl-C drains for at most 5 s; a second Ctrl-C stops it at once)"
	$(BIN)/engine-server --host $(HOST) --port $(PORT) --drain-timeout 2 --stop-timeout 1 --kill-timeout 2

# pytest exits 5 when a selection collects no test: that is not a failure of the suite.
# `make test` is every test but the soaks (about 2.5 minutes on 2 cores); `make soak` runs those (CI runs both).
test: $(STAMP)
	$(BIN)/python -m pytest -m "not soak" $(PYTEST_ARGS) || [ $$? -eq 5 ]

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS) || [ $$? -eq 5 ]

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

$(BUF): tools/buf/package.json tools/buf/package-lock.json
	npm ci --prefix tools/buf --no-audit --no-fund --silent
	touch $(BUF)

buf-lint: $(BUF)
	$(BUF) lint

# Wire compatibility against the newest release tag (v*), when there is one.
buf-breaking: $(BUF)
	@tag=$$(git tag --list 'v*' --sort=-v:refname | head -n 1); \
	if [ -z "$$tag" ]; then echo "buf-breaking: no release tag yet, nothing to compare against"; \
	else echo "buf breaking against $$tag"; $(BUF) breaking --against ".git#tag=$$tag"; fi

check: lint buf-lint buf-breaking proto-check test

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The origin's runtime, a peer in the benchmarks: a virtual environment of its own (a ~75 MB wheel), never part
# of the project's install. `make bench` uses it when it exists and skips the peer with this command otherwise.
PEER_VENV := benchmarks/.peer-venv
PEER_PACKAGE := ai-dynamo-runtime==1.6.1

peer-venv: $(PEER_VENV)/.installed

$(PEER_VENV)/.installed:
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet '$(PEER_PACKAGE)' uvloop
	touch $@

clean:
	rm -rf $(VENV) $(PEER_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
