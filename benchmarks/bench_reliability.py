"""Fault tolerance, measured with real signals: workers sharing one study killed at random, and one
process killed at chosen points and resumed.

- ``postgresql``: 4 worker processes on one study in a private PostgreSQL server
  (:mod:`autoprompt_search.postgres_cluster`), started as the README tells users (the first, then
  the others with ``--resume`` on the same ``--out`` and ``--storage``); ``--kills`` SIGKILLs at
  random moments, each to a worker drawn at random (among those scoring a trial at that moment,
  when one is within 3 s), each killed worker started again with ``--resume``.
- ``journal``: the same with a journal file and 4 local processes.
- ``single``: one process, killed ``--kills`` times (during candidate generation, the trials, the
  test pass and the writing of the outputs, once ``best.json`` is written), resumed after each
  kill; its final best prompt and ensemble against an uninterrupted run with the same seed. Its
  data has about 5,000 test sentences, so that the test pass lasts long enough to be killed in.

Counted from the study afterwards: trials finished, failed (cut off by a kill), retried, lost (a
trial finished before a kill and missing or changed after it, or a cut-off trial none of whose
retries, nor any other trial of its prompt, finished), left waiting (retries no worker ran) and
scored twice (two scored trials of one prompt); and whether the run folder's best prompt and
ensemble agree with the study's leaderboard. The records of the trials behind a loss or a double
scoring are kept in the JSON (``suspect_trials``) for the diagnosis.

The model is the tiny random causal LM of :mod:`autoprompt_search.testing` on its tiny dataset: the
figures are counts of trials, not accuracies, and a tiny model keeps trials short enough for many
of them, and many kills, within minutes on a 2-core CPU. Writes ``results/benchmarks/reliability.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.postgres_cluster import PrivatePostgres
from autoprompt_search.provenance import stamp
from autoprompt_search.study import STUDY_NAME, WORKER_ATTR, count_finished, leaderboard, open_storage
from autoprompt_search.testing import build_tiny_causal_lm, write_tiny_dataset, write_tiny_space

ROOT = Path(__file__).resolve().parent.parent
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Worker:
    """One ``autoprompt-search search`` process; its stderr lines are kept as they arrive."""

    def __init__(self, space: Path, out: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "autoprompt_search.cli.main", "search", str(space), "--out", str(out), "--batch-size", "8", *extra]
        self.started = time.time()
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def saw(self, marker: str) -> bool:
        return any(marker in line for line in self.lines)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def finish(self, limit: float = 1800) -> int:
        code = self.process.wait(timeout=limit)
        self.reader.join(timeout=10)
        return code


_opened: dict[str, optuna.Study] = {}


def load(storage: str) -> optuna.Study | None:
    """The study, opened once per storage (every read of its trials goes to the storage)."""
    if storage not in _opened:
        try:
            _opened[storage] = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(storage))
        except Exception:  # not created yet, or (SQLite) being created
            return None
    return _opened[storage]


def finished_snapshot(storage: str) -> dict[int, Any]:
    study = load(storage)
    if study is None:
        return {}
    return {t.number: (t.state.name, t.value, t.params) for t in study.get_trials(deepcopy=False, states=FINISHED)}


def prompt_key(trial: optuna.trial.FrozenTrial) -> str:
    attrs = trial.user_attrs
    return json.dumps([attrs.get("template_text"), attrs.get("verbalizer"), trial.params.get("calibration")], sort_keys=True)


def audit(storage: str, out: Path, snapshots: list[dict[int, Any]]) -> dict[str, Any]:
    """The counts, and whether the run folder agrees with the study."""
    study = load(storage)
    trials = study.get_trials(deepcopy=False)
    final = {t.number: (t.state.name, t.value, t.params) for t in trials if t.state in FINISHED}
    lost_finished = sorted({n for snapshot in snapshots for n, row in snapshot.items() if final.get(n) != row})
    failed = [t for t in trials if t.state == TrialState.FAIL]
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    retry_of = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    done_params = [json.dumps(t.params, sort_keys=True) for t in trials if t.state in FINISHED]

    def ends_finished(trial: optuna.trial.FrozenTrial) -> bool:  # its chain of retries ends in a finished trial
        while trial.state == TrialState.FAIL and trial.number in retry_of:
            trial = retry_of[trial.number]
        return trial.state in FINISHED
    # a cut-off trial is lost unless a retry of it (of a retry...) finished, or its prompt finished in another trial
    abandoned = [t.number for t in failed if not ends_finished(t) and json.dumps(t.params, sort_keys=True) not in done_params]
    scored = [prompt_key(t) for t in trials if t.state == TrialState.COMPLETE and "repeat_of" not in t.user_attrs]
    twice = {key for key in scored if scored.count(key) > 1}
    suspects = set(abandoned) | {t.number for t in trials if t.state == TrialState.COMPLETE and prompt_key(t) in twice
                                 and "repeat_of" not in t.user_attrs}
    suspects |= {t.number for t in trials if t.user_attrs.get("retry_of") in suspects}
    board = leaderboard(study)
    best = json.loads((out / "best.json").read_text())["prompt"]
    ensemble = json.loads((out / "ensemble.json").read_text())
    ranked = {(r.template.source, json.dumps(r.verbalizer, sort_keys=True), r.calibration.method) for r in board}
    members = [(m["prompt"]["template"], json.dumps(m["prompt"]["verbalizer"], sort_keys=True), m["prompt"]["calibration"]["method"])
               for m in ensemble["members"]]
    return {
        "trials_finished": count_finished(trials), "trials_repeated": sum("repeat_of" in t.user_attrs for t in trials),
        "trials_failed": len(failed), "trials_retried": len(retried),
        "trials_still_running": sum(t.state == TrialState.RUNNING for t in trials),
        "trials_left_waiting": sum(t.state == TrialState.WAITING for t in trials),
        "lost": len(lost_finished) + len(abandoned), "lost_finished_trials": lost_finished, "abandoned_cut_off_trials": abandoned,
        "scored_twice": len(scored) - len(set(scored)),
        "best_is_the_leaderboards_top": (best["template"], best["verbalizer"]) == (board[0].template.source, board[0].verbalizer),
        "ensemble_members_in_the_leaderboard": all(m in ranked for m in members),
        "prompt": {"template": best["template"], "verbalizer": best["verbalizer"], "calibration": best["calibration"]["method"]},
        "suspect_trials": [record(t) for t in trials if t.number in suspects],  # what it takes to diagnose a loss or a double
    }


def record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial as the storage holds it, with its times, for the diagnosis of a loss or a double scoring."""
    def when(moment) -> str | None:
        return moment.isoformat() if moment else None
    return {"number": trial.number, "state": trial.state.name, "params": trial.params,
            "user_attrs": {k: v for k, v in trial.user_attrs.items() if k in ("retry_of", "retries", "repeat_of", "manual", "proposal")},
            "system_attrs": {k: v for k, v in trial.system_attrs.items() if k != "fixed_params"},
            "fixed_params": trial.system_attrs.get("fixed_params"), "started": when(trial.datetime_start),
            "completed": when(trial.datetime_complete)}


