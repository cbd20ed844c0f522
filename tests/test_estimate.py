"""Held-out estimates of the search's choices: they repeat the choice without the examples they score."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from autoprompt_search.estimate import Candidate, estimate_choices

N_TRAIN, N_DEV = 32, 32


def _gold() -> np.ndarray:
    return np.tile([0, 1], (N_TRAIN + N_DEV) // 2)


def _candidate(index: int, predictions: np.ndarray, template: str | None = None) -> Candidate:
    probabilities = np.where(np.eye(2, dtype=bool)[predictions], 0.8, 0.2)
    return Candidate(template or f"t{index} {{text}} {{mask}}", {"negative": ["bad"], "positive": [f"w{index}"]}, "none", probabilities)


def _estimates(candidates, gold, **options):
    settings = {"objective": "accuracy", "ensemble_size": 3, "prompts_per_template": 1, "seed": 0, **options}
    return estimate_choices(candidates, gold, np.arange(N_TRAIN, N_TRAIN + N_DEV), **settings)


def test_one_candidate_is_estimated_by_its_dev_accuracy_with_a_wilson_interval() -> None:
    gold = _gold()
    predictions = gold.copy()
    predictions[N_TRAIN::4] = 1 - predictions[N_TRAIN::4]  # a quarter of dev wrong
    estimates = _estimates([_candidate(0, predictions)], gold)
    best = estimates["best"]
    assert best.accuracy == pytest.approx(0.75) and best.n == N_DEV and best.chance == 0.5
    interval = binomtest(24, 32).proportion_ci(confidence_level=0.95, method="wilson")
    assert (best.low, best.high) == pytest.approx((interval.low, interval.high))
    assert not best.includes_chance and estimates["ensemble"].accuracy == pytest.approx(0.75)


def test_the_winner_among_noise_flatters_on_train_dev_and_the_estimate_says_chance() -> None:
    gold = _gold()
    rng = np.random.default_rng(1)
    candidates = [_candidate(i, rng.integers(0, 2, len(gold))) for i in range(200)]
    top = max((c.probabilities.argmax(axis=1) == gold).mean() for c in candidates)
    assert top >= 0.65  # what a leaderboard would show
    estimates = _estimates(candidates, gold)
    assert estimates["best"].includes_chance and estimates["best"].accuracy < 0.65
    assert estimates["ensemble"].includes_chance


def test_a_real_signal_among_noise_is_found_without_flattery() -> None:
    gold = _gold()
    rng = np.random.default_rng(2)
    real = np.where(rng.random(len(gold)) < 0.85, gold, 1 - gold)
    candidates = [_candidate(i, rng.integers(0, 2, len(gold))) for i in range(50)] + [_candidate(50, real)]
    estimates = _estimates(candidates, gold)
    assert estimates["best"].accuracy == pytest.approx((real == gold)[N_TRAIN:].mean(), abs=0.1)
    assert not estimates["best"].includes_chance


def test_no_estimate_without_two_dev_examples_of_every_label() -> None:
    gold = _gold()
    gold[N_TRAIN:] = 0
    gold[N_TRAIN] = 1
    assert _estimates([_candidate(0, gold)], gold) is None
    assert _estimates([], _gold()) is None


def test_macro_f1_objective_ranks_by_macro_f1() -> None:
    gold = _gold()
    always_zero = np.zeros(len(gold), dtype=int)  # accuracy 0.5, macro-F1 1/3
    mostly_right = np.where(np.arange(len(gold)) % 5 == 0, 1 - gold, gold)
    estimates = _estimates([_candidate(0, always_zero), _candidate(1, mostly_right)], gold, objective="macro_f1")
    assert estimates["best"].accuracy == pytest.approx((mostly_right == gold)[N_TRAIN:].mean())


def test_with_unlabelled_texts_the_estimate_repeats_the_agreement_choice() -> None:
    """Every fold holds out 4 dev examples of each label. ``lucky`` is right on all train examples and
    wrong on every dev example of label 1, so it ranks first on every fold's other examples (44 of
    56 right) and scores 0.5 held out; ``steady`` (42 of 56) is within one standard error of it and
    right on all of dev. On the unlabelled texts ``steady`` and the followers agree, ``lucky``
    predicts the opposite: the agreement rule picks ``steady`` on every fold."""
    gold = _gold()
    lucky, steady = gold.copy(), gold.copy()
    lucky[N_TRAIN:][gold[N_TRAIN:] == 1] = 0
    steady[:14] = 1 - steady[:14]  # 18 of 32 train right
    followers = [_candidate(2 + i, np.zeros_like(gold)) for i in range(8)]  # 0.5: never near the top
    candidates = [_candidate(0, lucky), _candidate(1, steady), *followers]
    texts = np.random.default_rng(3).integers(0, 2, 20)
    votes = np.where(np.eye(2, dtype=bool)[texts], 0.9, 0.1)
    unlabelled = [votes[:, ::-1], votes, *[votes] * len(followers)]
    assert _estimates(candidates, gold)["best"].accuracy == pytest.approx(0.5)
    assert _estimates(candidates, gold, unlabelled=unlabelled)["best"].accuracy == pytest.approx(1.0)
