# make demo / make test each do the whole set-up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt deepforest
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/spinenet list
	$(BIN)/spinenet summary
	$(BIN)/spinenet draw spinenet49 -o $(OUT)/spinenet49.png

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/bench_backbones.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
