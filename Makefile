# coderoom — `make run` and `make test` work from a fresh clone with Python 3.13 + make.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: the one on PATH, else the user install pip puts in ~/.local/bin.
UV = $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: help run test test-quick lint format uv sync
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

uv: ## install uv when missing
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --user --quiet uv \
		|| python3 -m pip install --user --quiet --break-system-packages uv \
		|| pip install --quiet uv

sync: uv ## install the locked dependencies into .venv
	@$(UV) sync --frozen --quiet

run: sync ## the whole system on this machine (UI+REST :8000, gateways :8001 :8002)
	$(UV) run --frozen coderoom run

test: sync ## every test, slow ones included (PYTEST_ARGS="..." for more options)
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-quick: sync ## tests not marked slow, in parallel
	$(UV) run --frozen pytest -m "not slow" -n auto

lint: sync ## ruff, ruff format --check, mypy --strict
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

format: sync ## ruff format + autofix
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

# --- benchmarks (bench/README.md) ---
.PHONY: bench bench-compare
bench: ## coderoom benchmark into docs/bench/<date>/ (SCENARIOS=..., QUICK=1)
	uv run python -m bench
bench-compare: ## coderoom side by side with ../shared/peers (REPEAT=3, TARGETS=...)
	uv run python -m bench --compare

# --- browser bundle (docs/web.md) ---
.PHONY: web
web: ## build the browser bundle into services/api/static/ (commit it with the sources)
	cd web && npm ci --no-audit --no-fund && npm run build
