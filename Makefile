# Taleforge developer entry points. Two commands do everything on a fresh machine:
#   make dev    install what is needed and run the whole stack on embedded defaults
#   make test   install what is needed and run every test
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# uv: the one on PATH, else the one `make` installs with pip (run as `python3 -m uv`).
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --frozen --all-packages
PYTEST_ARGS ?=

.PHONY: help uv sync dev test test-unit test-integration test-e2e lint fmt schemas bench clean

help:
	@echo "make dev      run the whole stack locally (NATS, Postgres, sandboxes, 4 services)"
	@echo "make test     run unit, integration and end-to-end tests"
	@echo "make lint     ruff + mypy"
	@echo "make bench    benchmarks (speed figures)"
	@echo "make schemas  re-export the events' JSON Schemas"
	@echo "make clean    remove local data (.var/) and caches"

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv

sync: uv
	@$(UV) sync --locked --all-packages --quiet

dev: sync
	$(RUN) taleforge dev

test: sync
	$(RUN) pytest $(PYTEST_ARGS)

test-unit: sync
	$(RUN) pytest tests/unit $(PYTEST_ARGS)

test-integration: sync
	$(RUN) pytest tests/integration $(PYTEST_ARGS)

test-e2e: sync
	$(RUN) pytest tests/e2e $(PYTEST_ARGS)

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy contracts/taleforge services/api/taleforge services/narrator/taleforge \
		services/illustrator/taleforge services/persistence/taleforge sandboxes/taleforge cli/taleforge

fmt: sync
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

schemas: sync
	$(RUN) taleforge schemas export

bench: sync
	$(RUN) python -m benchmarks

clean:
	rm -rf .var .pytest_cache .mypy_cache .ruff_cache
