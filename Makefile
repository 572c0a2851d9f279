# creditbench — set-up, tests, sweeps and reports.
# Python 3.11: constraints.txt pins versions resolved and tested on CPython 3.11 (pyproject: >=3.11,<3.12)
PYTHON ?= python3.11
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

.PHONY: install constraints test sweep report clean mutants mutants-report docs bench

# installs the exact versions pinned in constraints.txt (torch==2.14.1, torchvision==0.29.1, ...);
# --no-build-isolation: the editable build uses the venv's own setuptools (first upgraded to the pinned
# one: a new venv's bundled setuptools cannot build editable installs without `wheel`), so re-running it
# with every requirement met needs no network (a fresh checkout beside an existing .venv works offline)
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "error: $(VENV) has Python %d.%d; creditbench needs 3.11 (make clean, then make install PYTHON=python3.11)" % sys.version_info[:2])'
	$(BIN)/pip install --quiet -c constraints.txt setuptools
	$(BIN)/pip install --quiet --no-build-isolation -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# make constraints: pin the exact versions the working .venv has for everything pyproject.toml's
# dependencies (and the dev extra) pull in; run it on purpose, once a dependency change is tested
constraints:
	test -x $(BIN)/python || { echo "error: no $(VENV): run make install first" >&2; exit 1; }
	$(BIN)/python -m harness.provenance > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

test: install
	$(BIN)/python -m pytest -q

# make report [RUN="DIR ..."] [OUT=DIR] [TARGET=95%|0.9]: default RUN is the newest results
# directory under results/ that has a trials.csv
report: install
	$(BIN)/creditbench report $(RUN) $(if $(OUT),--out $(OUT)) $(if $(TARGET),--target $(TARGET))

# make sweep [ALGO=id|a,b|all] [DATASET=name] [NETWORK=spec] [SEEDS=n] [TRIALS=n] [EPOCHS=n]
#            [SPEC=sweeps/x.yaml|name] [ADDRESS=ray-address]; the last line printed is the results directory.
sweep: install
	$(BIN)/python -m harness.cli sweep \
	  $(if $(SPEC),--spec '$(SPEC)') $(if $(ALGO),--algo '$(ALGO)') $(if $(DATASET),--dataset '$(DATASET)') \
	  $(if $(NETWORK),--network '$(NETWORK)') $(if $(SEEDS),--seeds '$(SEEDS)') $(if $(TRIALS),--trials '$(TRIALS)') \
	  $(if $(EPOCHS),--epochs '$(EPOCHS)') $(if $(ADDRESS),--address '$(ADDRESS)')

clean:
	rm -rf $(VENV) .pytest_cache mutants

# make bench [ALGO=bp,fa,...] [ARGS="--updates 400 --rounds 7"]: every algorithm's time and FLOPs per update and
# where its time goes (Fashion-MNIST, mlp-5x256-tanh, batch 128, 5 rounds) written into README.md's performance
# section; run it on an otherwise idle machine
bench: install
	$(BIN)/python -m harness.cli bench --algo '$(or $(ALGO),all)' --rounds 5 --profile $(ARGS) --readme README.md

# docs/algorithms.md from the registry (tests/test_algorithms_contract.py fails when it is out of date)
docs: install
	$(BIN)/python -m harness.algorithm_reference > docs/algorithms.md.tmp && mv docs/algorithms.md.tmp docs/algorithms.md

# make mutants [FILES="algorithms/fa.py harness/cost.py"] [MUTANTS_JOBS=2]: mutation testing with mutmut
# (tools/mutants.py: per-mutant test selection, report of survivors); not part of `make test`
FILES ?=
mutants: install
	nice -n 10 $(BIN)/python tools/mutants.py run $(FILES)

mutants-report: install
	$(BIN)/python tools/mutants.py report $(FILES)
