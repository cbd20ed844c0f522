"""Signals read from unlabelled texts: the sample, mutual information, pseudo-labels."""

from __future__ import annotations

import math

import numpy as np

from autoprompt_search.examples import Dataset, Example
from autoprompt_search.label_free import agreement, mutual_information, pseudo_labels, unlabelled_sample


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
