"""Whether two run folders of the same search agree: every trial (trials.csv less its timing
column), the best prompt, the best manual prompt and the ensemble with their scores (results.json),
the exported prompts (best.json, ensemble.json, less their provenance) and the per-example test
predictions. For checking that a change of the code left a search's behaviour as it was.

    python benchmarks/compare_runs.py BEFORE_RUN AFTER_RUN --out results/benchmarks/identity_<name>.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import BEST, ENSEMBLE, PREDICTIONS, TRIAL_COLUMNS, TRIALS, RunFolder

COMPARED_EXPORT_KEYS_IGNORED = ("provenance",)  # when and where each file was written


def differing_keys(before: dict[str, Any], after: dict[str, Any], path: str = "") -> list[str]:
    """The dotted paths at which two JSON documents differ."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [] if before == after else [path or "(root)"]
    keys = sorted(set(before) | set(after))
    return [found for key in keys for found in differing_keys(before.get(key), after.get(key), f"{path}.{key}" if path else key)]


def compare(before: RunFolder, after: RunFolder) -> dict[str, Any]:
    columns = [c for c in TRIAL_COLUMNS if c != "seconds"]
    trials = [[[row.get(c) for c in columns] for row in folder.read_csv(TRIALS, columns)] for folder in (before, after)]
    results = before.results(), after.results()
    report: dict[str, Any] = {
        "trials": {"before": len(trials[0]), "after": len(trials[1]), "identical_apart_from_seconds": trials[0] == trials[1]},
        "results": {name: {"identical": results[0].get(name) == results[1].get(name),
                           "test_accuracy": [(r.get(name) or {}).get("test", {}).get("accuracy") for r in results]}
                    for name in ("best", "best_manual", "ensemble")},
        "dataset_identical": results[0]["dataset"] == results[1]["dataset"],
        "exports": {},
        "test_predictions_identical": before.file(PREDICTIONS).read_bytes() == after.file(PREDICTIONS).read_bytes(),
    }
    for name in (BEST, ENSEMBLE):
        documents = [{k: v for k, v in folder.read_json(name).items() if k not in COMPARED_EXPORT_KEYS_IGNORED}
                     for folder in (before, after)]
        report["exports"][name] = {"differs_at": differing_keys(*documents)}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--note", default="", help="what was compared (revisions, how each run was made)")
    parser.add_argument("--out", help="write the comparison as JSON here")
    args = parser.parse_args()
    report = {"before": args.before, "after": args.after, "note": args.note,
              **compare(RunFolder(args.before), RunFolder(args.after)), "provenance": stamp()}
    for key in ("trials", "results", "dataset_identical", "exports", "test_predictions_identical"):
        print(f"{key}: {report[key]}")
    if args.out:
        print(f"wrote {atomic_write_json(Path(args.out), report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
