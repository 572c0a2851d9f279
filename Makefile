# creditbench — set-up, tests, sweeps and reports.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

ALGO    ?=
DATASET ?=
NETWORK ?=
SEEDS   ?=
TRIALS  ?=
EPOCHS  ?=
SPEC    ?=
ADDRESS ?=
RUN     ?=

.PHONY: install test sweep report clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
