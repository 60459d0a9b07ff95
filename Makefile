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

.PHONY: help uv sync dev test test-unit test-integration test-e2e test-faults test-load lint fmt \
	schemas bench clean

help:
	@echo "make dev      run the whole stack locally (NATS, Postgres, sandboxes, 4 services)"
	@echo "make test     run unit, integration and end-to-end tests"
	@echo "make test-faults   the fault suite (kills, restarts, poison; prints its table)"
	@echo "make test-load     the load run (200 players over SSE; prints its figures)"
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

# The fault suite: kill -9, NATS and Postgres restarts, sandbox faults and poison while
# players play (TALEFORGE_FAULTS_SEED=<seed> replays one; see tests/faults/test_storm.py).
test-faults: sync
	$(RUN) pytest tests/faults $(PYTEST_ARGS)

# The load run: LOAD_PLAYERS (200) players through the API for LOAD_DURATION_S (60) s.
test-load: sync
	$(RUN) python -m benchmarks load

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

# --- containers (docker compose; see docker-compose.yml and .env.example) ---------------------
#   make up             build the images and start the stack in the background
#   make up GPU=1       add a real ComfyUI on the GPU and point the illustrator at it
#   make up CLUSTER=1   NATS as a 3-node cluster, the STORY stream with 3 replicas
#   make logs [SERVICE=narrator]   follow the logs;   make down   stop (volumes kept)
COMPOSE ?= docker compose
COMPOSE_UP_ENV := $(if $(GPU),COMFYUI_URL=http://comfyui:8188) \
	$(if $(CLUSTER),NATS_CONFIG=cluster STREAM_REPLICAS=3)
COMPOSE_UP_PROFILES := $(if $(GPU),--profile gpu) $(if $(CLUSTER),--profile cluster)
SERVICE ?=

.PHONY: up down logs

.env:
	cp .env.example .env
	@echo "created .env from .env.example: change the secrets before exposing anything"

up: .env
	$(COMPOSE_UP_ENV) $(COMPOSE) $(COMPOSE_UP_PROFILES) up --detach --build

down:
	$(COMPOSE) --profile '*' down

logs:
	$(COMPOSE) --profile '*' logs --follow --tail=200 $(SERVICE)
