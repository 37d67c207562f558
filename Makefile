# Set-up from nothing: `make demo` or `make test` create .venv, install pinned dependencies, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo benchmark clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet "pip>=24"
	PIP_CONSTRAINT=constraints.txt $(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/ruff check medseg tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/medseg demo

benchmark: install
	$(BIN)/python -m medseg.benchmark

clean:
	rm -rf $(VENV) demo_output .pytest_cache
