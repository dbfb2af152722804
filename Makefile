# erasekit: `make quickstart` and `make test` do all set-up on a fresh machine (a .venv in this folder).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned to the builds this workplace keeps on disk (open_clip needs torchvision).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Test processes (pytest-xdist, one torch thread each; a test file stays in one process so its session fixtures are
# built once): the suite leaves a core idle between small tests when it runs in one process.
TEST_WORKERS ?= 2
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install quickstart test test-slow lint format clean demo docs

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,fid,demo]"
	touch $(STAMP)

install: $(STAMP)

quickstart: install
	$(BIN)/erasekit quickstart --out outputs/quickstart

# The Gradio demo on http://127.0.0.1:7860 (loopback only); e.g. make demo DEMO_ARGS="--model-dir worlds/minicanvas"
demo: install
	$(BIN)/erasekit demo $(DEMO_ARGS)

test: install
	$(BIN)/ruff check erasekit erasekit_worlds tests benchmarks
	ERASEKIT_BAD_INPUT_DIR=docs/reference/bad-inputs $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# The reference site (docs/, mkdocs.yml) into site/; warnings are errors.
docs: install
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	$(BIN)/mkdocs build --strict

test-slow: install
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check erasekit erasekit_worlds tests benchmarks
	$(BIN)/ruff format --check erasekit erasekit_worlds tests

format: install
	$(BIN)/ruff format erasekit erasekit_worlds tests
	$(BIN)/ruff check --fix erasekit erasekit_worlds tests

clean:
	rm -rf $(VENV) outputs site .pytest_cache .ruff_cache
