"""The search on a bundled space for the five LM-BFF seeds: best manual prompt, searched single
prompt and ensemble on the held-out test split, per seed and on average.

Writes ``results/benchmarks/search_<space>.json``. Each seed's run folder (with its own
manifest) stays under ``results/runs/bench-<space>-seed<S>``; an existing complete run is read
again rather than redone, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from autoprompt_search.analysis import BENCHMARK_SEEDS, add_search_arguments, search_options, search_seed
from autoprompt_search.analysis import REPORTED_PROMPTS as METHODS
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/mr.yaml")
    parser.add_argument("--seeds", default=",".join(map(str, BENCHMARK_SEEDS)))
    parser.add_argument("--runs", default="results/runs")
    parser.add_argument("--out", help="default: results/benchmarks/search_<space>.json")
    add_search_arguments(parser)
    args = parser.parse_args()
    space = Path(args.space)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    for seed in seeds:
        per_seed[seed] = search_seed(space, seed, Path(args.runs) / f"bench-{space.stem}-seed{seed}", **search_options(args))
        print(f"seed {seed}: " + "  ".join(f"{m} {per_seed[seed][m]['test']['accuracy']:.4f}" for m in METHODS if per_seed[seed][m]),
              flush=True)
    summary = {}
    for method in METHODS:
        accuracies = [per_seed[s][method]["test"]["accuracy"] for s in seeds if per_seed[s][method]]
        f1s = [per_seed[s][method]["test"]["macro_f1"] for s in seeds if per_seed[s][method]]
        summary[method] = {"test_accuracy_mean": statistics.mean(accuracies),
                           "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                           "test_macro_f1_mean": statistics.mean(f1s), "per_seed": dict(zip(map(str, seeds), accuracies))}
    beats = {method: {str(s): per_seed[s][method]["test"]["accuracy"] > per_seed[s]["best_manual"]["test"]["accuracy"] for s in seeds}
             for method in ("best", "ensemble")}
    report = {
        "benchmark": "search", "space": str(space), "seeds": seeds, "summary": summary, "beats_best_manual": beats,
        "timings": {str(s): per_seed[s]["timings"] for s in seeds},
        "runs": {str(s): str(Path(args.runs) / f"bench-{space.stem}-seed{s}") for s in seeds},
        "per_seed": {str(s): {m: per_seed[s][m] for m in METHODS} for s in seeds},
        "provenance": stamp(),
    }
    out = Path(args.out or f"results/benchmarks/search_{space.stem}.json")
    atomic_write_json(out, report)
    for method in METHODS:
        print(f"{method:<12} test accuracy {summary[method]['test_accuracy_mean']:.4f} ± {summary[method]['test_accuracy_std']:.4f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
