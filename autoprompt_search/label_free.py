"""What unlabelled texts say about a prompt, without their labels.

Users have far more unlabelled texts than labels. These read a prompt's class probabilities on
such texts:

- :func:`unlabelled_sample`: the texts, drawn reproducibly from a pool the labelled few-shot
  examples (and never the test split) came from, those examples left out;
- :func:`mutual_information` between input and prediction (Sorensen et al. 2022): high when the
  prompt's predictions are confident per text and varied across texts;
- :func:`pseudo_labels` from an ensemble of prompts and a prompt's :func:`agreement` with them
  (zero-label prompt selection, Liao et al. 2022).

Batch calibration (Zhou et al. 2024) needs nothing of its own here: it is the ``prior``
calibration fitted on the unlabelled texts (:meth:`PromptScorer.fit_calibration`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from autoprompt_search.data import sample
from autoprompt_search.examples import Dataset, example_key


def unlabelled_sample(pool: Dataset, labelled: Sequence[Dataset], n: int, seed: int) -> Dataset:
    """``n`` texts of ``pool`` that none of the ``labelled`` splits holds, drawn with ``seed`` (all
    of them when fewer are left). Their labels stay in the returned examples but nothing here or
    in its callers reads them."""
    taken = {example_key(e, pool.fields) for split in labelled for e in split.examples}
    rest = pool.subset(i for i, e in enumerate(pool.examples) if example_key(e, pool.fields) not in taken)
    return sample(rest, n, seed) if len(rest) else rest


def _entropy(probabilities: np.ndarray) -> np.ndarray:
    return -(probabilities * np.log(np.clip(probabilities, 1e-12, None))).sum(axis=-1)


def mutual_information(probabilities: np.ndarray) -> float:
    """I(X; Y) in nats of a prompt's ``[texts, classes]`` probabilities: the entropy of the mean
    prediction less the mean entropy of each prediction."""
    return float(_entropy(probabilities.mean(axis=0)) - _entropy(probabilities).mean())


def pseudo_labels(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The class the uniform average of several prompts' probabilities picks on each text."""
    return np.mean(np.stack(probabilities), axis=0).argmax(axis=1)


def agreement(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The share of texts on which a prompt predicts the pseudo-``labels``."""
    return float((probabilities.argmax(axis=1) == labels).mean())
