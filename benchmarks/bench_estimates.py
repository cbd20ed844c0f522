"""Held-out label words and held-out estimates, measured on the quality benchmark's runs.

Reads two sets of run records written by ``bench_quality.py`` (the runs' ``manifest.json`` and
``results.json``), the same datasets, seeds and test samples:

- ``--before``: runs made before the change (label words ordered by the likelihood ratio, no
  held-out estimate), ``results/benchmarks/quality_runs`` by default;
- ``--after``: runs of the current code, ``results/benchmarks/quality_heldout_words_runs``.

Figures, per dataset and over all runs:

- test accuracy of the chosen single prompt and of the ensemble, before and after, paired per seed
  (mean and standard deviation of the difference);
- how far each reported figure is from test: mean |train+dev - test| (what the leaderboard showed
  before) against mean |held-out estimate - test|, and how often test falls inside the estimate's
  95% interval; how many runs say their interval includes chance;
- the label words each run generated.

Writes ``results/benchmarks/estimates.json`` and ``results/benchmarks/estimates.md``. Runs nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from autoprompt_search.analysis import BENCHMARK_DATASETS as DATASETS
from autoprompt_search.analysis import BENCHMARK_SEEDS as SEEDS
from autoprompt_search.analysis import mean_std
from autoprompt_search.fileio import atomic_write_json, atomic_write_text
from autoprompt_search.provenance import stamp


def read(records: Path, dataset: str, seed: int) -> dict[str, Any] | None:
    folder = records / f"{dataset}-seed{seed}"
    if not (folder / "results.json").is_file():
        return None
    return {"results": json.loads((folder / "results.json").read_text()), "manifest": json.loads((folder / "manifest.json").read_text())}


def label_words(manifest: dict[str, Any]) -> dict[str, list[str]] | None:
    record = (manifest.get("pools") or {}).get("label_words")
    return None if record is None else {label: [w["word"] for w in words] for label, words in record["words"].items()}


def spread(values: list[float]) -> dict[str, Any] | None:
    """Mean and sample standard deviation (None without values)."""
    return mean_std(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="results/benchmarks/quality_runs")
    parser.add_argument("--after", default="results/benchmarks/quality_heldout_words_runs")
    parser.add_argument("--out", default="results/benchmarks/estimates.json")
    args = parser.parse_args()
    before_dir, after_dir = Path(args.before), Path(args.after)
    per_dataset: dict[str, Any] = {}
    errors: dict[str, list[float]] = {"best_train_dev": [], "best_estimate": [], "ensemble_train_dev": [], "ensemble_estimate": []}
    inside: dict[str, list[bool]] = {"best": [], "ensemble": []}
    chance_runs = []
    for dataset in DATASETS:
        rows = {}
        for seed in SEEDS:
            before, after = read(before_dir, dataset, seed), read(after_dir, dataset, seed)
            if after is None:
                continue
            row: dict[str, Any] = {"label_words_after": label_words(after["manifest"]),
                                   "label_words_before": label_words(before["manifest"]) if before else None}
            for choice in ("best", "ensemble"):
                entry = after["results"][choice]
                test, train_dev, estimate = entry["test"]["accuracy"], entry["train_dev"]["accuracy"], entry["estimate"]
                row[choice] = {"test_before": before["results"][choice]["test"]["accuracy"] if before else None, "test_after": test,
                               "train_dev": train_dev, "estimate": estimate}
                errors[f"{choice}_train_dev"].append(abs(train_dev - test))
                if estimate.get("accuracy") is not None:
                    errors[f"{choice}_estimate"].append(abs(estimate["accuracy"] - test))
                    inside[choice].append(estimate["interval"][0] <= test <= estimate["interval"][1])
                    if estimate["includes_chance"]:
                        chance_runs.append(f"{dataset} seed {seed} {choice}")
            rows[str(seed)] = row
        if not rows:
            continue
        def paired(choice: str) -> list[dict[str, Any]]:
            return [r[choice] for r in rows.values() if r[choice]["test_before"] is not None]

        per_dataset[dataset] = {
            "per_seed": rows,
            "summary": {choice: {"test_before": spread([r["test_before"] for r in paired(choice)]),
                                 "test_after": spread([r[choice]["test_after"] for r in rows.values()]),
                                 "paired_difference": spread([r["test_after"] - r["test_before"] for r in paired(choice)]),
                                 "train_dev": spread([r[choice]["train_dev"] for r in rows.values()]),
                                 "estimate": spread([r[choice]["estimate"]["accuracy"] for r in rows.values()
                                                     if r[choice]["estimate"].get("accuracy") is not None])}
                        for choice in ("best", "ensemble")},
        }
    figures = {
        "benchmark": "held-out label words and held-out estimates",
        "before": str(before_dir), "after": str(after_dir),
        "datasets": per_dataset,
        "mean_absolute_error_against_test": {name: spread(values) for name, values in errors.items()},
        "test_inside_the_95_percent_interval": {choice: (sum(hits) / len(hits) if hits else None) for choice, hits in inside.items()},
        "runs_whose_interval_includes_chance": chance_runs,
        "machine_note": "reads run records; the runs' own manifests name the machine and timings",
        "provenance": stamp(),
    }
    atomic_write_json(Path(args.out), figures)
    atomic_write_text(Path(args.out).with_suffix(".md"), table(figures))
    print(table(figures))
    return 0


def table(figures: dict[str, Any]) -> str:
    def cell(value: dict[str, float] | None) -> str:
        return "–" if not value else f"{value['mean']:.3f} ± {value['std']:.3f} ({len(value['per_seed'])})"

    lines = ["| dataset | choice | test before | test after | paired after - before | train+dev | held-out estimate |",
             "|---|---|---|---|---|---|---|"]
    for dataset, entry in figures["datasets"].items():
        for choice, summary in entry["summary"].items():
            lines.append(f"| {dataset} | {choice} | {cell(summary['test_before'])} | {cell(summary['test_after'])} | "
                         f"{cell(summary['paired_difference'])} | {cell(summary['train_dev'])} | {cell(summary['estimate'])} |")
    errors = figures["mean_absolute_error_against_test"]
    lines += ["", "| figure shown | mean abs. error against test (best) | (ensemble) |", "|---|---|---|",
              f"| train+dev accuracy | {cell(errors['best_train_dev'])} | {cell(errors['ensemble_train_dev'])} |",
              f"| held-out estimate | {cell(errors['best_estimate'])} | {cell(errors['ensemble_estimate'])} |"]
    coverage = figures["test_inside_the_95_percent_interval"]
    lines += ["", f"Test inside the 95% interval: best {coverage['best']}, ensemble {coverage['ensemble']}. "
              f"Runs whose interval includes chance: {len(figures['runs_whose_interval_includes_chance'])}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
