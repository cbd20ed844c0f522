"""What the search's choices leave on the table, read from the quality benchmark's finished runs.

A search chooses its single prompt and its ensemble on a few labelled examples (56 to 160). This
benchmark asks how much better it could have chosen among the prompts it actually tried: every
leaderboard trial whose template the run scored on test (the slot distributions are in the disk
cache; nothing is computed again, a template without them is skipped) is scored on the run's test
sample, and set beside what the run picked:

- ``chosen``: the run's best single prompt; ``best_manual``: its best calibrated manual prompt;
- ``ceiling``: the best test accuracy of any scored trial (an oracle: no rule on few-shot scores
  can promise it);
- ``top10_mean``: the mean over the ten best-ranked scored trials (what picking at random among
  near-ties gives);
- ``ensemble``: the run's weighted ensemble; ``ensemble_uniform``: the same members averaged
  with equal weights; ``uniform_top<k>``: the uniform average of the k best-ranked scored trials;
- ``test_chosen_<k>``: an oracle's ensemble: k scored trials picked one at a time, each the one
  that raises the uniform average's test accuracy most (greedy, on the test labels). No rule on
  few-shot scores can promise it; it shows how far apart the prompts the search tried are.

Writes ``results/benchmarks/selection.json``; needs the runs under ``results/runs/quality`` and
the slot cache they filled (``make bench-quality`` makes both).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np

from autoprompt_search.analysis import BENCHMARK_DATASETS as DATASETS
from autoprompt_search.analysis import BENCHMARK_SEEDS as SEEDS
from autoprompt_search.analysis import FinishedRun, mean_std
from autoprompt_search.ensemble import combine_probabilities
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import RESULTS, RunFolder
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

TOP_K = (5, 10, 20)
ORACLE_SIZES = (3, 5, 9)
FIGURES = ("chosen", "best_manual", "ceiling", "top10_mean", "ensemble", "ensemble_uniform", *(f"uniform_top{k}" for k in TOP_K),
           *(f"test_chosen_{k}" for k in ORACLE_SIZES))


def cached_on_test(trials: FinishedRun, template: Template):
    """The template's prepared test prompts when every chunk's distribution is on disk, else None."""
    prepared = trials.scorer.prepare(template, [e.fields for e in trials.test.examples])
    return prepared if trials.scorer.cached(prepared.prompts) else None


def test_chosen(probabilities: list[np.ndarray], accuracy: Callable[[np.ndarray], float], sizes: tuple[int, ...]) -> dict[int, float]:
    """Greedy forward selection on the test labels: the uniform average's test ``accuracy`` once
    it has each of ``sizes`` members (each trial picked at most once)."""
    total, left, figures = np.zeros_like(probabilities[0]), list(range(len(probabilities))), {}
    while left and len(figures) < len(sizes):
        best = max(left, key=lambda i: accuracy(total + probabilities[i]))  # a sum ranks classes as the average does
        left.remove(best)
        total = total + probabilities[best]
        if len(probabilities) - len(left) in sizes:
            figures[len(probabilities) - len(left)] = accuracy(total)
    return figures


def run_figures(run: Path) -> dict:
    trials = FinishedRun(run)
    scorer = trials.scorer
    by_template: dict[Template, list] = {}
    for result in trials.board:
        by_template.setdefault(result.template, []).append(result)
    test: dict[int, np.ndarray] = {}  # trial number -> calibrated class probabilities on test
    for template, results in by_template.items():
        prepared = cached_on_test(trials, template)
        if prepared is None:
            continue
        # Each trial with the calibration it fitted on train+dev, as the run applies it to test.
        variants = [(Verbalizer.parse(r.verbalizer, trials.test.labels), r.calibration) for r in results]
        for result, score in zip(results, scorer.score_variants(prepared, variants, trials.gold)):
            test[result.number] = score.probabilities
    gold = np.asarray(trials.gold)

    def accuracy(probabilities: np.ndarray) -> float:
        return float((probabilities.argmax(axis=1) == gold).mean())

    ranked = [r for r in trials.board if r.number in test]  # the study's order
    reported = trials.results()
    members = [m["trial"] for m in reported["ensemble"]["members"]]
    manual = next((r for r in trials.board if r.manual and r.calibration.method != "none"), None)
    oracle = test_chosen([test[r.number] for r in ranked], accuracy, ORACLE_SIZES)
    figures = {
        "chosen": accuracy(test[trials.board[0].number]) if trials.board[0].number in test else None,
        "best_manual": accuracy(test[manual.number]) if manual is not None and manual.number in test else None,
        "ceiling": max(accuracy(test[r.number]) for r in ranked),
        "top10_mean": float(np.mean([accuracy(test[r.number]) for r in ranked[:10]])),
        "ensemble": reported["ensemble"]["test"]["accuracy"],
        "ensemble_uniform": accuracy(combine_probabilities([test[n] for n in members], [1.0] * len(members)))
        if all(n in test for n in members) else None,
        **{f"uniform_top{k}": accuracy(combine_probabilities([test[r.number] for r in ranked[:k]], [1.0] * len(ranked[:k])))
           for k in TOP_K},
        **{f"test_chosen_{k}": oracle.get(k) for k in ORACLE_SIZES},
    }
    return {"run": str(run), "trials": len(trials.board), "scored_on_test": len(ranked), "test_n": len(gold), **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="run names: <runs>/<name>-seed<seed> (mr_fluent reads that space's runs)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--runs", default="results/runs/quality")
    parser.add_argument("--out", default="results/benchmarks/selection.json")
    args = parser.parse_args()
    report: dict = {"datasets": {}}
    for dataset in args.datasets.split(","):
        runs = [Path(args.runs) / f"{dataset}-seed{seed}" for seed in args.seeds.split(",")]
        per_seed = [run_figures(run) for run in runs if RunFolder(run).file(RESULTS).exists()]
        if not per_seed:
            continue
        report["datasets"][dataset] = {"per_seed": per_seed, "summary": {
            name: mean_std([row[name] for row in per_seed if row[name] is not None]) for name in FIGURES}}
        print(dataset, "  ".join(f"{name} {report['datasets'][dataset]['summary'][name]['mean']:.3f}" for name in FIGURES
                                 if report["datasets"][dataset]["summary"][name]["mean"] is not None), flush=True)
    atomic_write_json(Path(args.out), {**report, "provenance": stamp()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
