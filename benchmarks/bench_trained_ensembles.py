"""Averages of finished outputs' test probabilities: trained models (``train`` outputs) and frozen
ensembles (search runs, ensembles of models) of the same few-shot seeds and test sample, read from
each output's ``test_predictions.csv`` and averaged with equal weights.

Equal weights because nothing labelled is left to fit them on: a trained output has seen its train
split and chose its epoch on dev. The combinations are named on the command line before any figure
is read (``--combination NAME=PART+PART``), and every part's own test accuracy is reported beside
them. The average is the one ``combine`` computes with uniform weights; this script reads the saved
probabilities instead, so that it also reads outputs whose model weights a benchmark deleted to save disk.

Example (MR, SmolLM2-135M trained with all weights, Gemma-3-270M with LoRA, on the quality runs)::

    python benchmarks/bench_trained_ensembles.py \\
        --part smollm2_full=results/runs/quality/mr-seed{seed}-full \\
        --part gemma_lora=results/runs/quality-gemma3-270m/mr-seed{seed}-lora \\
        --combination trained_pair=smollm2_full+gemma_lora --out results/benchmarks/trained_ensembles_mr.json

Each part's own accuracy is that of its recorded predictions; the averages use the CSV files'
6-significant-digit probabilities.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoprompt_search.analysis import BENCHMARK_SEEDS, mean_std
from autoprompt_search.ensemble import combine_probabilities
from autoprompt_search.errors import UserError
from autoprompt_search.fileio import atomic_write_json, sha256_file
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import PREDICTIONS, RunFolder

TRAINED_MARKER = "training.json"  # a train output: its column is "trained", a run's (or an ensemble of models') "ensemble"
RECORDS = ("training.json", "manifest.json", "results.json")  # where each kind of output records its dataset (seed, splits)


@dataclass(frozen=True)
class Part:
    """One output's test predictions: the texts and gold labels (to check alignment), the predicted
    labels as recorded, the class probabilities ``[n, classes]``, and the seed its few-shot sample came from."""

    texts: list[tuple[str, ...]]
    gold: list[str]
    predicted: list[str]
    probabilities: np.ndarray
    labels: list[str]
    seed: int


def read_part(folder: Path) -> Part:
    column = "trained" if (folder / TRAINED_MARKER).is_file() else "ensemble"
    run = RunFolder(folder)
    record = next((run.read_json(name) for name in RECORDS if (folder / name).is_file()), None)
    if record is None or "seed" not in record.get("dataset", {}):
        raise SystemExit(f"{folder}: no finished output (none of {', '.join(RECORDS)} records its dataset)")
    try:
        rows = run.read_csv(PREDICTIONS, ("test_row", "gold", column))
    except UserError as error:
        raise SystemExit(str(error)) from None
    labels = [name.removeprefix(f"{column}_p_") for name in rows[0] if name.startswith(f"{column}_p_")]
    fields = [name for name in rows[0] if name not in {"test_row", "gold", column} and "_p_" not in name
              and name not in ("best", "ensemble", "trained") and not name.startswith("part")]
    return Part([tuple(row[f] for f in fields) for row in rows], [row["gold"] for row in rows], [row[column] for row in rows],
                np.array([[float(row[f"{column}_p_{label}"]) for label in labels] for row in rows]), labels,
                int(record["dataset"]["seed"]))


def accuracy(predicted: list[str], gold: list[str]) -> float:
    return float(np.mean([p == g for p, g in zip(predicted, gold)]))


def average(probabilities: list[np.ndarray]) -> np.ndarray:
    """The parts' probabilities averaged with equal weights, as ``combine`` does with trained parts."""
    return combine_probabilities(probabilities, [1.0] * len(probabilities))


def named(items: list[str], what: str) -> dict[str, str]:
    """``NAME=VALUE`` arguments as a mapping; a clear exit on a malformed or repeated name."""
    pairs = [item.split("=", 1) for item in items]
    if any(len(pair) != 2 or not all(pair) for pair in pairs):
        raise SystemExit(f"{what}: give NAME=VALUE, got {items}")
    if len({name for name, _ in pairs}) != len(pairs):
        raise SystemExit(f"{what}: a name is given twice in {items}")
    return dict(pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", action="append", required=True, metavar="NAME=FOLDER", help="an output folder, {seed} in its path")
    parser.add_argument("--combination", action="append", required=True, metavar="NAME=PART+PART", help="parts averaged equally")
    parser.add_argument("--seeds", default=",".join(map(str, BENCHMARK_SEEDS)))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    parts = named(args.part, "--part")
    if without := [name for name, pattern in parts.items() if "{seed}" not in pattern]:
        raise SystemExit(f"--part {', '.join(without)}: the folder must contain {{seed}}")
    combinations = {name: members.split("+") for name, members in named(args.combination, "--combination").items()}
    if unknown := {m for members in combinations.values() for m in members} - set(parts):
        raise SystemExit(f"unknown part(s) in --combination: {', '.join(sorted(unknown))}")
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    for seed in seeds:
        read = {name: read_part(Path(pattern.format(seed=seed))) for name, pattern in parts.items()}
        first = next(iter(read.values()))
        for name, part in read.items():
            if part.seed != seed:
                raise SystemExit(f"{parts[name].format(seed=seed)}: an output of few-shot seed {part.seed}, not {seed}")
            if (part.texts, part.gold, part.labels) != (first.texts, first.gold, first.labels):
                raise SystemExit(f"seed {seed}: {name}'s test texts, gold labels or classes differ from the first part's")
        per_seed[seed] = {
            "parts": {name: {"test_accuracy": accuracy(part.predicted, part.gold), "folder": parts[name].format(seed=seed),
                             "predictions_sha256": sha256_file(Path(parts[name].format(seed=seed)) / PREDICTIONS)}
                      for name, part in read.items()},
            "combinations": {name: accuracy([first.labels[i] for i in average([read[m].probabilities for m in members]).argmax(axis=1)],
                                            first.gold) for name, members in combinations.items()},
            "test_examples": len(first.gold)}
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
