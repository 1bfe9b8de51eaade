# One command each, on a fresh machine: `make train` and `make test` create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

# Use the read-only Kvasir-SEG copy beside the checkout when SEGKIT_DATA_DIR is not set;
# otherwise segkit downloads the official archive into ./data/kvasir-seg on first use.
ifeq ($(origin SEGKIT_DATA_DIR), undefined)
  ifneq ($(wildcard ../shared/data/kvasir-seg/images),)
    export SEGKIT_DATA_DIR := $(abspath ../shared/data/kvasir-seg)
  endif
endif

.PHONY: install train smoke test test-fast lint ui clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,deploy]'  # deploy: CI tests the exports
	touch $@

install: $(VENV)/.installed  ## create .venv and install segkit with its dev tools and the deploy runtimes

train: install  ## train + evaluate with the default config (add ARGS="model.filters=32 ...")
	$(PY) run.py $(ARGS)

smoke: install  ## a tiny end-to-end run (seconds)
	$(PY) run.py debug=smoke $(ARGS)

# 2 workers: the suite's subprocesses (run.py, training, servers) overlap on 2 cores
test: install  ## the whole suite, both lanes (what CI runs), on 2 pytest-xdist workers
	$(PY) -m pytest -q -n 2

test-fast: install  ## the fast lane: unit tests, no training (under 2 minutes)
	$(PY) -m pytest -q -m "not e2e"

lint: install  ## ruff (style, simplifications, complexity) and mypy (types of segkit/)
	$(VENV)/bin/ruff check segkit tests run.py benchmarks
	$(VENV)/bin/mypy

ui: install  ## MLflow UI on http://127.0.0.1:5000 over the project's store
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000

clean:  ## remove caches and outputs (keeps mlflow.db and mlruns/)
	rm -rf .cache outputs multirun .pytest_cache
