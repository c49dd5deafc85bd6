# make demo / make test each do the whole set-up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out

.PHONY: setup fashion-mnist demo test bench clean search-demo

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt deepforest stardist
	touch $(STAMP)

setup: $(STAMP) fashion-mnist

# Fashion-MNIST (the classification data) is Debian's dataset-fashion-mnist: installed here when we are root,
# otherwise we say how; $SPINENET_FASHION_MNIST may point at another folder holding its four IDX .gz files.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
fashion-mnist:
	@if [ -f $(FASHION_MNIST) ] || [ -n "$$SPINENET_FASHION_MNIST" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	    echo "warning: apt-get install dataset-fashion-mnist failed; the Fashion-MNIST tests will not pass"; \
	else \
	    echo "note: Fashion-MNIST is not installed: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu)"; \
	    echo "      or set SPINENET_FASHION_MNIST to a folder with its four IDX .gz files"; \
	fi

DEMO   := $(OUT)/trees-demo
TREES   = $$($(BIN)/python -c "from spinenet.data.trees import trees_data_dir; print(trees_data_dir())")

# Trains RetinaNet-SpineNet-49S from scratch on real aerial tree crowns (CPU, about 9 minutes), then evaluates on
# the held-out YELL block and across sites, and writes curves and predictions as PNGs.
demo: setup
	rm -rf $(DEMO)
	$(BIN)/spinenet train --task detection --model retinanet_spinenet49s --data trees:yell-train \
	    --val-data trees:yell-val --recipe trees-cpu --out $(DEMO) --device cpu
	@echo "== held-out YELL block"
	$(BIN)/spinenet eval --checkpoint $(DEMO)/checkpoints/final.pt --data trees:yell-val
	@echo "== cross-site: OSBS_029 (61 trees)"
	$(BIN)/spinenet eval --checkpoint $(DEMO)/checkpoints/final.pt --data trees:osbs
	@echo "== cross-site: SOAP_061 (37 trees, Dead/Alive merged)"
	$(BIN)/spinenet eval --checkpoint $(DEMO)/checkpoints/final.pt --data trees:soap
	$(BIN)/spinenet predict --checkpoint $(DEMO)/checkpoints/final.pt --out $(DEMO)/predictions \
	    $(TREES)/OSBS_029.png $(TREES)/SOAP_061.png
	$(BIN)/spinenet draw spinenet49 -o $(OUT)/spinenet49.png
	@echo "curves: $(DEMO)/curves.png  predictions: $(DEMO)/predictions/"

# The search-vs-random experiment at demo size (docs/experiments/search.md): random, RL and evolution searches of
# 4 proxy trials each on 2 Ray workers (evolution mutates after 2 random draws, the RL controller learns every 2
# trials), then the best architecture of each strategy, the median random one,
# SpineNet-49S and R50-FPN trained with trees-cpu shortened to 200 steps (seed 0) and scored on the held-out YELL
# block. About 30 minutes on 2 cores. Interrupted, `make search-demo` again continues where it stopped; remove
# $(SEARCH_DEMO) to start over. Writes $(SEARCH_DEMO)/runs.csv and summary.png.
SEARCH_DEMO := $(OUT)/search-demo
search-demo: setup
	$(BIN)/spinenet experiment search-vs-random trials=4 workers=2 search_seeds=0 evolution_population=2 \
	    evolution_sample=2 rl_batch=2 steps=200 warmup_steps=25 eval_every=0 --seeds 0 --out $(SEARCH_DEMO) \
	    $$(test -f $(SEARCH_DEMO)/experiment.sqlite && echo --resume)

# Two pytest-xdist workers (one per core of a 2-core machine), each on one torch thread (tests/conftest.py);
# TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

bench: setup
	$(BIN)/python benchmarks/bench_speed.py --quick --out $(OUT)/bench_speed

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
