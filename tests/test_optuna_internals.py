"""What the deterministic resume relies on from Optuna's internals (``optuna_internals.py``): the
trial-seeded TPE sampler draws from the seed and the finished history alone, and ``mark_failed``
fails a trial that another process left RUNNING. An Optuna upgrade that breaks either fails here."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from autoprompt_search.optuna_internals import TrialSeededTPESampler, mark_failed

# Several categorical parameters with many choices: two independent draws agree only by a fluke.
DISTRIBUTIONS: dict[str, CategoricalDistribution] = {
    "template": CategoricalDistribution(list(range(12))),
    "words_0": CategoricalDistribution(list(range(9))),
    "words_1": CategoricalDistribution(list(range(9))),
    "calibration": CategoricalDistribution(["none", "contextual", "prior"]),
}
STARTUP = 4  # TPE's random start-up trials; histories below and above it exercise both samplers


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def history(count: int) -> list[optuna.trial.FrozenTrial]:
    """``count`` finished trials with fixed parameters and values (a few of them pruned)."""
    trials = []
    for i in range(count):
        params = {"template": (5 * i) % 12, "words_0": (2 * i) % 9, "words_1": (7 * i + 3) % 9,
                  "calibration": ("none", "contextual", "prior")[i % 3]}
        state = TrialState.PRUNED if i % 5 == 4 else TrialState.COMPLETE
        trials.append(optuna.trial.create_trial(state=state, value=None if state == TrialState.PRUNED else (i * 37 % 11) / 10,
                                                params=params, distributions=DISTRIBUTIONS))
    return trials


def make_study(seed: int, finished: int, storage: Any = None, name: str | None = None) -> optuna.Study:
    sampler = TrialSeededTPESampler(seed, multivariate=True, n_startup_trials=STARTUP)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler)
    for trial in history(finished):
        study.add_trial(trial)
    return study


def draw(study: optuna.Study) -> dict[str, Any]:
    """The next trial's parameters; the trial is left RUNNING (as a killed process leaves it)."""
    return study.ask(DISTRIBUTIONS).params


@pytest.mark.parametrize("finished", [0, 2, STARTUP + 6])
def test_the_same_seed_and_history_draw_the_same_parameters(finished: int) -> None:
    first, second = make_study(7, finished), make_study(7, finished)
    assert draw(first) == draw(second)


@pytest.mark.parametrize("finished", [2, STARTUP + 6])
def test_another_seed_draws_other_parameters(finished: int) -> None:
    """The draw does depend on the seed (so the checks above can fail)."""
    drawn = {tuple(sorted(draw(make_study(seed, finished)).items())) for seed in range(4)}
    assert len(drawn) > 1


@pytest.mark.parametrize("finished", [2, STARTUP + 6])
def test_a_trial_cut_off_and_marked_failed_does_not_change_the_next_draw(finished: int) -> None:
    """The trial numbers shift past the cut-off trial, the draw does not: the seed counts finished trials."""
    interrupted, whole = make_study(11, finished), make_study(11, finished)
    cut_off = interrupted.ask(DISTRIBUTIONS)
    mark_failed(interrupted, interrupted.trials[cut_off.number])  # what open_study does on resume
    after = draw(interrupted)
    assert after == draw(whole) == cut_off.params
    assert interrupted.trials[-1].number == whole.trials[-1].number + 1


def test_a_trial_left_running_does_not_change_the_random_start_up_draws() -> None:
    """Before TPE takes over (fewer finished trials than ``n_startup_trials``), a RUNNING trial is ignored."""
    interrupted, whole = make_study(11, STARTUP - 2), make_study(11, STARTUP - 2)
    cut_off = interrupted.ask(DISTRIBUTIONS)  # never told: RUNNING
    assert draw(interrupted) == draw(whole) == cut_off.params


def test_a_plain_tpe_sampler_would_draw_differently_after_an_interruption() -> None:
    """Why the re-seeding exists: plain TPE's random state moves on with every trial asked."""
    plain = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=11, multivariate=True,
                                                                                        n_startup_trials=STARTUP))
    for trial in history(STARTUP + 6):
        plain.add_trial(trial)
    assert draw(plain) != draw(plain)


@pytest.mark.parametrize("finished", [2, STARTUP + 6])
def test_a_trial_told_in_this_process_counts_like_one_in_the_history(finished: int) -> None:
    """The draw depends on the finished trials, not on how (or by which process) they were finished."""
    live = make_study(3, finished)
    trial = live.ask(DISTRIBUTIONS)
    live.tell(trial, state=TrialState.PRUNED)
    recorded = make_study(3, finished)
    recorded.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params=trial.params, distributions=DISTRIBUTIONS))
    assert draw(live) == draw(recorded)


def test_mark_failed_fails_a_trial_that_another_process_left_running(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    killed = make_study(5, STARTUP + 2, storage=url, name="s")
    left_running = killed.ask(DISTRIBUTIONS)
    del killed  # the "process" that asked it is gone

    resumed = optuna.load_study(study_name="s", storage=url, sampler=TrialSeededTPESampler(5, multivariate=True,
                                                                                          n_startup_trials=STARTUP))
    (running,) = resumed.get_trials(states=(TrialState.RUNNING,))
    assert running.number == left_running.number
    mark_failed(resumed, running)
    reread = optuna.load_study(study_name="s", storage=url).trials  # a third, fresh view of the storage
    assert reread[running.number].state == TrialState.FAIL
    assert [t.state for t in reread[: running.number]] == [t.state for t in history(STARTUP + 2)]
    # The failed trial does not count as finished: the next draw is the uninterrupted study's.
    assert draw(resumed) == draw(make_study(5, STARTUP + 2))


def test_mark_failed_works_on_an_in_memory_study() -> None:
    study = make_study(5, 1)
    trial = study.ask(DISTRIBUTIONS)
    mark_failed(study, study.trials[trial.number])
    assert study.trials[trial.number].state == TrialState.FAIL


def test_a_resumed_study_draws_what_an_uninterrupted_one_draws(tmp_path: Path) -> None:
    """End to end through :func:`study.open_study`: a process killed with a trial RUNNING, then resumed
    by another process, goes on to draw exactly what a process never interrupted draws."""
    from autoprompt_search.study import STUDY_NAME, open_study

    def start(name: str) -> tuple[str, optuna.Study]:
        url = f"sqlite:///{tmp_path / name}"
        study, created = open_study(url, seed=9, pruner="none", resume=False)
        assert created
        for trial in history(12):  # past open_study's 10 start-up trials: TPE proper
            study.add_trial(trial)
        return url, study

    def finish(study: optuna.Study) -> dict[str, Any]:
        trial = study.ask(DISTRIBUTIONS)
        study.tell(trial, 0.5)
        return trial.params

    _, whole = start("whole.db")
    expected = [finish(whole) for _ in range(3)]

    url, killed = start("parts.db")
    cut_off = killed.ask(DISTRIBUTIONS).params  # the process dies here
    resumed, created = open_study(url, seed=9, pruner="none", resume=True)
    assert not created
    assert [finish(resumed) for _ in range(3)] == expected
    assert cut_off == expected[0]  # the cut-off trial is enqueued again first
    states = [t.state for t in optuna.load_study(study_name=STUDY_NAME, storage=url).trials]
    assert states.count(TrialState.FAIL) == 1 and TrialState.RUNNING not in states
