"""Every use of Optuna's private internals, in one place.

The deterministic resume relies on two things Optuna does not offer publicly: re-seeding TPE's
random state before each trial, and marking a trial that a killed process left RUNNING as failed
from another process. ``tests/test_optuna_internals.py`` pins both behaviours, so an Optuna upgrade
that changes them fails there, loudly, rather than making resumed studies quietly differ.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.samplers import RandomSampler, TPESampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import FrozenTrial, TrialState


class TrialSeededTPESampler(TPESampler):
    """TPE whose randomness depends only on the seed and the finished history.

    Optuna does not restore a sampler's random state when a study resumes; re-seeding each trial
    from the number of finished trials (not the trial number, which an interrupted trial shifts)
    makes a resumed study draw what an uninterrupted one would have drawn from the same history.

    Workers sharing a study (``shared``) would all draw alike from the same history: there the
    trial number, unique to each trial, seeds it instead.
    """

    def __init__(self, seed: int, *, shared: bool = False, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed
        self._shared = shared

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        trial_seed = (self._base_seed * 1_000_003 + (trial.number if self._shared else finished)) % 2**32
        self._rng = LazyRandomState(trial_seed)
        self._random_sampler = RandomSampler(seed=trial_seed)
        super().before_trial(study, trial)


def mark_failed(study: optuna.Study, trial: FrozenTrial) -> None:
    """Set a trial that another (dead) process left RUNNING to FAIL: ``Study.tell`` only accepts
    trials asked in this process."""
    study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)


def set_trial_system_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    """Record a system attribute of a running trial (Optuna's public setter is gone): who runs it,
    its heartbeat."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)
