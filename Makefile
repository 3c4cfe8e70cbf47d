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
	$(PIP) -e '.[dev,hf]'
	$(BIN)/gptrecipe assets
	touch $(STAMP)

demo: install
	$(BIN)/gptrecipe run tiny

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Benchmark scripts (figures, no assertions). datatrove, the baseline, lives in its own venv: its
# dependencies (xxhash<4, fasttext-numpy2-wheel) conflict with ours.
DT_VENV := .venv-datatrove
DT_PACKAGES := datatrove spacy regex tokenizers xxhash trafilatura lxml_html_clean fasttext-numpy2-wheel \
	warcio faust-cchardet python-magic tldextract fasteners pyahocorasick pyarrow resiliparse

$(DT_VENV)/.installed: infra/datatrove-constraints.txt
	test -d $(DT_VENV) || $(PYTHON) -m venv $(DT_VENV)
	$(DT_VENV)/bin/python -m pip install --quiet --constraint infra/datatrove-constraints.txt $(DT_PACKAGES)
	touch $@

bench: install $(DT_VENV)/.installed
	$(BIN)/python tests/bench/curation_throughput.py --datatrove-python $(DT_VENV)/bin/python
	$(BIN)/python tests/bench/curation_throughput.py --datatrove-python $(DT_VENV)/bin/python \
		--warc tests/realpages/debian-docs.warc.gz
	$(BIN)/python tests/bench/curation_agreement.py --datatrove-python $(DT_VENV)/bin/python
	$(BIN)/python tests/bench/extractor_quality.py
	$(BIN)/python tests/bench/minhash_throughput.py --datatrove-python $(DT_VENV)/bin/python
	$(BIN)/python tests/bench/tokenize_throughput.py
	$(BIN)/python tests/bench/pretrain_throughput.py
	$(BIN)/python tests/bench/serve_load.py
	$(BIN)/python tests/bench/pii_recall.py
	$(BIN)/python tests/bench/store_traffic.py
	$(BIN)/python tests/bench/warc_scale.py --chain-mb 10,30
