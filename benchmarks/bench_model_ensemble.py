"""Ensembles of models on the quality benchmark's runs: for each seed, the ensembles of two models'
finished searches (``bench_quality.py`` runs, one folder of runs per model, on the same few-shot
samples and 1,000 test sentences) combined with :func:`autoprompt_search.model_ensemble.combine_runs`,
exactly as ``autoprompt-search search --models`` does after its searches.

Per seed: each model's own ensemble and the ensemble of models on test (held out from every
choice), and the fitted weights; over seeds: mean and sd, and the seeds on which the ensemble of
models beats the better of the two models' ensembles. Writes ``results/benchmarks/model_ensemble_<dataset>.json``
and copies each combination's results.json beside it (``model_ensemble_<dataset>_runs/``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.model_ensemble import combine_runs
from autoprompt_search.provenance import machine, stamp
from autoprompt_search.run_folder import RESULTS

SEEDS = (13, 21, 42, 87, 100)


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="one folder of bench_quality runs per model (holding <dataset>-seed<seed>/)")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--combined", default="results/runs/model-ensemble", help="where the combinations are written")
    parser.add_argument("--out", help="default: results/benchmarks/model_ensemble_<dataset>.json")
    args = parser.parse_args()
    out = Path(args.out or f"results/benchmarks/model_ensemble_{args.dataset}.json")
    copies = out.with_name(out.stem + "_runs")
    rows = []
    for seed in map(int, args.seeds.split(",")):
        name = f"{args.dataset}-seed{seed}"
        combined = combine_runs([Path(folder) / name for folder in args.runs], Path(args.combined) / name, device="cpu",
                                replace=True)
        summary = combined.summary
        parts = [{"model": part["model"].get("name", part["run"]), "run": part["run"], "weight": part["weight"],
                  "ensemble_test_accuracy": part["test"]["accuracy"]} for part in summary["parts"]]
        rows.append({"seed": seed, "parts": parts, "models_ensemble_test_accuracy": combined.test_accuracy,
                     "models_ensemble_train_dev_accuracy": summary["ensemble"]["train_dev"]["accuracy"],
                     "penalty": summary["ensemble"]["weights_fit"]["penalty"], "test_n": summary["ensemble"]["test"]["n"]})
        print(f"seed {seed}: " + ", ".join(f"{p['model']} {p['ensemble_test_accuracy']:.4f} (w {p['weight']:.2f})" for p in parts)
              + f" -> ensemble of models {combined.test_accuracy:.4f}", flush=True)
        (copies / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(combined.path / RESULTS, copies / name / RESULTS)
    models = [part["model"] for part in rows[0]["parts"]]
    best_part = [max(p["ensemble_test_accuracy"] for p in row["parts"]) for row in rows]
    combined_accuracy = [row["models_ensemble_test_accuracy"] for row in rows]
    summary = {
        "dataset": args.dataset, "models": models, "seeds": [row["seed"] for row in rows],
        "per_model_ensemble_test_accuracy": {m: _mean_sd([row["parts"][i]["ensemble_test_accuracy"] for row in rows])
                                             for i, m in enumerate(models)},
        "models_ensemble_test_accuracy": _mean_sd(combined_accuracy),
        "seeds_above_the_better_model": sum(c > b for c, b in zip(combined_accuracy, best_part)),
        "seeds_below_the_better_model": sum(c < b for c, b in zip(combined_accuracy, best_part)),
        "goal": "issue 18: mean test accuracy of 0.86 or more with frozen models",
    }
    host = machine()
    atomic_write_json(out, {"summary": summary, "per_seed": rows, "command": sys.argv,
                            "machine": f"{host['cpu_count']}-core {host['processor']} CPU, accelerator {host['accelerator']}",
                            "provenance": stamp()})
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
