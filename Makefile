# Every target creates .venv and installs what it needs; each is idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test bench lint install clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The demo: a simulated assistant under the runtime for 20 s, then its latency table.
run: install
	$(BIN)/jarvis-runtime demo --config config.yaml --duration 20

# System packages some tests drive for real (promtool, Alertmanager, redis-server), when missing.
system-deps:
	@if [ -x .ci/install-system-deps ]; then ./.ci/install-system-deps; fi

test: install system-deps
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check runtime actors tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
