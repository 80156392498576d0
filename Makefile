# Referral Engine: `make run` for the demo, `make test` for the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-sqlite lint format bench bench-full bench-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo on SQLite: migrate, load demo accounts and data, serve.
run: $(STAMP)
	REFERRAL_ENGINE_DEMO=1 $(BIN)/referral-engine db upgrade
	REFERRAL_ENGINE_DEMO=1 $(BIN)/referral-engine demo
	@echo "Serving on http://$(HOST):$(PORT)  (Ctrl-C to stop)"
	REFERRAL_ENGINE_DEMO=1 $(BIN)/referral-engine serve --host $(HOST) --port $(PORT)

# Every test; those that touch the database also run on PostgreSQL when
# REFERRAL_ENGINE_TEST_PG_URL names a server (.ci/run always provides one).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks, side by side with the alternatives (bench/README.md). Their extra
# dependencies (SpiffWorkflow, py-spy) are installed here, never by `make test`.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
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
