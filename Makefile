# Two entry points for a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_ROOT ?= build/demo-root

.PHONY: demo test setup deps lint typecheck unit integration schemas bench clean

demo: setup
	@bash deploy/demo.sh "$(BIN)/kitctl" site-repo-example "$(DEMO_ROOT)"

test: setup lint typecheck
	$(BIN)/pytest

setup: deps $(VENV)/.installed

deps:
	@bash deploy/install-packages deploy/debian-packages.txt tests/debian-packages.txt

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed; install python3-venv (run 'make' as root to have it done)" >&2; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m 'not integration'

integration: setup
	$(BIN)/pytest -m integration

schemas: setup
	$(BIN)/kitctl schema --write schemas

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
