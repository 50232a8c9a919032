# Two entry points, each self-contained on a fresh machine with Python 3.11+:
#   make demo   sets up .venv and runs the demo pipeline on the bundled Yahtse pair
#               (replacing the products of an earlier make demo)
#   make test   sets up .venv (glacierflow with every extra, .[test]) and runs ruff and the
#               whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_output

.PHONY: demo test setup lint bench clean

$(BIN)/glacierflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(BIN)/glacierflow

setup: $(BIN)/glacierflow

demo: setup
	$(BIN)/glacierflow demo -o $(DEMO_OUT) --overwrite

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: setup lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/speed.py

clean:
	rm -rf $(VENV) $(DEMO_OUT)
