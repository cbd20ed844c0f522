"""The slot cache's bounds over a long job: the cache folder's size and the disk's free space, sampled
while a command runs, against the cap and the floor its processes read.

    python benchmarks/bench_cache_bound.py --out results/benchmarks/cache_bound.json -- make bench-quality

The command runs with the environment as given, so its processes read the same cap and floor
(``$AUTOPROMPT_SEARCH_CACHE_MAX`` / ``_MIN_FREE`` or the defaults) and the same cache folder as this
script. Every ``--interval`` seconds one sample (the folder's entries, counted as ``cache info``
counts them, and every file in it, writes in progress included; the free space of its disk) is
appended to ``<out>.samples.jsonl``; the command's output goes to
``<out>.log`` (not kept in git: progress bars make it large), which is read for the cache's warning
when the command ends. The JSON summarises every sample: the largest size against the cap, the smallest free
space against the floor, the size at the end, and whether the job said the cache stopped writing.

A job longer than one sitting (``make bench-quality`` reads its finished runs back) is measured in
parts: ``--append`` continues the record of an earlier call (with the same cache folder, cap and
floor), each call listed with its command, exit code and wall time; a call cut off (Ctrl-C, the end
of a sitting) stops its job and is recorded as interrupted. The cap is the cache's own promise; the floor is a promise about the
cache's writes only (the runs, models and logs of the job take disk space too), so the free space
is reported beside whether the cache ever had to stop.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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


def folder_bytes(folder: Path) -> int:
    """Every file under ``folder``, walked independently of the cache's own listing (entries and
    partial writes, and anything else that was left there)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # evicted or renamed meanwhile
                pass
    return total


def sample(cache: SlotCache) -> dict[str, Any]:
    entries = cache.entries()
    existing = next(folder for folder in (cache.directory, *cache.directory.parents) if folder.exists())
    return {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cache_bytes": sum(e.size for e in entries),
            "entries": len(entries), "folder_bytes": folder_bytes(cache.directory), "disk_free_bytes": shutil.disk_usage(existing).free}


def run_sampled(command: list[str], cache: SlotCache, samples: Path, log: Path, interval: float) -> dict[str, Any]:
    """Run ``command``, appending a sample when it starts, every ``interval`` seconds and when it
    ends; a monitor cut off stops the job and records the call as interrupted."""
    began, taken, interrupted = time.perf_counter(), 0, False
    log_start = log.stat().st_size if log.exists() else 0
    with open(samples, "a", encoding="utf-8") as record, open(log, "a", encoding="utf-8") as output:
        def take() -> None:
            nonlocal taken
            record.write(json.dumps(sample(cache)) + "\n")
            record.flush()
            taken += 1

        try:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:
            raise SystemExit(f"cannot start {command[0]!r}: {error}") from None
        take()
        try:
            while True:
                try:
                    process.wait(timeout=interval)
                    break
                except subprocess.TimeoutExpired:
                    take()
        except KeyboardInterrupt:
            interrupted = True
            os.killpg(process.pid, signal.SIGTERM)  # the job's own children (make's, a benchmark's) too
            process.wait()
        take()
    with open(log, encoding="utf-8", errors="replace") as output:
        output.seek(log_start)
        stopped = any(STOPPED in line for line in output)
    code = process.returncode
    return {"command": command, "exit_code": code if code >= 0 else 128 - code, "interrupted": interrupted,
            "wall_seconds": time.perf_counter() - began, "samples": taken, "cache_folder": str(cache.directory),
            "cap_bytes": cache.max_bytes, "floor_bytes": cache.min_free_bytes, "cache_stopped_writing": stopped}


def summary(rows: list[dict[str, Any]], cache: SlotCache, calls: list[dict[str, Any]]) -> dict[str, Any]:
    largest = max(rows, key=lambda row: row["cache_bytes"])
    lowest = min(rows, key=lambda row: row["disk_free_bytes"])
    return {"cap_bytes": cache.max_bytes, "floor_bytes": cache.min_free_bytes, "samples": len(rows),
            "largest_cache_bytes": largest["cache_bytes"], "largest_at": largest["time"],
            "largest_folder_bytes": max(row.get("folder_bytes", row["cache_bytes"]) for row in rows),
            "within_cap": max(row.get("folder_bytes", row["cache_bytes"]) for row in rows) <= cache.max_bytes,
            "lowest_disk_free_bytes": lowest["disk_free_bytes"], "lowest_at": lowest["time"],
            "disk_free_above_floor": lowest["disk_free_bytes"] >= cache.min_free_bytes,
            "cache_stopped_writing": any(call["cache_stopped_writing"] for call in calls),
            "cache_bytes_at_end": rows[-1]["cache_bytes"], "entries_at_end": rows[-1]["entries"]}


def stop_on_terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the end of a sitting: stop the job and keep the record, as on Ctrl-C


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
    if not args.interval > 0:
        raise SystemExit(f"--interval: a number of seconds above 0, got {args.interval}")
    out = Path(args.out)
    samples, log = out.with_suffix(".samples.jsonl"), out.with_suffix(".log")
    cache = SlotCache(default_cache_dir())  # the cap, floor and folder the job's processes read
    earlier = json.loads(out.read_text())["calls"] if args.append and out.is_file() else []
    bounds = {"cache_folder": str(cache.directory), "cap_bytes": cache.max_bytes, "floor_bytes": cache.min_free_bytes}
    if changed := [key for key, value in bounds.items() for call in earlier[-1:] if call.get(key) != value]:
        raise SystemExit(f"--append: the earlier calls had another {', '.join(changed)}: measure in a new --out")
    if not args.append:
        for path in (out, samples, log):
            path.unlink(missing_ok=True)
    signal.signal(signal.SIGTERM, stop_on_terminate)
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
