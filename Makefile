# The two commands: `make demo` (install + imagine every class of the zoo) and `make test` (install + all tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"

demo: install
	$(BIN)/python -m netinvert.demo --out $(OUT)

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/imagine_overhead.py

clean:
	rm -rf $(VENV) out *.egg-info
