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
OUT     ?=
TARGET  ?=

.PHONY: install test sweep report clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

# make report [RUN="DIR ..."] [OUT=DIR] [TARGET=95%|0.9]: default RUN is the newest results
# directory under results/ that has a trials.csv
report: install
	$(BIN)/creditbench report $(RUN) $(if $(OUT),--out $(OUT)) $(if $(TARGET),--target $(TARGET))

clean:
	rm -rf $(VENV) .pytest_cache
