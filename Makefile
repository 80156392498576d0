# Referral Engine: `make run` for the demo, `make test` for the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install stamps: `make run` needs only what the product runs on; `make test`,
# `make lint` and `make install` add the dev extras (pytest, Playwright, ruff, ...).
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-run run test test-sqlite lint format bench bench-full bench-deps clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP) $(RUN_STAMP)

# Everything, for development: the product and its test and lint tools.
install: $(DEV_STAMP)

# Only what the product needs to run.
install-run: $(RUN_STAMP)

# The demo on SQLite: migrate, load demo accounts and data, serve. Another port:
# `make run PORT=8123` (and HOST=0.0.0.0 to listen beyond this machine).
run: $(RUN_STAMP)
	REFERRAL_ENGINE_DEMO=1 $(BIN)/referral-engine db upgrade
	REFERRAL_ENGINE_DEMO=1 $(BIN)/referral-engine demo
	@echo "Serving on http://$(HOST):$(PORT)  (Ctrl-C to stop)"
	REFERRAL_ENGINE_DEMO=1 $(BIN)/referral-engine serve --host $(HOST) --port $(PORT)

# Every test; those that touch the database also run on PostgreSQL when
# REFERRAL_ENGINE_TEST_PG_URL names a server (.ci/run always provides one).
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -n auto

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks, side by side with the alternatives (bench/README.md). Their extra
# dependencies (SpiffWorkflow, py-spy) are installed here, never by `make test`.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(DEV_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-deps: $(BENCH_STAMP)

# A few minutes at reduced scale: prints a table and writes bench/results.json.
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py

# The same at full scale (a million cases, ten million audit rows): an hour or more.
bench-full: $(BENCH_STAMP)
	$(BIN)/python bench/run.py --full

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
