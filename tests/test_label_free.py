"""Signals read from unlabelled texts: the sample, mutual information, pseudo-labels, the agreement choice."""

from __future__ import annotations

import math

import numpy as np

from autoprompt_search.examples import Dataset, Example
from autoprompt_search.label_free import (
    agreement,
    choose_by_agreement,
    mutual_information,
    near_top,
    pseudo_labels,
    unlabelled_sample,
)


def _dataset(texts: list[str]) -> Dataset:
    return Dataset("d", [Example({"text": t}, "a" if i % 2 else "b") for i, t in enumerate(texts)], ["a", "b"], ["text"])


def test_the_sample_leaves_out_the_labelled_examples_and_is_reproducible() -> None:
    pool = _dataset([f"text {i}" for i in range(50)])
    labelled = [pool.subset(range(0, 10)), _dataset(["TEXT  11"])]  # the same text, spaced and cased otherwise
    first = unlabelled_sample(pool, labelled, 20, seed=13)
    texts = [e.fields["text"] for e in first.examples]
    assert len(texts) == 20 and len(set(texts)) == 20
    assert not {f"text {i}" for i in (*range(10), 11)} & set(texts)
    assert texts == [e.fields["text"] for e in unlabelled_sample(pool, labelled, 20, seed=13).examples]
    assert texts != [e.fields["text"] for e in unlabelled_sample(pool, labelled, 20, seed=21).examples]
    assert len(unlabelled_sample(pool, labelled, 500, seed=13)) == 39  # all that is left
    assert len(unlabelled_sample(pool, [pool], 5, seed=13)) == 0


def test_mutual_information_rewards_confident_and_varied_predictions() -> None:
    confident_varied = np.array([[0.99, 0.01], [0.01, 0.99]] * 5)
    confident_constant = np.array([[0.99, 0.01]] * 10)
    unsure = np.full((10, 2), 0.5)
    assert mutual_information(confident_varied) > 0.6  # near log 2 = 0.693
    assert mutual_information(confident_varied) <= math.log(2) + 1e-9
    assert abs(mutual_information(confident_constant)) < 1e-9
    assert abs(mutual_information(unsure)) < 1e-9


def test_pseudo_labels_are_the_average_vote_and_agreement_counts_matches() -> None:
    prompts = [np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]), np.array([[0.6, 0.4], [0.45, 0.55], [0.7, 0.3]])]
    labels = pseudo_labels(prompts)
    assert labels.tolist() == [0, 1, 1]  # row 3: the prompts disagree; the surer one (0.8 against 0.7) wins the average
    assert agreement(prompts[0], labels) == 1.0
    assert agreement(prompts[1], labels) == 2 / 3


def _votes(labels: list[int]) -> np.ndarray:
    return np.where(np.eye(2, dtype=bool)[labels], 0.9, 0.1)


def test_near_top_holds_the_prompts_within_one_standard_error_of_the_first() -> None:
    # on 64 examples the first's standard error is sqrt(0.8 * 0.2 / 64) = 0.05
    assert near_top([0.8, 0.76, 0.75, 0.74, 0.5], 64) == [0, 1, 2]
    assert near_top([1.0, 0.99], 64) == [0]  # no error at a perfect score: only exact ties stay


def test_the_agreement_choice_takes_the_near_top_prompt_the_pseudo_labels_back() -> None:
    texts = [0, 1, 1, 0, 1, 0, 0, 1]
    truth, opposite = _votes(texts), _votes([1 - t for t in texts])
    followers = [truth] * 8  # far down the ranking, but their votes make the pseudo-labels
    scores = [0.80, 0.77, 0.70] + [0.5] * 8
    assert choose_by_agreement(scores, [opposite, truth, truth, *followers], 64) == 1
    assert choose_by_agreement(scores, [opposite, opposite, truth, *followers], 64) == 0  # the third is not near the top
    assert choose_by_agreement(scores, [truth, truth, truth, *followers], 64) == 0  # a tie goes to the better-ranked
    assert choose_by_agreement([0.8], [truth], 64) == 0
