# The two commands of the README: `make run` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CODE := ingest api workers schemas tests bench

.PHONY: run run-waldur-demo test test-unit test-integration test-e2e test-faults lint typecheck format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ingest run

# the service in front of a fake Waldur (ingest/dev/fake_waldur): catalog synced, usage forwarded
run-waldur-demo: $(STAMP)
	$(BIN)/ingest run --waldur-demo

# Most tests wait on real processes (gunicorn, Celery, Redis, PostgreSQL) more than they use a
# core, so they run in TEST_WORKERS processes (pytest-xdist; a file's tests stay together);
# the fault tests (loss under load) and the tests timed to the second (marker ``serial``) run
# alone, one after another, afterwards.
TEST_WORKERS ?= 3

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not faults and not serial" tests
	$(BIN)/python -m pytest -q -m "faults or serial" tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

test-faults: $(STAMP)
	$(BIN)/python -m pytest -q -s tests/faults

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench $(ARGS)

# The gates: the same commands locally, in pre-commit and in CI (.ci/run).
lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

clean:
	rm -rf $(VENV) var/redis ingest.db ingest.db-wal ingest.db-shm
