"""Baselines a user would pick instead of a prompt search, on the quality benchmark's splits.

For each bundled dataset and LM-BFF seed, the same few-shot examples (K=16 per label, train and
dev together: what the search judges prompts on) and the same held-out test sample
(``--test-limit``, shared by every seed) as ``bench_quality.py``:

- ``tfidf_logreg``: TF-IDF (word 1-2-grams, sublinear tf) and logistic regression, its L2
  strength chosen by cross-validated log-loss on the few-shot examples alone;
- ``linear_probe``: logistic regression on the frozen model's hidden state at the slot of the
  space's first manual template (the vector its output embedding projects), fitted the same way:
  what a user with the model but no prompt search would fit. The test examples' hidden states are
  computed once per dataset (the test sample is the same for every seed).

Beside them, the quality benchmark's figures of the same seeds (``results/benchmarks/quality.json``)
for the best single prompt and the ensemble, when present. Writes ``results/benchmarks/baselines.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from autoprompt_search.analysis import BENCHMARK_DATASETS, BENCHMARK_SEEDS, mean_std
from autoprompt_search.backends import load_backend
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.spaces import load_space
from autoprompt_search.splits import make_splits

ROOT = Path(__file__).resolve().parent.parent
CS = np.logspace(-3, 3, 13)  # the L2 strengths cross-validation picks from


def joined(example) -> str:
    return " ".join(example.fields.values())


def logistic(folds: int) -> LogisticRegressionCV:
    return LogisticRegressionCV(Cs=CS, cv=folds, scoring="neg_log_loss", max_iter=5000, use_legacy_attributes=False)


def folds_for(gold: list[int]) -> int:
    return max(2, min(5, min(np.bincount(gold))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(BENCHMARK_DATASETS))
    parser.add_argument("--seeds", default=",".join(map(str, BENCHMARK_SEEDS)))
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--quality", default="results/benchmarks/quality.json")
    parser.add_argument("--out", default="results/benchmarks/baselines.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    quality = json.loads((ROOT / args.quality).read_text()).get("results", {}) if (ROOT / args.quality).is_file() else {}
    report: dict[str, Any] = {}
    for dataset in args.datasets.split(","):
        space = load_space(dataset)
        began = time.perf_counter()
        scorer = PromptScorer(load_backend(space.model, max_length=space.max_length))
        template = space.templates.seeds[0]
        first = make_splits(space.dataset, space.few_shot.k, seeds[0], args.test_limit)
        labels = list(first.test.labels)
        test_gold = [labels.index(e.label) for e in first.test.examples]
        test_states = scorer.backend.slot_hidden_states(scorer.prepare(template, [e.fields for e in first.test.examples]).prompts).numpy()
        per_seed: dict[int, dict[str, float]] = {}
        for seed in seeds:
            splits = make_splits(space.dataset, space.few_shot.k, seed, args.test_limit)
            if splits.test.content_hash() != first.test.content_hash():
                raise SystemExit(f"{dataset}: the test sample differs between seeds {seeds[0]} and {seed}")
            examples = splits.train.examples + splits.dev.examples
            gold = [labels.index(e.label) for e in examples]
            tfidf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), logistic(folds_for(gold)))
            tfidf.fit([joined(e) for e in examples], gold)
            states = scorer.backend.slot_hidden_states(scorer.prepare(template, [e.fields for e in examples]).prompts).numpy()
            probe = make_pipeline(StandardScaler(), logistic(folds_for(gold))).fit(states, gold)
            per_seed[seed] = {
                "tfidf_logreg": float(np.mean(tfidf.predict([joined(e) for e in first.test.examples]) == test_gold)),
                "linear_probe": float(np.mean(probe.predict(test_states) == test_gold)),
            }
            searched = (quality.get(dataset, {}).get("per_seed", {}) or {}).get(str(seed), {})
            for method in ("search", "ensemble", "manual_calibrated"):
                if isinstance(searched.get(method), dict):
                    per_seed[seed][method] = searched[method]["test_accuracy"]
            print(dataset, seed, {k: round(v, 4) for k, v in per_seed[seed].items()}, flush=True)
        methods = sorted({m for row in per_seed.values() for m in row})
        report[dataset] = {
            "template": template.source, "test_n": len(test_gold), "test_sha256": first.test.content_hash(),
            "seconds": time.perf_counter() - began,
            "methods": {m: mean_std([row[m] for row in per_seed.values() if m in row]) for m in methods},
            "per_seed": per_seed,
        }
        atomic_write_json(ROOT / args.out, {"benchmark": "baselines", "k": 16, "seeds": seeds, "test_limit": args.test_limit,
                                            "results": report, "machine_note": "the project's 2-core CPU machine",
                                            "provenance": stamp()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
