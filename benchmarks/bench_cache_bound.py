"""The slot cache's bounds over a long job: the cache folder's size and the disk's free space, sampled
while a command runs, against the cap and the floor its processes read.

    python benchmarks/bench_cache_bound.py --out results/benchmarks/cache_bound.json -- make bench-quality

The command runs with the environment as given, so its processes read the same cap and floor
(``$AUTOPROMPT_SEARCH_CACHE_MAX`` / ``_MIN_FREE`` or the defaults) and the same cache folder as this
script. Every ``--interval`` seconds one sample (the folder's size, counted as ``cache info`` counts
it; the free space of its disk) is appended to ``<out>.samples.jsonl``; the command's output goes to
``<out>.log`` (not kept in git: progress bars make it large), which is read for the cache's warning
when the command ends. The JSON summarises every sample: the largest size against the cap, the smallest free
space against the floor, the size at the end, and whether the job said the cache stopped writing.

A job longer than one sitting (``make bench-quality`` reads its finished runs back) is measured in
parts: ``--append`` continues the record of an earlier call, each call listed with its command,
exit code and wall time. The cap is the cache's own promise; the floor is a promise about the
cache's writes only (the runs, models and logs of the job take disk space too), so the free space
is reported beside whether the cache ever had to stop.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autoprompt_search.cache import SlotCache, default_cache_dir
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp

STOPPED = "stopped writing"  # in the cache's one warning when the floor stops its writes


def sample(cache: SlotCache) -> dict[str, Any]:
    entries = cache.entries()
    folder = cache.directory if cache.directory.exists() else cache.directory.parent
    return {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cache_bytes": sum(e.size for e in entries),
            "entries": len(entries), "disk_free_bytes": shutil.disk_usage(folder).free}


def run_sampled(command: list[str], cache: SlotCache, samples: Path, log: Path, interval: float) -> dict[str, Any]:
    """Run ``command``, appending a sample before it, every ``interval`` seconds and after it."""
    began, taken = time.perf_counter(), 0
    log_start = log.stat().st_size if log.exists() else 0
    with open(samples, "a", encoding="utf-8") as record, open(log, "a", encoding="utf-8") as output:
        def take() -> None:
            nonlocal taken
            record.write(json.dumps(sample(cache)) + "\n")
            record.flush()
            taken += 1

        take()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        while process.poll() is None:
            time.sleep(interval)
            take()
        take()
    with open(log, encoding="utf-8", errors="replace") as output:
        output.seek(log_start)
        stopped = any(STOPPED in line for line in output)
    return {"command": command, "exit_code": process.returncode, "wall_seconds": time.perf_counter() - began, "samples": taken,
            "cap_bytes": cache.max_bytes, "floor_bytes": cache.min_free_bytes, "cache_stopped_writing": stopped}


def summary(rows: list[dict[str, Any]], cache: SlotCache, calls: list[dict[str, Any]]) -> dict[str, Any]:
    largest = max(rows, key=lambda row: row["cache_bytes"])
    lowest = min(rows, key=lambda row: row["disk_free_bytes"])
    return {"cap_bytes": cache.max_bytes, "floor_bytes": cache.min_free_bytes, "samples": len(rows),
            "largest_cache_bytes": largest["cache_bytes"], "largest_at": largest["time"],
            "within_cap": largest["cache_bytes"] <= cache.max_bytes,
            "lowest_disk_free_bytes": lowest["disk_free_bytes"], "lowest_at": lowest["time"],
            "disk_free_above_floor": lowest["disk_free_bytes"] >= cache.min_free_bytes,
            "cache_stopped_writing": any(call["cache_stopped_writing"] for call in calls),
            "cache_bytes_at_end": rows[-1]["cache_bytes"], "entries_at_end": rows[-1]["entries"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--append", action="store_true", help="continue the record of an earlier call")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the job, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("give the job to run after --, e.g. -- make bench-quality")
    out = Path(args.out)
    samples, log = out.with_suffix(".samples.jsonl"), out.with_suffix(".log")
    earlier = json.loads(out.read_text())["calls"] if args.append and out.is_file() else []
    if not args.append:
        for path in (samples, log):
            path.unlink(missing_ok=True)
    cache = SlotCache(default_cache_dir())  # the cap, floor and folder the job's processes read
    calls = [*earlier, {**run_sampled(command, cache, samples, log, args.interval), "provenance": stamp()}]
    rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines() if line.strip()]
    result = {"benchmark": "cache_bound", "cache_folder": str(cache.directory),
              **summary(rows, cache, calls), "calls": calls,
              "samples_file": samples.name, "log_file": log.name}
    atomic_write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "calls"}, indent=1))
    return calls[-1]["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
