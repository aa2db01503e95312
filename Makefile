# Two commands set everything up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SERVE_ARGS ?=

.PHONY: serve test install install-test services test-servers java lint bench bench-tools bench-full clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/sluice serve $(SERVE_ARGS)

# PostgreSQL and MariaDB must be up: tests never mock a database and never skip a missing one.
services:
	@bash tests/ensure_services.sh

# Servers the tests start themselves (tests/docstores/conftest.py), installed into the repo:
# PouchDB Server speaks CouchDB's HTTP API (in memory, no native modules needed: no scripts).
NPM_DIR := .cache/npm
POUCHDB_SERVER := pouchdb-server@4.2.0
$(NPM_DIR)/.installed:
	npm install --prefix $(NPM_DIR) --no-audit --no-fund --ignore-scripts --loglevel=error $(POUCHDB_SERVER)
	touch $@

# Spark Connect (tests/spark_server.py) runs on a Java 17 runtime: Debian's, when none is there
java:
	@command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless)

test-servers: $(NPM_DIR)/.installed java

test: install-test services test-servers
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# wrk drives the dashboard benchmark (bench/dashboard.py): a C client, off the server's CPU
bench-tools:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)

bench: install-test services test-servers bench-tools
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run --quick

bench-full: install-test services test-servers bench-tools
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run --full

clean:
	rm -rf $(VENV) .sluice .pytest_cache $(NPM_DIR)
