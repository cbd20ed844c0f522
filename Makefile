# One entry point for setup, the main job, tests and benchmarks. Everything runs in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/autoprompt-search
SPACE ?= search_spaces/mr.yaml
SEED ?= 13

.PHONY: setup assets main test test-unit bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

assets: setup
	$(CLI) assets fetch

main: assets
	HF_HUB_OFFLINE=1 $(CLI) search $(SPACE) --seed $(SEED) --out results/runs/$(notdir $(basename $(SPACE)))-seed$(SEED)-$$(date +%Y%m%d-%H%M%S)

test: assets
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

test-unit: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -m "not integration"

bench: assets
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_scoring.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_search.py --space search_spaces/mr.yaml
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_triggers.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_generators.py --runs results/runs/generators
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_generators.py --model splade-tiny --runs results/runs/generators-splade \
		--out results/benchmarks/generators_mr_splade.json

clean:
	rm -rf $(VENV) build *.egg-info
