"""The Optuna study of a search: its storage, sampler and pruner, the enqueued baselines, the
liveness of the workers that share it, and the leaderboard read back from it. Scoring a trial is
:mod:`search`'s job.

Workers record who runs each trial and beat a heartbeat into it. Optuna's own heartbeat exists
only for RDB storages and only inside ``Study.optimize`` (the search drives its study with
ask/tell), so the project keeps its own, the same for the journal file and every RDB: a trial whose
worker is gone (its process no longer exists on this host, or its heartbeat is older than
:data:`STALE_SECONDS` elsewhere) is failed and enqueued again, by whichever worker sees it first.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autoprompt_search.calibration import Calibration
from autoprompt_search.candidates.pools import Pools
from autoprompt_search.errors import UserError
from autoprompt_search.optuna_internals import TrialSeededTPESampler, mark_failed, set_trial_system_attr
from autoprompt_search.ranking import TrialResult, ranking_key
from autoprompt_search.templates import Template

STUDY_NAME = "autoprompt_search"
ENQUEUED_MARKS = ("manual", "proposal")  # user attributes of the trials enqueued before the sampler's
WORKER_ATTR, HEARTBEAT_ATTR = "worker", "heartbeat"  # trial system attributes: who runs it, when it last beat
HEARTBEAT_SECONDS = 15.0
STALE_SECONDS = 120.0  # a heartbeat this old means the worker died (for workers on other hosts; same-host ones are checked directly)
UNNAMED_STALE_SECONDS = 20.0  # a trial this old that has not named its worker was cut off (measured: a 2-minute stall)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file (``journal:PATH``) for several local processes, or an RDB URL (SQLite,
    PostgreSQL with the ``[distributed]`` extra, ...) for several machines."""
    try:
        if url.startswith("journal:"):
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            return JournalStorage(JournalFileBackend(url[len("journal:"):]))
        from optuna.storages import RDBStorage

        return RDBStorage(url)
    except Exception as error:  # a malformed URL, a missing driver or folder, an unreachable server
        raise UserError(f"{url}: cannot open it ({type(error).__name__}: {error})", option="storage") from None


def load_study(storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """A finished run's study, to read (no sampler or pruner needed)."""
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


def make_pruner(kind: str) -> optuna.pruners.BasePruner:
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if kind == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=8)
    return optuna.pruners.NopPruner()


def open_study(storage: str | optuna.storages.BaseStorage, *, seed: int, pruner: str, resume: bool,
               exclusive: bool = True) -> tuple[optuna.Study, bool]:
    """Create a study, or load it to resume it; returns (study, created).

    A study left by another run is never reused silently. With ``exclusive`` storage (the run
    folder's own), trials left RUNNING were cut off by a killed process: they are marked failed
    and enqueued again. A shared storage may hold other workers' running trials: those are left
    alone (an RDB storage fails them itself once their heartbeat stops).
    """
    # Workers sharing a study draw apart: their trial numbers seed them (and TPE's constant liar,
    # on by default, counts the trials still running as poor ones rather than proposing them again).
    sampler = TrialSeededTPESampler(seed, multivariate=True, n_startup_trials=10, shared=not exclusive)
    try:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        if STUDY_NAME in names and not resume:
            raise UserError("the storage already holds this run's study: resume it, or use another run folder or storage "
                            "for a new run", option="resume")
        study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", sampler=sampler,
                                    pruner=make_pruner(pruner), load_if_exists=True)
    except UserError:
        raise
    except Exception as error:  # whatever the storage backend raises for a bad URL or an unreachable database
        raise UserError(f"cannot open the Optuna storage ({type(error).__name__}: {error})", option="storage") from None
    if STUDY_NAME in names:
        retry_dead_trials(study, every_running_is_dead=exclusive)
    return study, STUDY_NAME not in names


