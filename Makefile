# The README's commands. Each creates or reuses .venv, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOG    ?= ./tasklog-data
TASKS  ?= 20000

.PHONY: demo test bench bench-full lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

demo: $(VENV)/.installed-base
	$(BIN)/tasklog demo --log $(LOG) --tasks $(TASKS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/ -q

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py --profile quick

bench-full: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py --profile full

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check tasklog projections tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks tasklog-data
