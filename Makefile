# One entry point for setup, the main job, tests and benchmarks. Everything runs in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/autoprompt-search
SPACE ?= search_spaces/mr.yaml
SEED ?= 13
# The main job's settings (README, "The main job's time"): bfloat16 where the CPU or GPU has it natively, and
# the quality benchmark's sample of 1,000 test sentences. `make main PRECISION=float32 TEST_LIMIT=` scores
# the whole test split in float32.
PRECISION ?= auto
TEST_LIMIT ?= 1000

.PHONY: setup assets main lint test test-unit bench bench-main-job bench-quality bench-model-ensemble bench-training bench-openprompt openprompt-venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,train,distributed]'
	touch $@

setup: $(VENV)/.installed

assets: setup
	$(CLI) assets fetch

main: assets
	HF_HUB_OFFLINE=1 $(CLI) search $(SPACE) --seed $(SEED) $(if $(PRECISION),--precision $(PRECISION)) $(if $(TEST_LIMIT),--test-limit $(TEST_LIMIT)) \
		--out results/runs/$(notdir $(basename $(SPACE)))-seed$(SEED)-$$(date +%Y%m%d-%H%M%S)

lint: setup
	$(VENV)/bin/ruff check autoprompt_search tests benchmarks

test: assets lint
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
	$(MAKE) bench-openprompt
	$(MAKE) bench-openprompt-export
	$(MAKE) bench-reliability
	$(MAKE) bench-quality
	$(MAKE) bench-model-ensemble
	$(MAKE) bench-baselines
	$(MAKE) bench-training

# The main job from an empty slot cache, timed in both precisions, on the 1,000-sentence test sample and on the
# whole test split (nothing else running; about 30 minutes on a 2-core CPU) -> results/benchmarks/main_job.json.
bench-main-job: assets
	for precision in bfloat16 float32; do \
		HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_main_job.py --label $${precision}_test1000 -- --precision $$precision --test-limit 1000 && \
		HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_main_job.py --label $$precision -- --precision $$precision || exit 1; \
	done

# Every figure of the README's quality table, from scratch (hours on a 2-core CPU; runs already
# complete under results/runs/quality are read back, so an interrupted run continues).
bench-quality: assets
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_quality.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_selection.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_trigger_templates.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_trigger_templates.py --space search_spaces/mr_fluent.yaml
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_selection.py --datasets mr,mr_fluent,mr_gradient --out results/benchmarks/selection_mr_spaces.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_demonstrations.py --sets 2

# The slot cache's size and the disk's free space sampled over the whole quality benchmark, with the default
# cap and floor -> results/benchmarks/cache_bound_quality.json. Run it in a fresh clone (there every search
# runs; here finished runs are read back); it takes hours on a 2-core CPU: the same command again continues
# the record (--append), the finished runs read back.
.PHONY: bench-cache-bound
bench-cache-bound: assets
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_cache_bound.py --append --out results/benchmarks/cache_bound_quality.json \
		-- $(MAKE) bench-quality

# Ensembles of models on MR: SmolLM2-135M's and Gemma-3-270M's quality-benchmark searches (5 seeds each, the
# same samples; runs already complete are read back) combined per seed -> results/benchmarks/model_ensemble_mr.json.
bench-model-ensemble: assets
	$(CLI) assets fetch gemma3-270m
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_quality.py --datasets mr --methods full --no-readme --out results/benchmarks/quality_mr_float32.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_quality.py --model gemma3-270m --datasets mr --methods full --no-readme
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_model_ensemble.py results/runs/quality results/runs/quality-gemma3-270m