def running_pid_trial(storage: str, pid: int) -> int | None:
    study = load(storage)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if study else []:
        if (trial.system_attrs.get(WORKER_ATTR) or {}).get("pid") == pid:
            return trial.number
    return None


def shared_workers(space: Path, out: Path, storage: str, workers: int, kills: int, rng: random.Random) -> dict[str, Any]:
    began = time.perf_counter()
    pool = [Worker(space, out, "--storage", storage)]
    while count_finished(load(storage).get_trials(deepcopy=False) if load(storage) else []) < 3:
        if pool[0].process.poll() is not None:
            raise SystemExit(f"the first worker exited: {pool[0].lines[-20:]}")
        time.sleep(0.2)
    pool += [Worker(space, out, "--storage", storage, "--resume") for _ in range(workers - 1)]
    snapshots, events, exit_codes = [], [], []
    for _ in range(kills):
        time.sleep(rng.uniform(1.0, 6.0))
        alive = [w for w in pool if w.process.poll() is None]
        if not alive:
            break
        snapshots.append(finished_snapshot(storage))  # before the kill: every trial finished by then must survive it
        victim, cut_off = rng.choice(alive), None
        deadline = time.perf_counter() + 3.0  # a worker caught scoring a trial, if one is within 3 s (the retry path is the point)
        while time.perf_counter() < deadline:
            busy = [(w, n) for w in alive if (n := running_pid_trial(storage, w.process.pid)) is not None]
            if busy:
                victim, cut_off = rng.choice(busy)
                break
            time.sleep(0.02)
        victim.kill()
        events.append({"at_seconds": round(time.perf_counter() - began, 1), "at": datetime.now().isoformat(), "worker": pool.index(victim),
                       "pid": victim.process.pid, "cut_off_trial": cut_off})
        pool[pool.index(victim)] = Worker(space, out, "--storage", storage, "--resume")
    failures = []
    for worker in pool:
        exit_codes.append(worker.finish())
        if exit_codes[-1] != 0:
            failures.append(worker.lines[-15:])
    failed = {t.number for t in load(storage).get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    for event in events:  # the trial seen running may have finished in the moment before the kill landed
        event["cut_off"] = event["cut_off_trial"] in failed
    return {"workers": workers, "kills": len(events), "kills_that_cut_off_a_trial": sum(e["cut_off"] for e in events),
            "kill_events": events, "worker_exit_codes": exit_codes, "failed_workers_stderr": failures,
            "wall_seconds": round(time.perf_counter() - began, 1),
            **audit(storage, out, snapshots)}


PHASES = {  # where a kill lands: the marker the process has printed when the delay starts, and the delay
    "candidates": (None, (0.5, 4.0)),
    "trials": ("trials to run", (0.2, 3.0)),
}  # the test pass and the outputs: timed on the uninterrupted run (single_process)


def phase_of(worker: Worker, out: Path) -> str:
    """Where the process was when it died, from what it printed and wrote."""
    if (out / "manifest.json").exists() and json.loads((out / "manifest.json").read_text()).get("status") == "complete":
        return "finished before the kill"
    if worker.saw("report:") or (out / "best.json").exists():
        return "outputs"
    if worker.saw("test: "):
        return "test"
    if worker.saw("trials to run"):
        return "trials"
    return "candidates"


def _written_by(path: Path, worker: Worker) -> bool:
    """Whether ``path`` was written since ``worker`` started."""
    try:
        return path.stat().st_mtime >= worker.started
    except FileNotFoundError:
        return False


def single_process(space: Path, runs: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    reference, out = runs / "uninterrupted", runs / "killed"
    began = time.perf_counter()
    worker = Worker(space, reference, "--no-cache")  # every run computes its test pass (none reads another's)
    while not worker.saw("test: ") and worker.process.poll() is None:
        time.sleep(0.005)
    test_began = time.perf_counter()
    if worker.finish() != 0:
        raise SystemExit("the uninterrupted run failed")
    reference_seconds, finishing = time.perf_counter() - began, time.perf_counter() - test_began
    # the kills aimed at the end land in the test pass or in the writing of the outputs, timed on this run
    phases = {**PHASES, "test": ("test: ", (0.0, 0.5 * finishing)), "outputs": (None, (0.0, 0.3))}  # outputs: after best.json
    plan = ["candidates", "candidates", "trials", "trials", "trials", "trials", "test", "test", "outputs", "outputs"]
    plan = (plan * (kills // len(plan) + 1))[:kills]
    storage = f"sqlite:///{out / 'study.db'}"
    snapshots, events = [], []
    for target in plan:
        worker = Worker(space, out, "--resume", "--no-cache")
        marker, (low, high) = phases[target]
        while marker is not None and not worker.saw(marker) and worker.process.poll() is None:
            time.sleep(0.005)
        while target == "outputs" and not _written_by(out / "best.json", worker) and worker.process.poll() is None:
            time.sleep(0.005)  # the first export is written: the others follow within about a second
        time.sleep(rng.uniform(low, high))
        snapshots.append(finished_snapshot(storage) if (out / "study.db").exists() else {})
        if worker.process.poll() is not None:
            events.append({"aimed_at": target, "landed_in": "finished before the kill", "exit_code": worker.finish(),
                           "stderr": worker.lines[-3:]})
            continue
        worker.kill()
        events.append({"aimed_at": target, "landed_in": phase_of(worker, out)})
    final = Worker(space, out, "--resume", "--no-cache")
    code = final.finish()
    result = audit(storage, out, snapshots)
    expected = json.loads((reference / "best.json").read_text())["prompt"]
    ensemble, expected_ensemble = (json.loads((folder / "ensemble.json").read_text())["members"] for folder in (out, reference))
    return {"kills": sum(e["landed_in"] != "finished before the kill" for e in events), "kill_events": events, "final_exit_code": code,
            "uninterrupted_seconds": round(reference_seconds, 1), "uninterrupted_test_and_outputs_seconds": round(finishing, 2),
            "best_prompt_equals_uninterrupted": (result["prompt"]["template"], result["prompt"]["verbalizer"])
            == (expected["template"], expected["verbalizer"]) and result["prompt"]["calibration"] == expected["calibration"]["method"],
            "ensemble_equals_uninterrupted": [m["prompt"] for m in ensemble] == [m["prompt"] for m in expected_ensemble]
            and [m["weight"] for m in ensemble] == [m["weight"] for m in expected_ensemble],
            **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="postgresql,journal,single")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--trials", type=int, default=400, help="the study's trial budget (after the manual baselines and proposals)")
    parser.add_argument("--seed", type=int, default=0, help="draws the kill moments and victims")
    parser.add_argument("--out", default="results/benchmarks/reliability.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="autoprompt-reliability-") as scratch:
        scratch = Path(scratch)
        os.environ["AUTOPROMPT_SEARCH_CACHE"] = str(scratch / "cache")  # the workers' slot cache, deleted afterwards
        model = build_tiny_causal_lm(scratch / "model")
        space = write_tiny_space(scratch, model, trials=args.trials)
        write_tiny_dataset(scratch / "tiny.csv", copies=40)  # ~500 test examples
        # the single process's own data: ~5,000 test examples, a test pass of seconds that its kills can land in
        (scratch / "single_space").mkdir()
        single_space = write_tiny_space(scratch / "single_space", model, trials=args.trials)
        write_tiny_dataset(scratch / "single_space" / "tiny.csv", copies=400)
        for scenario in args.scenarios.split(","):
            print(f"{scenario} ...", flush=True)
            runs = scratch / scenario
            if scenario == "postgresql":
                with PrivatePostgres() as server:
                    figures[scenario] = shared_workers(space, runs / "run", server.url, args.workers, args.kills, rng)
            elif scenario == "journal":
                runs.mkdir()
                figures[scenario] = shared_workers(space, runs / "run", f"journal:{runs / 'journal.log'}", args.workers, args.kills, rng)
            elif scenario == "single":
                figures[scenario] = single_process(single_space, runs, args.kills, rng)
            else:
                raise SystemExit(f"unknown scenario {scenario!r}")
            print(json.dumps({k: v for k, v in figures[scenario].items() if k not in ("kill_events", "prompt")}), flush=True)
    atomic_write_json(ROOT / args.out, {
        "benchmark": "reliability", "model": "tiny random causal LM (autoprompt_search.testing)", "trial_budget": args.trials,
        "kill_seed": args.seed, "scenarios": figures,
        "zero_lost_and_zero_scored_twice": all(f["lost"] == 0 and f["scored_twice"] == 0 for f in figures.values()),
        "machine_note": "the project's 2-core CPU machine", "provenance": stamp()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
