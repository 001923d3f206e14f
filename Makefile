# The entry point for humans and CI alike: make demo, make test, make lint, make bench.
PYTHON ?= python3
VENV := .venv
LEGACY := .venv-legacy
PY := $(VENV)/bin/python
LPY := $(LEGACY)/bin/python

.PHONY: demo test test-main test-legacy lint typecheck bench docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "burnmap needs Python >= 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The SDK generation built on httpx (anthropic < 1.0, openai < 3.0), for the same SDK tests.
$(LEGACY)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LEGACY)
	$(LPY) -m pip install -q --upgrade pip
	$(LPY) -m pip install -q -e . "anthropic>=0.40,<1" "openai>=1.50,<3" pytest pytest-asyncio hypothesis redis boto3 trio
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/burnmap demo

test: lint typecheck test-main test-legacy

test-main: $(VENV)/.installed
	$(PY) -m pytest -q

test-legacy: $(LEGACY)/.installed
	$(LPY) -m pytest -q -m sdk -p no:cacheprovider

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check burnmap tests benchmarks
	$(VENV)/bin/ruff format --check burnmap tests benchmarks

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py
	$(PY) benchmarks/ledgers.py
	$(PY) benchmarks/wrap.py

docs:
	@ls docs/*.md

clean:
	rm -rf $(VENV) $(LEGACY) .pytest_cache .mypy_cache .ruff_cache .hypothesis
