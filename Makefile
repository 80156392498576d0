# Referral Engine: `make run` for the demo, `make test` for the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-sqlite lint format bench clean

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

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
