# The two commands of the README:
#   make demo   - replay sample events of five vendors through the shipped rules, and run
#                 the Enreach, Avaya and Genesys sources live against their simulators
#   make test   - the whole test suite (core, plugins, rule tests, lint and types)
# Both create the virtual environment and install the core and every plugin (with its
# test extra) first.
#   make prereqs - the system packages the tests' real peers need, installed only where
#                  missing (scripts/install-prereqs.sh; root or sudo then); make test runs it

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)
STAMP := $(VENV)/.installed

.PHONY: demo test prereqs lint bench install clean

demo: $(STAMP)
	$(BIN)/ccbus demo

test: prereqs $(STAMP)
	$(BIN)/python -m pytest

prereqs:
	scripts/install-prereqs.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/route_bench.py
	$(BIN)/python bench/memory_bench.py
	$(BIN)/python bench/bus_bench.py

install: $(STAMP)

$(STAMP): pyproject.toml $(PLUGINS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "ccbus needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach p,$(PLUGINS),-e '$(dir $(p))[test]')
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
