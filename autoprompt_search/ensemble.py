"""Ensembles of prompts: the top distinct prompts, combined by a weighted average of their
calibrated class probabilities.

Weights are fitted on the few-shot examples, which are tiny (64 for MR at K=16): free weights
would fit their noise. So the weights are a softmax of logits pulled towards zero (the uniform
average) by an L2 penalty, and the penalty's strength, including "infinite" (plain uniform
average), is chosen by stratified cross-validation of the log-loss on the examples the search
scores its trials on (train and dev). When the data cannot
tell the members apart, the uniform average wins: among penalties whose held-out loss is within
one standard error of the best, the strongest is taken (the one-standard-error rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np
from scipy.optimize import minimize
from sklearn.model_selection import StratifiedKFold

T = TypeVar("T")
PENALTIES: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, float("inf"))
_EPS = 1e-12
_TOLERANCE = 1e-3  # log-loss differences below this are noise even when the folds agree exactly


def combine_probabilities(probabilities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted average ``[n, classes]`` of the members' calibrated class probabilities."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])
    w = np.asarray(weights, dtype=np.float64)
    if stacked.shape[0] != w.shape[0] or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative, not all zero, one per member")
    return np.tensordot(w / w.sum(), stacked, axes=1)


def select_members(ranked: Sequence[T], templates: int, per_template: int, key: Callable[[T], Hashable]) -> list[T]:
    """The best items of a ranking with at most ``templates`` distinct keys and ``per_template``
    items per key: several word/calibration variants of each of the top templates.

    Variants of a template cost nothing more to score than the template itself, and averaging
    them blunts the overfitting of any single word choice to a tiny dev set.
    """
    chosen: list[T] = []
    counts: dict[Hashable, int] = {}
    for item in ranked:
        group = key(item)
        if group not in counts and len(counts) == templates:
            continue
        if counts.get(group, 0) < per_template:
            counts[group] = counts.get(group, 0) + 1
            chosen.append(item)
    return chosen


@dataclass(frozen=True)
class WeightFit:
    weights: tuple[float, ...]
    penalty: float  # inf: the uniform average
    cv_log_loss: dict[str, float]  # penalty -> mean held-out log-loss

    def to_dict(self) -> dict:
        return {"method": "softmax weights, L2 towards uniform, penalty chosen by stratified CV log-loss on train+dev",
                "weights": list(self.weights), "penalty": _name(self.penalty), "cv_log_loss": self.cv_log_loss}


def fit_weights(probabilities: Sequence[np.ndarray], gold: Sequence[int], *, folds: int = 4, seed: int = 0) -> WeightFit:
    """Non-negative weights summing to one for ``probabilities`` (one ``[n, classes]`` per member)."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])  # [members, n, classes]
    gold_array = np.asarray(gold, dtype=np.int64)
    members = stacked.shape[0]
    if members == 1:
        return WeightFit((1.0,), float("inf"), {})
    picked = stacked[:, np.arange(len(gold_array)), gold_array]  # [members, n]: p(gold) per member
    n_folds = min(folds, int(np.bincount(gold_array).min())) if len(gold_array) else 0
    losses: dict[str, float] = {}
    if n_folds >= 2:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        fold_losses: dict[float, list[float]] = {}
        for penalty in PENALTIES:
            fold_losses[penalty] = [_log_loss(picked[:, test_index], _fit(picked[:, train_index], penalty))
                                    for train_index, test_index in splitter.split(np.zeros(len(gold_array)), gold_array)]
            losses[_name(penalty)] = float(np.mean(fold_losses[penalty]))
        lowest = min(PENALTIES, key=lambda p: losses[_name(p)])
        standard_error = float(np.std(fold_losses[lowest], ddof=1) / np.sqrt(n_folds)) + _TOLERANCE
        best = max(p for p in PENALTIES if losses[_name(p)] <= losses[_name(lowest)] + standard_error)
    else:
        best = float("inf")
    return WeightFit(tuple(float(w) for w in _fit(picked, best)), best, losses)


def _fit(picked: np.ndarray, penalty: float) -> np.ndarray:
    members = picked.shape[0]
    if np.isinf(penalty):
        return np.full(members, 1.0 / members)

    def objective(logits: np.ndarray) -> float:
        return _log_loss(picked, _softmax(logits)) + penalty * float(logits @ logits) / picked.shape[1]

    result = minimize(objective, np.zeros(members), method="L-BFGS-B")
    return _softmax(result.x)


def _log_loss(picked: np.ndarray, weights: np.ndarray) -> float:
    return float(-np.log(weights @ picked + _EPS).mean())


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _name(penalty: float) -> str:
    return "uniform" if np.isinf(penalty) else f"{penalty:g}"
