"""The bundled datasets treated as new: the generic starting space against the hand-written one.

For each dataset and seed it runs, or reads back when complete:

- ``generic``: the starting space ``autoprompt-search search --dataset NAME`` builds (generic
  template blocks, the label names as the only seed verbalizer, label words from the model's
  distribution; nothing of the dataset's hand-written space), into ``results/runs/starter/``;
- ``hand-written``: the bundled ``search_spaces/<dataset>.yaml`` at its default budget, the same
  runs as ``make bench-estimates`` (``results/runs/quality_v2/``), run here where missing.

Both score the same held-out test sample (``--test-limit``, 1,000 as in the quality benchmark).
Figures per dataset: test accuracy (and macro-F1) of the chosen single prompt, of the ensemble and
of the best manual prompt, paired per seed; the held-out estimate; wall time; the generic run's
chosen template and words. Writes ``results/benchmarks/starter.json`` and ``starter.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from autoprompt_search.analysis import BENCHMARK_DATASETS as DATASETS
from autoprompt_search.analysis import BENCHMARK_SEEDS as SEEDS
from autoprompt_search.analysis import mean_std, search_seed
from autoprompt_search.fileio import atomic_write_json, atomic_write_text
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import RunFolder
from autoprompt_search.starter import space_for_data

ENTRIES = ("best", "ensemble", "best_manual")


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """What the comparison reads from one run's results.json."""
    row: dict[str, Any] = {"wall_seconds": results.get("wall_seconds") or results["timings"].get("total_seconds")}
    for entry in ENTRIES:
        found = results.get(entry) or {}
        estimate = found.get("estimate") or {}
        row[entry] = None if not found else {
            "test_accuracy": found["test"]["accuracy"], "test_macro_f1": found["test"]["macro_f1"], "test_n": found["test"]["n"],
            "train_dev_accuracy": found["train_dev"]["accuracy"], "estimate": estimate.get("accuracy"),
            "template": found.get("template"), "verbalizer": found.get("verbalizer"), "calibration": found.get("calibration"),
        }
    return row


def summary(rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per entry: mean ± sd of each side's test accuracy and of the paired difference, over the seeds both ran."""
    paired = {seed: row for seed, row in rows.items() if row.get("generic") and row.get("hand_written")}
    for seed, row in paired.items():
        sizes = {side: row[side]["best"]["test_n"] for side in ("generic", "hand_written")}
        if len(set(sizes.values())) != 1:
            raise SystemExit(f"seed {seed}: the two runs scored different test samples {sizes}; rerun one with the same --test-limit")
    out: dict[str, Any] = {"seeds": sorted(paired)}
    for entry in ENTRIES:
        sides = {side: [paired[s][side][entry]["test_accuracy"] for s in sorted(paired) if paired[s][side][entry]]
                 for side in ("generic", "hand_written")}
        if paired and all(len(values) == len(paired) for values in sides.values()):
            out[entry] = {**{side: mean_std(values) for side, values in sides.items()},
                          "generic_minus_hand_written": mean_std([g - h for g, h in zip(sides["generic"], sides["hand_written"])])}
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Test accuracy on {report['test_limit']} held-out examples per seed (SmolLM2-135M, K=16), generic starting space "
             "against the hand-written space; mean ± sd over the seeds both ran.", "",
             "| dataset | seeds | best prompt: generic | hand-written | ensemble: generic | hand-written "
             "| best manual: generic | hand-written |",
             "|---|---|---|---|---|---|---|---|"]
    not_run = []
    for dataset, entry in report["datasets"].items():
        s = entry["summary"]
        if not s["seeds"]:
            not_run.append(dataset)
            continue
        cells = []
        for name in ENTRIES:
            for side in ("generic", "hand_written"):
                figure = s.get(name, {}).get(side)
                spread = f" ± {figure['std']:.3f}" if figure is not None and len(s["seeds"]) > 1 else ""
                cells.append("-" if figure is None else f"{figure['mean']:.3f}{spread}")
        lines.append(f"| {dataset} | {', '.join(map(str, s['seeds']))} | " + " | ".join(cells) + " |")
    if not_run:
        lines += ["", f"Not run (no pair of complete runs): {', '.join(not_run)}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--runs", default="results/runs/starter")
    parser.add_argument("--hand-written-runs", default="results/runs/quality_v2")
    parser.add_argument("--out", default="results/benchmarks/starter.json")
    parser.add_argument("--no-run", action="store_true", help="run no search: read the runs on disk")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = args.datasets.split(",")
    runs, hand_runs = Path(args.runs), Path(args.hand_written_runs)
    for seed in [] if args.no_run else seeds:  # every dataset's first seed before any second seed
        for dataset in datasets:
            search_seed(space_for_data(dataset), seed, runs / f"{dataset}-seed{seed}", test_limit=args.test_limit)
            search_seed(Path(f"search_spaces/{dataset}.yaml"), seed, hand_runs / f"{dataset}-seed{seed}", test_limit=args.test_limit)
    report: dict[str, Any] = {"test_limit": args.test_limit, "datasets": {}}
    for dataset in datasets:
        rows: dict[int, dict[str, Any]] = {}
        for seed in seeds:
            row = {}
            for side, folder in (("generic", runs), ("hand_written", hand_runs)):
                run = RunFolder(folder / f"{dataset}-seed{seed}")
                row[side] = figures(run.results()) if run.is_complete() else None
            rows[seed] = row
        report["datasets"][dataset] = {"per_seed": rows, "summary": summary(rows)}
    report["provenance"] = stamp()
    atomic_write_json(args.out, report)
    atomic_write_text(Path(args.out).with_suffix(".md"), markdown(report))
    print(markdown(report))
    print(json.dumps({d: e["summary"] for d, e in report["datasets"].items()}, indent=1)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
