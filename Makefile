# The two entry points of the README: `make demo` and `make test`. Each creates the virtual
# environment on first use (torch pinned by constraints.txt) and reuses it afterwards.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.clipmpcad-installed

.PHONY: demo test lint env

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/clipmpcad demo --out runs/demo --overwrite

test: $(STAMP)
	scripts/ensure-chromium
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
