"""The Optuna study of a search: its storage, sampler and pruner, the enqueued baselines, and the
leaderboard read back from it. Scoring a trial is :mod:`search`'s job."""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState

from autoprompt_search.calibration import Calibration
from autoprompt_search.candidates.pools import Pools
from autoprompt_search.errors import UserError
from autoprompt_search.optuna_internals import TrialSeededTPESampler, mark_failed
from autoprompt_search.ranking import TrialResult, ranking_key
from autoprompt_search.templates import Template

STUDY_NAME = "autoprompt_search"
ENQUEUED_MARKS = ("manual", "proposal")  # user attributes of the trials enqueued before the sampler's


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file (``journal:PATH``) for several local processes, or an RDB URL with
    heartbeats, so that trials of a worker that died are failed and retried once."""
    try:
        if url.startswith("journal:"):
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            return JournalStorage(JournalFileBackend(url[len("journal:"):]))
        from optuna.exceptions import ExperimentalWarning
        from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

        with warnings.catch_warnings():  # the successor of the deprecated RetryFailedTrialCallback is marked experimental
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
        return RDBStorage(url, heartbeat_interval=60, grace_period=180, heartbeat_stale_trial_callback=retry)
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
    sampler = TrialSeededTPESampler(seed, multivariate=True, n_startup_trials=10)
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
        if exclusive:
            _requeue_interrupted(study)
        else:
            optuna.storages.fail_stale_trials(study)
    return study, STUDY_NAME not in names


def _requeue_interrupted(study: optuna.Study) -> None:
    """Trials left RUNNING by a killed process are marked failed and enqueued again."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        mark_failed(study, trial)
        study.enqueue_trial(trial.params or trial.system_attrs.get("fixed_params", {}), user_attrs=dict(trial.user_attrs))


def enqueue_manual(study: optuna.Study, pools: Pools) -> None:
    """The manual baselines, then the generators' proposals, as the first trials."""
    for params in pools.manual:
        study.enqueue_trial(params, user_attrs={"manual": True})
    for params in pools.proposals:
        study.enqueue_trial(params, user_attrs={"proposal": True})


def finished_trials(study: optuna.Study) -> int:
    return sum(
        1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)) if "repeat_of" not in t.user_attrs
    )


def leaderboard(study: optuna.Study) -> list[TrialResult]:
    """Completed trials, best first: objective, then mean margin (identical prompts stay together)."""
    results = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
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
                manual=bool(attrs.get("manual", False)),
                params=dict(trial.params),
                dev_accuracy=attrs.get("dev_accuracy", float("nan")),
            )
        )
    results.sort(key=lambda r: ranking_key(r.objective, r.mean_margin, r.template.source, r.verbalizer, r.calibration.method))
    return results


def enqueued(trial: optuna.Trial) -> bool:
    """Baselines and proposals are scored in full: the pruner judges only what the sampler picks."""
    return any(trial.user_attrs.get(mark) for mark in ENQUEUED_MARKS)
