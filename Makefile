# Two entry points for newcomers (see README):
#   make reproduce   set up .venv and run the main job
#   make test        set up .venv and run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUICK ?= --quick
OUT ?= results

.PHONY: setup test test-slow lint reproduce demo clean

$(BIN)/depthaccel: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: a bare torch requirement may pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,ray]'
	touch $@

setup: $(BIN)/depthaccel

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q -n 2

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

reproduce: setup
	$(BIN)/depthaccel reproduce all $(QUICK) --out $(OUT)

demo: setup
	$(BIN)/depthaccel demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
