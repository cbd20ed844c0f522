"""The same prompts scored in bfloat16 and in float32: finished runs' best prompt and ensemble
(searched and scored in float32) scored again on their own test examples with ``--precision
bfloat16``, against the float32 predictions the runs recorded (``test_predictions.csv``).

This isolates the numerical effect of bfloat16 from its effect on which prompts a search picks
(a search in bfloat16 is measured by ``bench_quality.py --precision bfloat16``). Speed is not
measured here: the slot cache may hold some of the distributions.
Writes ``results/benchmarks/precision.json``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import numpy as np

import autoprompt_search
from autoprompt_search.backends import load_backend
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp

PROMPTS = ("best", "ensemble")


def compare(run: Path, backend) -> dict:
    with (run / "test_predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    texts, gold = [row["text"] for row in rows], [row["gold"] for row in rows]
    figures = {}
    for name in PROMPTS:
        predictor = autoprompt_search.load(run / f"{name}.json", model=backend, strict=False)  # the file says float32
        probabilities = predictor.predict_proba(texts)
        labels = predictor.classes_
        recorded = np.array([[float(row[f"{name}_p_{label}"]) for label in labels] for row in rows])
        predicted = [labels[i] for i in probabilities.argmax(1)]
        figures[name] = {
            "float32_accuracy": float(np.mean([row[name] == g for row, g in zip(rows, gold)])),
            "bfloat16_accuracy": float(np.mean([p == g for p, g in zip(predicted, gold)])),
            "agreement": float(np.mean([p == row[name] for p, row in zip(predicted, rows)])),
            "max_abs_probability_difference": float(np.abs(probabilities - recorded).max()),
            "mean_abs_probability_difference": float(np.abs(probabilities - recorded).mean()),
        }
    return {"run": str(run), "n": len(rows), **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="finished run folders searched in float32")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="results/benchmarks/precision.json")
    args = parser.parse_args()
    backend = load_backend(args.model, device="cpu", precision="bfloat16")
    per_run = []
    for run in map(Path, args.runs):
        per_run.append(compare(run, backend))
        print(per_run[-1], flush=True)
    summary = {name: {key: statistics.mean(r[name][key] for r in per_run)
                      for key in ("float32_accuracy", "bfloat16_accuracy", "agreement", "mean_abs_probability_difference")}
               | {"max_abs_probability_difference": max(r[name]["max_abs_probability_difference"] for r in per_run)}
               for name in PROMPTS}
    atomic_write_json(args.out, {"description": __doc__.split("\n\n")[0], "model": args.model, "runs": per_run,
                                 "mean_over_runs": summary, "provenance": stamp()})
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