def worker_identity(pid: int | None = None) -> dict[str, Any]:
    """This process as the trials it runs record it (the start time tells a reused pid apart)."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "started": _process_start(pid)}


def _process_start(pid: int) -> str | None:
    try:  # field 22 of /proc/PID/stat, after the parenthesised command name (which may hold spaces)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_alive(worker: dict[str, Any] | None) -> bool | None:
    """Whether a trial's worker still runs: known only for workers on this host (None otherwise)."""
    if not worker or worker.get("host") != socket.gethostname() or not isinstance(worker.get("pid"), int):
        return None
    started = _process_start(worker["pid"])
    if started is None and not Path("/proc/self/stat").exists():
        return None  # no /proc to ask
    return started is not None and started == worker.get("started")


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial, interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Record this process as the trial's worker and beat while the trial runs."""
    set_trial_system_attr(study, trial, WORKER_ATTR, worker_identity())
    set_trial_system_attr(study, trial, HEARTBEAT_ATTR, time.time())
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                set_trial_system_attr(study, trial, HEARTBEAT_ATTR, time.time())
            except Exception:  # the trial was finished meanwhile (or failed by another worker): nothing left to beat for
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def retry_dead_trials(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None, *, every_running_is_dead: bool = False,
                      stale_after: float = STALE_SECONDS) -> int:
    """Fail the RUNNING trials whose worker is gone and enqueue their parameters again; returns how
    many were retried. With the run folder's own storage nothing else can be running (a trial left
    RUNNING was cut off by a killed process). ``trials``: the study's trials as just read, to spare
    the storage another read.

    A cut-off trial is retried however often its workers die, as Optuna's ``RetryFailedTrialCallback``
    does by default: workers die from outside (a kill, a preempted machine), and with a limit of 2
    the reliability benchmark lost prompts whose retries random kills had cut off three times in a
    row. A prompt whose scoring raises an error is failed for good by its own worker
    (:meth:`search.PromptSearch.run`), so that it does not take down every worker in turn."""
    retried = 0
    for trial in running_trials(study) if trials is None else [t for t in trials if t.state == TrialState.RUNNING]:
        if not (every_running_is_dead or _worker_gone(trial, stale_after)):
            continue
        try:
            mark_failed(study, trial)
        except UpdateFinishedTrialError:  # finished meanwhile, or another worker failed it first
            continue
        attrs = {k: v for k, v in trial.user_attrs.items() if k in ENQUEUED_MARKS}
        # an enqueued trial cut off while drawing holds only some of its fixed parameters so far
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        study.enqueue_trial(params, user_attrs={**attrs, "retry_of": trial.number, "retries": int(trial.user_attrs.get("retries", 0)) + 1})
        retried += 1
    return retried


def _worker_gone(trial: FrozenTrial, stale_after: float) -> bool:
    worker = trial.system_attrs.get(WORKER_ATTR)
    alive = worker_alive(worker)
    if alive is not None:
        return not alive
    if worker is None:  # a worker names itself moments after its ask: it was cut off in between
        stale_after = min(stale_after, UNNAMED_STALE_SECONDS)
    started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    return time.time() - float(trial.system_attrs.get(HEARTBEAT_ATTR, started)) > stale_after


def running_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def wait_for_running_trials(study: optuna.Study, poll: float = 2.0) -> float:
    """Wait until no trial of the study is running (those of dead workers are failed and
    retried meanwhile); returns the seconds waited."""
    began = time.perf_counter()
    while running_trials(study):
        retry_dead_trials(study)
        if running_trials(study):
            time.sleep(poll)
    return time.perf_counter() - began


def waiting_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Enqueued trials no worker has picked up yet."""
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def finished_trial_numbers(study: optuna.Study) -> frozenset[int]:
    return frozenset(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def enqueue_manual(study: optuna.Study, pools: Pools) -> None:
    """The manual baselines, then the generators' proposals, as the first trials."""
    for params in pools.manual:
        study.enqueue_trial(params, user_attrs={"manual": True})
    for params in pools.proposals:
        study.enqueue_trial(params, user_attrs={"proposal": True})


def finished_trials(study: optuna.Study) -> int:
    """Finished trials that count towards the budget (a repeat of an earlier prompt does not)."""
    return count_finished(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def count_finished(trials: Sequence[FrozenTrial]) -> int:
    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "repeat_of" not in t.user_attrs)


def leaderboard(study: optuna.Study) -> list[TrialResult]:
    """Completed trials, best first: objective, then mean margin (identical prompts stay together)."""
    results = []
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # a baseline's retry answered by a sampled trial of its prompt keeps the prompt marked manual
    manual_repeats = {t.user_attrs["repeat_of"] for t in completed if "repeat_of" in t.user_attrs and t.user_attrs.get("manual")}
    for trial in completed:
        attrs = trial.user_attrs
        if "repeat_of" in attrs:
            continue
        results.append(
            TrialResult(
                number=trial.number,
                objective=float(trial.value),
                accuracy=attrs["accuracy"],
                macro_f1=attrs["macro_f1"],
                mean_margin=attrs["mean_margin"],
                template=Template.parse(attrs["template_text"]),
                verbalizer=attrs["verbalizer"],
                calibration=Calibration(trial.params["calibration"], tuple(attrs["calibration_bias"])),
                manual=bool(attrs.get("manual", False)) or trial.number in manual_repeats,
                params=dict(trial.params),
                dev_accuracy=attrs.get("dev_accuracy", float("nan")),
            )
        )
    results.sort(key=lambda r: ranking_key(r.objective, r.mean_margin, r.template.source, r.verbalizer, r.calibration.method))
    return results


def enqueued(trial: optuna.Trial) -> bool:
    """Baselines and proposals are scored in full: the pruner judges only what the sampler picks."""
    return any(trial.user_attrs.get(mark) for mark in ENQUEUED_MARKS)


def first_run_of_enqueued(trial: optuna.Trial) -> bool:
    """A baseline or proposal on its first run is scored even if its prompt was scored before. Its
    retry is not: while the cut-off trial was being failed, a sampled trial of the same prompt that
    had waited for it may have scored the prompt itself (measured on PostgreSQL: one prompt scored
    twice)."""
    return enqueued(trial) and "retry_of" not in trial.user_attrs
