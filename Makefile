# Arbor: the two commands are `make demo` and `make test`; both start with the same idempotent set-up.
SHELL := /bin/bash
VENV  := .venv
ARBOR := $(VENV)/bin/arbor
PY    := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup up down demo test drills lint format bench clean-state

setup:
	bash deploy/setup.sh

up: setup
	$(ARBOR) up

down:
	@if [ -x $(ARBOR) ]; then $(ARBOR) down; else echo "nothing to stop (no .venv yet)"; fi

demo: up
	$(ARBOR) demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Services are required: a test that needs Mosquitto or TimescaleDB fails instead of skipping.
test: up
	$(MAKE) --no-print-directory lint
	ARBOR_REQUIRE_SERVICES=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

# The full fault drills, hostile input and the 10-minute 1,000-machine soak (about 35 minutes),
# then docs/reliability.md regenerated from their output (artifacts/drills/); a reduced run of
# the same tests is part of `make test`. The exit status is the tests'.
drills: up
	@rc=0; ARBOR_REQUIRE_SERVICES=1 ARBOR_DRILLS_FULL=1 $(VENV)/bin/pytest \
	  tests/e2e/test_drills.py tests/e2e/test_hostile_input.py tests/e2e/test_soak.py $(PYTEST_ARGS) \
	  || rc=$$?; $(PY) -m tests.e2e.drills.report; exit $$rc

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: up
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

# Stops the servers and deletes their data (the database, broker queues and credentials).
clean-state: down
	rm -rf .arbor/pg .arbor/mosquitto .arbor/secrets .arbor/arbor.env
