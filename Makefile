# Two commands on a fresh machine:
#   make train   # set up .venv and meta-train Meta-SGD on 2D navigation on a local Ray
#   make test    # set up .venv and run the default test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/navigation2d-metasgd.yaml
OUT ?= runs/navigation2d-metasgd

.PHONY: setup train test lint test-slow test-launcher benchmark clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[test,tensorboard]"
	touch $@

setup: $(VENV)/.installed

train: setup
	$(VENV)/bin/metarl train $(CONFIG) --out $(OUT)

test: setup
	$(PY) -m pytest

lint: setup   # ruff's lint rules and formatting, as configured in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-slow: setup
	$(PY) -m pytest -m slow

test-launcher: setup   # opt-in: `ray up cluster-local.yaml` on loopback, a 2-iteration job, `ray down`
	bash scripts/setup_local_launcher.sh
	$(PY) -m pytest -m slow tests/test_cluster_launch.py

benchmark: setup
	$(VENV)/bin/metarl benchmark

clean:
	rm -rf $(VENV) .pytest_cache
