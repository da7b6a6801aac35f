
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