# Every training method from the MR runs' prompts, 5 seeds (about 2.5 hours on a 2-core CPU; finished
# outputs are read back, so an interrupted run continues); then, on the quality benchmark's MR runs of both
# models (bench-model-ensemble's), all-weights training from the found and the manual prompt and its refit, the
# two soft prompts, Gemma-3-270M with LoRA and with all weights, subj and bbc, the 2nd to 5th prompts of each run's
# ensemble (SmolLM2 all weights, Gemma LoRA: about 2.5 hours more), and the two models' trained outputs averaged.
bench-training: bench-model-ensemble
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --out results/benchmarks/training_mr.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --runs results/runs/quality --methods full,full_refit \
		--out results/benchmarks/training_mr_quality_runs.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --runs results/runs/quality --methods soft_random,soft_text --no-manual \
		--out results/benchmarks/training_mr_quality_runs_soft.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --model gemma3-270m --runs results/runs/quality-gemma3-270m \
		--methods lora,lora_refit --no-manual
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --model gemma3-270m --runs results/runs/quality-gemma3-270m \
		--methods full --no-manual --out results/benchmarks/training_mr_gemma3_270m_full.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --model gemma3-270m --runs results/runs/quality-gemma3-270m \
		--methods lora_member2,lora_member3 --no-manual --out results/benchmarks/training_mr_gemma3_270m_members.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --model gemma3-270m --runs results/runs/quality-gemma3-270m \
		--methods lora_member4,lora_member5 --no-manual --out results/benchmarks/training_mr_gemma3_270m_members45.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --runs results/runs/quality --methods full_member2,full_member3 --no-manual \
		--out results/benchmarks/training_mr_quality_runs_members.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --runs results/runs/quality --methods full_member4,full_member5 --no-manual \
		--out results/benchmarks/training_mr_quality_runs_members45.json
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --space subj --methods full --no-manual
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_training.py --space bbc --methods full --no-manual
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_trained_ensembles.py \
		--part smollm2_full='results/runs/quality/mr-seed{seed}-full' \
		--part smollm2_full_refit='results/runs/quality/mr-seed{seed}-full_refit' \
		--part gemma3_lora='results/runs/quality-gemma3-270m/mr-seed{seed}-lora' \
		--part gemma3_lora_refit='results/runs/quality-gemma3-270m/mr-seed{seed}-lora_refit' \
		--part gemma3_full='results/runs/quality-gemma3-270m/mr-seed{seed}-full' \
		--part smollm2_frozen='results/runs/quality/mr-seed{seed}' --part gemma3_frozen='results/runs/quality-gemma3-270m/mr-seed{seed}' \
		$(foreach n,2 3 4 5,--part gemma3_lora_member$(n)='results/runs/quality-gemma3-270m/mr-seed{seed}-lora_member$(n)' \
			--part smollm2_full_member$(n)='results/runs/quality/mr-seed{seed}-full_member$(n)') \
		--combination trained=smollm2_full+gemma3_lora --combination trained_refit=smollm2_full_refit+gemma3_lora_refit \
		--combination trained_and_frozen=smollm2_full+gemma3_lora+smollm2_frozen+gemma3_frozen \
		--combination trained_both_full=smollm2_full+gemma3_full --combination trained_three=smollm2_full+gemma3_lora+gemma3_full \
		--combination gemma3_lora_top3=gemma3_lora+gemma3_lora_member2+gemma3_lora_member3 \
		--combination smollm2_full_top3=smollm2_full+smollm2_full_member2+smollm2_full_member3 \
		--combination trained_top3_both=smollm2_full+smollm2_full_member2+smollm2_full_member3+gemma3_lora+gemma3_lora_member2+gemma3_lora_member3 \
		--combination gemma3_lora_top5=gemma3_lora+gemma3_lora_member2+gemma3_lora_member3+gemma3_lora_member4+gemma3_lora_member5 \
		--combination smollm2_full_top5=smollm2_full+smollm2_full_member2+smollm2_full_member3+smollm2_full_member4+smollm2_full_member5 \
		--combination trained_top5_both=smollm2_full+smollm2_full_member2+smollm2_full_member3+smollm2_full_member4+smollm2_full_member5+gemma3_lora+gemma3_lora_member2+gemma3_lora_member3+gemma3_lora_member4+gemma3_lora_member5 \
		--out results/benchmarks/trained_ensembles_mr.json

