"""The README's main job (`make main`: the MR search, seed 13) timed as a fresh machine runs it: the
fetched assets are linked into a temporary cache root whose slot cache is empty, and the search runs
in its own process, with the extra search options given after ``--``.

Each call adds one labelled entry (wall time, the run's own time split, peak memory, test figures,
the slot cache's size at the end) to ``results/benchmarks/main_job.json``; the temporary cache and
run folder are removed afterwards. Time one entry at a time, with nothing else running.

    python benchmarks/bench_main_job.py --label bfloat16 -- --precision bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoprompt_search.assets import cache_root
from autoprompt_search.cache import SlotCache
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp

ASSET_FOLDERS = ("models", "datasets", "hashes", "downloads")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="the entry's name in the JSON file")
    parser.add_argument("--space", default="search_spaces/mr.yaml")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", default="results/benchmarks/main_job.json")
    parser.add_argument("search_options", nargs="*", help="extra options of `autoprompt-search search` (after --)")
    args = parser.parse_args()
    assets = cache_root()
    with tempfile.TemporaryDirectory(prefix="main-job-") as scratch:
        root, run = Path(scratch) / "cache", Path(scratch) / "run"
        root.mkdir()
        for name in ASSET_FOLDERS:
            if (assets / name).exists():
                (root / name).symlink_to(assets / name)
        command = [str(Path(sys.executable).with_name("autoprompt-search")), "search", args.space, "--seed", str(args.seed),
                   "--out", str(run), *args.search_options]
        began = time.perf_counter()
        finished = subprocess.run(command, env={**os.environ, "AUTOPROMPT_SEARCH_CACHE": str(root), "HF_HUB_OFFLINE": "1"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - began
        if finished.returncode != 0:
            raise SystemExit(f"the search failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
        manifest = json.loads((run / "manifest.json").read_text())
        results = json.loads((run / "results.json").read_text())
        entry = {
            "command": " ".join(["autoprompt-search", *command[1:5], *args.search_options]),  # less the temporary --out
            "wall_seconds": round(wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
            "timings": {name: round(seconds, 1) for name, seconds in manifest["timings"].items()},
            "model": manifest["model"], "trials": manifest["trials"], "cache": manifest["cache"],
            "slot_cache_bytes": sum(entry.size for entry in SlotCache(root / "slot_cache").entries()),
            "test_n": results["best"]["test"]["n"],
            "test_accuracy": {name: results[name]["test"]["accuracy"] for name in ("best_manual", "best", "ensemble")
                              if results.get(name)},
            "provenance": stamp(),
        }
    out = Path(args.out)
    document = json.loads(out.read_text()) if out.is_file() else {"description": __doc__.split("\n\n")[0], "runs": {}}
    document["runs"][args.label] = entry
    atomic_write_json(out, document)
    print(json.dumps({args.label: {key: entry[key] for key in ("wall_seconds", "timings", "test_accuracy")}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
