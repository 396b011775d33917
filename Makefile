# The two commands: `make demo` (install + imagine every class of the zoo) and `make test` (install + all tests that
# need nothing outside the repository). `make test-fast` is the quick loop: the unit tests only (those not marked
# slow), installing only when pyproject.toml changed. `make test-external` runs the tests on VNN-COMP data in
# $NETINVERT_VNNCOMP (default ../shared/data/vnncomp); it fails when that data is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo
# the suite runs on this many pytest-xdist workers, a test file per worker at a time (the CI machine has 2 cores)
TEST_WORKERS ?= 2
# written by `install`: test-fast installs again only when pyproject.toml is newer
INSTALLED := $(VENV)/.netinvert-installed

.PHONY: install demo test test-fast test-external bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(MAKE) install

demo: install
	$(BIN)/python -m netinvert.demo --out $(OUT)

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

test-external: install
	$(BIN)/python -m pytest -q tests/external

bench: install
	$(BIN)/python benchmarks/imagine_overhead.py

clean:
	rm -rf $(VENV) out *.egg-info