# OpenPrompt 1.0.1 in its own environment, for the speed comparison (see benchmarks/openprompt/requirements.txt).
OPENPROMPT_VENV := .venv-openprompt
$(OPENPROMPT_VENV)/.installed: benchmarks/openprompt/requirements.txt
	$(PYTHON) -m venv $(OPENPROMPT_VENV)
	$(OPENPROMPT_VENV)/bin/pip install --quiet --upgrade pip
	$(OPENPROMPT_VENV)/bin/pip install --quiet -r benchmarks/openprompt/requirements.txt
	$(OPENPROMPT_VENV)/bin/pip install --quiet --no-deps openprompt==1.0.1
	touch $@

openprompt-venv: $(OPENPROMPT_VENV)/.installed

bench-openprompt: assets openprompt-venv
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_openprompt.py $(OPENPROMPT_ARGS)

# The OpenPrompt form a search exports (best.json's exports.openprompt), loaded by OpenPrompt 1.0.1 as it is, against
# our predictions on the run's first 200 test examples. The run is made (or finished) first if its best.json is missing.
# A linear probe on the slot's hidden state and TF-IDF + logistic regression on the quality
# benchmark's few-shot splits, five datasets, five seeds (about 15 minutes on a 2-core CPU).
.PHONY: bench-baselines
bench-baselines: assets
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_baselines.py

# Workers on one study in PostgreSQL and in a journal file, and one process, killed with SIGKILL at
# random and resumed: trials lost, scored twice, retried (a tiny model; minutes on a 2-core CPU).
.PHONY: bench-reliability
bench-reliability: setup
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) benchmarks/bench_reliability.py

# The held-out label words and estimates of the current code against the quality table's runs
# (results/benchmarks/quality_runs): searches into results/runs/quality_v2, then the comparison.
.PHONY: bench-estimates
bench-estimates: assets
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_quality.py --methods full --runs results/runs/quality_v2 \
		--out results/benchmarks/quality_heldout_words.json --no-readme
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_estimates.py

.PHONY: bench-openprompt-export
OPENPROMPT_EXPORT_RUN := results/runs/train/mr-seed13
bench-openprompt-export: assets openprompt-venv
	test -f $(OPENPROMPT_EXPORT_RUN)/best.json || HF_HUB_OFFLINE=1 $(CLI) search mr --seed 13 --test-limit 1000 --resume --out $(OPENPROMPT_EXPORT_RUN)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_openprompt_export.py --prompt $(OPENPROMPT_EXPORT_RUN)/best.json $(OPENPROMPT_EXPORT_ARGS)

clean:
	rm -rf $(VENV) $(OPENPROMPT_VENV) build *.egg-info

# The bundled datasets treated as new (`search --dataset NAME`, no hand-written space) against their
# hand-written spaces (the runs of bench-estimates, run here where missing).
.PHONY: bench-starter
bench-starter: assets
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_starter.py

# Prompt choices with unlabelled texts (batch calibration, mutual information, pseudo-labels),
# replayed on the finished MR runs of bench-estimates.
.PHONY: bench-unlabelled
bench-unlabelled: assets
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_unlabelled.py

# The same rules on real MR searches that fitted `prior` on 256 unlabelled texts (5 seeds, one
# after the other), set beside the runs of bench-estimates searched without them.
.PHONY: bench-unlabelled-search
bench-unlabelled-search: assets
	for seed in 13 21 42 87 100; do \
		HF_HUB_OFFLINE=1 $(PY) -m autoprompt_search.cli.main search search_spaces/mr_unlabelled.yaml --seed $$seed \
			--test-limit 1000 --out results/runs/unlabelled_v1/mr-seed$$seed --resume || exit 1; \
	done
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_unlabelled.py --runs results/runs/unlabelled_v1 \
		--baseline-runs results/runs/quality_v2 --out results/benchmarks/unlabelled_search.json
