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

# Architecture search on the CPU tree proxy (20 RL + 10 random trials, 2 workers), then the best and the median
# random architecture re-trained with 3 seeds and evaluated on the held-out YELL block (docs/search.md).
search-demo: setup
	rm -rf $(OUT)/search-demo
	$(BIN)/python benchmarks/search_demo.py --out $(OUT)/search-demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/bench_speed.py --quick --out $(OUT)/bench_speed

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
