"""Averages of finished outputs' test probabilities: trained models (``train`` outputs) and frozen
ensembles (search runs, ensembles of models) of the same few-shot seeds and test sample, read from
each output's ``test_predictions.csv`` and averaged with equal weights.

Equal weights because nothing labelled is left to fit them on: a trained output has seen its train
split and chose its epoch on dev. The combinations are named on the command line before any figure
is read (``--combination NAME=PART+PART``), and every part's own test accuracy is reported beside
them. This is a measurement of a route, not a product feature: ``combine`` takes search runs only.

Example (MR, SmolLM2-135M trained with all weights, Gemma-3-270M with LoRA, on the quality runs)::

    python benchmarks/bench_trained_ensembles.py \\
        --part smollm2_full=results/runs/quality/mr-seed{seed}-full \\
        --part gemma_lora=results/runs/quality-gemma3-270m/mr-seed{seed}-lora \\
        --combination trained_pair=smollm2_full+gemma_lora --out results/benchmarks/trained_ensembles_mr.json

The probabilities are the 6-significant-digit values of the CSV files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from autoprompt_search.analysis import BENCHMARK_SEEDS, mean_std
from autoprompt_search.fileio import atomic_write_json, sha256_file
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import PREDICTIONS, RunFolder

TRAINED_MARKER = "training.json"  # a train output: its column is "trained", a run's (or an ensemble of models') "ensemble"


def read_part(folder: Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """An output's test rows (``test_row``), gold labels, class probabilities ``[n, classes]`` and classes."""
    column = "trained" if (folder / TRAINED_MARKER).is_file() else "ensemble"
    run = RunFolder(folder)
    rows = run.read_csv(PREDICTIONS, ("test_row", "gold", column))
    labels = [name.removeprefix(f"{column}_p_") for name in rows[0] if name.startswith(f"{column}_p_")]
    probabilities = np.array([[float(row[f"{column}_p_{label}"]) for label in labels] for row in rows])
    return [row["test_row"] for row in rows], [row["gold"] for row in rows], probabilities, labels


def accuracy(probabilities: np.ndarray, gold: list[str], labels: list[str]) -> float:
    return float(np.mean([labels[i] == g for i, g in zip(probabilities.argmax(axis=1), gold)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", action="append", required=True, metavar="NAME=FOLDER", help="an output folder, {seed} in its path")
    parser.add_argument("--combination", action="append", required=True, metavar="NAME=PART+PART", help="parts averaged equally")
    parser.add_argument("--seeds", default=",".join(map(str, BENCHMARK_SEEDS)))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    parts = dict(item.split("=", 1) for item in args.part)
    combinations = {name: members.split("+") for name, members in (item.split("=", 1) for item in args.combination)}
    if unknown := {m for members in combinations.values() for m in members} - set(parts):
        raise SystemExit(f"unknown part(s) in --combination: {', '.join(sorted(unknown))}")
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    for seed in seeds:
        read = {name: read_part(Path(pattern.format(seed=seed))) for name, pattern in parts.items()}
        rows, gold, _, labels = next(iter(read.values()))
        for name, (other_rows, other_gold, _, other_labels) in read.items():
            if (other_rows, other_gold, other_labels) != (rows, gold, labels):
                raise SystemExit(f"seed {seed}: {name}'s test rows, gold labels or classes differ from the first part's")
        per_seed[seed] = {
            "parts": {name: {"test_accuracy": accuracy(p, gold, labels), "folder": parts[name].format(seed=seed),
                             "predictions_sha256": sha256_file(Path(parts[name].format(seed=seed)) / PREDICTIONS)}
                      for name, (_, _, p, _) in read.items()},
            "combinations": {name: accuracy(np.mean([read[m][2] for m in members], axis=0), gold, labels)
                             for name, members in combinations.items()},
            "test_examples": len(gold)}
        print(seed, {name: round(v, 3) for name, v in per_seed[seed]["combinations"].items()}, flush=True)
    summary = {
        "parts": {name: mean_std([s["parts"][name]["test_accuracy"] for s in per_seed.values()]) for name in parts},
        "combinations": {name: {**mean_std([s["combinations"][name] for s in per_seed.values()]), "members": members,
                                "seeds_above_every_member": sum(
                                    s["combinations"][name] > max(s["parts"][m]["test_accuracy"] for m in members)
                                    for s in per_seed.values())}
                         for name, members in combinations.items()}}
    atomic_write_json(Path(args.out), {"benchmark": "trained_ensembles", "seeds": seeds, "weights": "equal", **summary,
                                       "per_seed": per_seed, "provenance": stamp()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
