"""The slot cache's 16-bit codes against the float32 entries they replace, on finished runs.

Each run of ``--runs`` (the quality benchmark's MR runs by default, made when the cache held
float32) wrote its test predictions and class probabilities (``test_predictions.csv``). Its
``best.json`` and ``ensemble.json`` are loaded as predictors by the current code, which reads
every slot distribution through the cache's codes (an entry the float32 format wrote is recoded
on reading; a missing one is computed and coded), and predict the same test texts again.

Figures per run: predictions that changed, test accuracy before and after, the largest change of
a class probability; and the cache's bytes per 1,000 prompts in each format, measured on the
entries in the folder before and after the runs. Writes ``results/benchmarks/cache_format.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import autoprompt_search
from autoprompt_search.analysis import BENCHMARK_SEEDS as SEEDS
from autoprompt_search.cache import CODE_ERROR, CODED_SUFFIX, SlotCache, default_cache_dir
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp


def bytes_per_thousand(cache: SlotCache) -> dict[str, Any]:
    """Per format: entries, their bytes and rows (prompts), and bytes per 1,000 prompts."""
    totals: dict[str, dict[str, float]] = {}
    for entry in cache.entries():
        kind = "codes (uint16)" if entry.path.name.endswith(CODED_SUFFIX) else "float32"
        rows = np.load(entry.path, mmap_mode="r", allow_pickle=False).shape[0]
        found = totals.setdefault(kind, {"entries": 0, "bytes": 0, "prompts": 0})
        found["entries"] += 1
        found["bytes"] += entry.size
        found["prompts"] += rows
    return {kind: {**found, "bytes_per_1000_prompts": found["bytes"] / found["prompts"] * 1000} for kind, found in totals.items()}


def compare(run: Path) -> dict[str, Any]:
    with open(run / "test_predictions.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    texts, gold = [row["text"] for row in rows], np.array([row["gold"] for row in rows])
    out: dict[str, Any] = {"n": len(rows)}
    for name, file in (("best", "best.json"), ("ensemble", "ensemble.json")):
        predictor = autoprompt_search.load(run / file)
        labels = list(predictor.classes_)
        before_p = np.array([[float(row[f"{name}_p_{label}"]) for label in labels] for row in rows])
        before = np.array([row[name] for row in rows])
        after_p = np.asarray(predictor.predict_proba(texts))
        after = np.array(labels)[after_p.argmax(axis=1)]
        changed = np.flatnonzero(before != after)
        out[name] = {"changed_predictions": len(changed), "test_accuracy_float32": float((before == gold).mean()),
                     "changed_rows": [{"test_row": int(row), "gold": str(gold[row]), "float32": before_p[row].tolist(),
                                       "codes": after_p[row].tolist()} for row in changed],
                     "test_accuracy_codes": float((after == gold).mean()),
                     "largest_probability_change": float(np.abs(after_p - before_p).max()),
                     "note": "float32 probabilities as written to test_predictions.csv, 6 decimals"}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="results/runs/quality_v2")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--out", default="results/benchmarks/cache_format.json")
    args = parser.parse_args()
    cache = SlotCache(default_cache_dir())
    earlier = json.loads(Path(args.out).read_text(encoding="utf-8")) if Path(args.out).is_file() else {}
    # A second call keeps the first one's runs (those named now are measured again) and its view of the cache before.
    report: dict[str, Any] = {"code_error": CODE_ERROR, "cache_before": earlier.get("cache_before") or bytes_per_thousand(cache),
                              "runs": earlier.get("runs", {})}
    for seed in (int(s) for s in args.seeds.split(",")):
        run = Path(args.runs) / f"{args.dataset}-seed{seed}"
        report["runs"][run.name] = compare(run)
        print(run.name, json.dumps(report["runs"][run.name]), flush=True)
    report["cache_after"] = bytes_per_thousand(cache)
    runs = report["runs"].values()
    report["total"] = {name: {"changed_predictions": sum(r[name]["changed_predictions"] for r in runs),
                              "predictions": sum(r["n"] for r in runs),
                              "accuracy_changes": sum(r[name]["test_accuracy_codes"] != r[name]["test_accuracy_float32"] for r in runs),
                              "largest_probability_change": max(r[name]["largest_probability_change"] for r in runs)}
                       for name in ("best", "ensemble")}
    report["provenance"] = stamp()
    atomic_write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("cache_before", "cache_after", "total")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
