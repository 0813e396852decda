# One task runner: every target is a one-liner that CI calls too.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Editable installs of the services (a finder: they span two package roots) and of the SDK (a .pth
# path entry, which type checkers follow). setuptools' "Editable installation" notice is
# informational only and is not printed.
PIP_EDITABLE := PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
	$(BIN)/python -m pip install --quiet

.PHONY: install browser promtool codegen check-codegen check-breaking lint test fuzz chaos bench up clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml clients/python/pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_EDITABLE) -e ".[dev]" -e clients/python
	touch $(STAMP)

install: $(STAMP)  ## create the virtual environment and install everything

CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:  ## Debian's chromium for the browser tests (Playwright drives it; it downloads nothing)
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing chromium with apt (for the browser tests)"; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; \
	fi

PROMTOOL ?= /usr/bin/promtool

promtool:  ## Debian's prometheus package for promtool (the metrics tests check the exposition with it)
	@if [ ! -x $(PROMTOOL) ]; then \
		echo "installing prometheus with apt (promtool, for the metrics tests)"; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends prometheus; \
	fi

codegen: install  ## regenerate stubs, REST interfaces and SDK layers from the contracts
	$(BIN)/python -m codegen

check-codegen: install  ## fail if the committed generated code differs from the contracts
	$(BIN)/python -m codegen --check

check-breaking: install  ## fail on wire/JSON-breaking contract changes against REF (default: merge base with main)
	$(BIN)/python -m codegen --breaking $(REF)

lint: install  ## ruff and mypy --strict on hand-written code
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy codegen services tests clients/python/missive_client

test: check-codegen lint browser promtool  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest

fuzz: install  ## deeper property-based contract fuzzing than `make test` (MISSIVE_FUZZ_EXAMPLES)
	MISSIVE_FUZZ_EXAMPLES=$${MISSIVE_FUZZ_EXAMPLES:-300} $(BIN)/python -m pytest tests/contract -q

chaos: install  ## every chaos scenario at full scale (kills, pauses, SIGTERM, Valkey faults); summary at the end
	MISSIVE_CHAOS=deep $(BIN)/python -m pytest tests/chaos $(ARGS)

bench: install  ## performance figures next to same-run bare baselines; table + JSON (ARGS="--scenarios send,rest --duration 5 --output FILE")
	$(BIN)/python -m tests.bench $(ARGS)

up: install  ## start embedded Valkey + the four services, print endpoints; Ctrl-C stops (ARGS="--no-valkey --data-dir DIR --replicas N --cluster")
	$(BIN)/python -m services.launcher $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
