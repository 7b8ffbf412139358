# Two entry points for newcomers (see README):
#   make reproduce   set up .venv and run the main job
#   make test        set up .venv and run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUICK ?= --quick
OUT ?= results
# Where torch comes from. Empty (default): pip's configured index (here: the local CPU
# wheels; on a normal Linux machine plain PyPI serves the multi-GB CUDA build). For the
# small CPU-only build from PyTorch's own index:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_ARG := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: setup test test-slow lint reproduce demo data clean

$(BIN)/depthaccel: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from TORCH_INDEX when given (see above); pip shows its progress.
	$(BIN)/pip install torch==$(TORCH_VERSION) $(TORCH_INDEX_ARG)
	$(BIN)/pip install -e '.[dev,ray]'
	touch $@

setup: $(BIN)/depthaccel

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks

test: setup lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# Exit status 3 = experiments skipped for missing data; the last message says what to
# do (`make data`), so make adds no error line after it.
reproduce: setup
	$(BIN)/depthaccel reproduce all $(QUICK) --out $(OUT) || [ $$? -eq 3 ]

# Download and verify the data sets the experiments use (Ethanol, MNIST).
data: setup
	$(BIN)/depthaccel data fetch

demo: setup
	$(BIN)/depthaccel demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
