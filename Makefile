# Two entry points for a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_ROOT ?= build/demo-root

.PHONY: demo test setup deps lint typecheck unit integration schemas bench bench-lab clean lab

demo: setup
	@bash deploy/demo.sh "$(BIN)/kitctl" site-repo-example "$(DEMO_ROOT)"

# The rehearsal lab (docs/lab.md): root only; LAB_ARGS="--pcs 8 --keep" to change it.
lab: setup
	@test "$$(id -u)" -eq 0 || { echo "error: make lab builds network namespaces: run it as root" >&2; exit 1; }
	$(BIN)/kitctl lab run $(LAB_ARGS)

test: setup lint typecheck
	$(BIN)/pytest

setup: deps $(VENV)/.installed

deps:
	@bash deploy/install-packages deploy/debian-packages.txt tests/debian-packages.txt

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed; install python3-venv (run 'make' as root to have it done)" >&2; exit 1; }
	@echo "installing kitting-reconciler and its Python dependencies into $(VENV) (log: $(VENV)/pip.log)"
	@{ $(BIN)/python -m pip install -q --upgrade pip && \
	   $(BIN)/python -m pip install -q -e '.[test]'; } >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
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

# The project's copy and the example site repo's own (its modelines point there).
schemas: setup
	$(BIN)/kitctl schema --write schemas
	$(BIN)/kitctl schema --write site-repo-example/schemas

bench: setup
	$(BIN)/python bench/run.py

# Multicast against unicast in namespaces (docs/performance.md): root only, about 3 minutes.
bench-lab: setup
	@test "$$(id -u)" -eq 0 || { echo "error: make bench-lab builds network namespaces: run it as root" >&2; exit 1; }
	$(BIN)/python bench/lab_transfer.py $(BENCH_LAB_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
