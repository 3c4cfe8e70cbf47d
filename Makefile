# Two commands do the whole set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --constraint infra/constraints.txt
STAMP  := $(VENV)/.installed

export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1

.PHONY: install demo test lint bench clean-runs

install: $(STAMP)

# Re-install only when the dependency declarations change; `pip install -e` keeps the code live.
$(STAMP): pyproject.toml infra/constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[dev]'
	$(BIN)/gptrecipe assets
	touch $(STAMP)

demo: install
	$(BIN)/gptrecipe run tiny

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(PIP) -e '.[bench]'
	$(BIN)/python -m bench.curation
