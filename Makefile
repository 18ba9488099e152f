PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest ts-test bench fuzz generate screenshots clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP) lint typecheck pytest ts-test

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The TypeScript client: built with tsc from the npm registry, tested against `runstate serve`.
TS_CLIENT := clients/typescript
ts-test: $(STAMP)
	cd $(TS_CLIENT) && npm ci --no-audit --no-fund --loglevel=error && npx tsc -p .
	cd $(TS_CLIENT) && RUNSTATE_BIN=$(abspath $(BIN))/runstate node --test test/

demo: $(STAMP)
	$(BIN)/runstate demo $(DEMO_ARGS)

# docs/screenshots/*.png: the web view over the demo's data, taken by the browser test's code.
screenshots: $(STAMP)
	RUNSTATE_SCREENSHOTS=docs/screenshots $(BIN)/pytest tests/test_web_view.py -k screenshots $(PYTEST_ARGS)

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/test_fuzz.py $(PYTEST_ARGS)

# Regenerate runstate.sync's modules from their async sources (tests/test_generated.py checks).
generate: $(STAMP)
	$(BIN)/python tools/async_to_sync.py

bench: $(STAMP)
	$(BIN)/runstate bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache $(TS_CLIENT)/node_modules $(TS_CLIENT)/dist
