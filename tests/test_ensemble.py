"""Ensemble weights: fitted on dev with a pull towards the uniform average."""

from __future__ import annotations

import numpy as np
import pytest

from autoprompt_search.ensemble import combine_probabilities, fit_weights, select_members


def _confident(gold: np.ndarray, right: float) -> np.ndarray:
    probabilities = np.full((len(gold), 2), 1 - right)
    probabilities[np.arange(len(gold)), gold] = right
    return probabilities


def test_combine_is_a_weighted_average() -> None:
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    b = np.array([[0.5, 0.5], [0.6, 0.4]])
    assert np.allclose(combine_probabilities([a, b], [3, 1]), 0.75 * a + 0.25 * b)
    with pytest.raises(ValueError):
        combine_probabilities([a, b], [1, -1])


def test_a_clearly_better_member_gets_most_weight() -> None:
    rng = np.random.default_rng(0)
    gold = np.repeat([0, 1], 16)
    fit = fit_weights([_confident(gold, 0.8), np.full((32, 2), 0.5), rng.dirichlet([1, 1], 32)], gold)
    assert fit.weights[0] > 0.9
    assert sum(fit.weights) == pytest.approx(1)
    assert all(w >= 0 for w in fit.weights)


def test_indistinguishable_members_get_the_uniform_average() -> None:
    gold = np.repeat([0, 1], 16)
    member = _confident(gold, 0.8)
    fit = fit_weights([member, member * 0.999 + 0.0005], gold)
    assert fit.weights == (0.5, 0.5)
    assert fit.to_dict()["penalty"] == "uniform"


def test_one_member_and_too_few_examples_for_cross_validation() -> None:
    gold = np.array([0, 1])
    assert fit_weights([_confident(gold, 0.7)], gold).weights == (1.0,)
    fit = fit_weights([_confident(gold, 0.7), _confident(gold, 0.6)], gold)
    assert fit.weights == (0.5, 0.5)


def test_select_members_keeps_rank_order_and_caps_templates_and_variants() -> None:
    ranked = [("t1", 1), ("t1", 2), ("t2", 3), ("t1", 4), ("t3", 5), ("t2", 6), ("t4", 7)]
    assert select_members(ranked, 2, 1, key=lambda item: item[0]) == [("t1", 1), ("t2", 3)]
    assert select_members(ranked, 2, 2, key=lambda item: item[0]) == [("t1", 1), ("t1", 2), ("t2", 3), ("t2", 6)]
    assert len(select_members(ranked, 10, 1, key=lambda item: item[0])) == 4
