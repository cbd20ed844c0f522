"""What unlabelled texts say about a prompt, without their labels.

Users have far more unlabelled texts than labels. These read a prompt's class probabilities on
such texts:

- :func:`unlabelled_sample`: the texts, drawn reproducibly from a pool the labelled few-shot
  examples (and never the test split) came from, those examples left out;
- :func:`mutual_information` between input and prediction (Sorensen et al. 2022): high when the
  prompt's predictions are confident per text and varied across texts;
- :func:`pseudo_labels` from an ensemble of prompts and a prompt's :func:`agreement` with them
  (zero-label prompt selection, Liao et al. 2022);
- :func:`choose_by_agreement`: the search's ``unlabelled.select: agreement`` rule. Labels rank the
  prompts, but among the prompts the labels cannot tell apart (:func:`near_top`) the one agreeing
  most with the pseudo-labels of the best-ranked prompts is chosen.

Batch calibration (Zhou et al. 2024) needs nothing of its own here: it is the ``prior``
calibration fitted on the unlabelled texts (:meth:`Calibration.prior_from`, in :mod:`autoprompt_search.search`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from autoprompt_search.data import sample
from autoprompt_search.examples import Dataset, example_key

PSEUDO_LABEL_PROMPTS = 10  # the best-ranked prompts whose uniform ensemble gives the pseudo-labels
AGREEMENT_RULE = (f"among the prompts within one standard error of the top, the one agreeing most with the pseudo-labels "
                  f"of the top {PSEUDO_LABEL_PROMPTS} on the unlabelled texts")  # what choose_by_agreement does, for users


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


def near_top(ranked_scores: Sequence[float], n: int) -> list[int]:
    """Positions of the ranked prompts (best first) whose labelled score is within one standard
    error of the first one's, on ``n`` labelled examples: the ones the labels cannot tell apart.
    The error is a proportion's: exact for accuracy, an approximation for macro-F1."""
    top = ranked_scores[0]
    floor = top - math.sqrt(max(top * (1 - top), 1e-9) / n)
    return [i for i, score in enumerate(ranked_scores) if score >= floor]


def choose_by_agreement(ranked_scores: Sequence[float], unlabelled: Sequence[np.ndarray], n: int,
                        pseudo_label_prompts: int = PSEUDO_LABEL_PROMPTS) -> int:
    """Position of the chosen prompt among ranked prompts (best first): of the :func:`near_top`
    ones, the one agreeing most with the pseudo-labels of the first ``pseudo_label_prompts`` on the
    unlabelled texts (``unlabelled[i]``: prompt i's ``[texts, classes]`` probabilities); a tie goes
    to the better-ranked prompt."""
    labels = pseudo_labels(unlabelled[:pseudo_label_prompts])
    return max(near_top(ranked_scores, n), key=lambda i: (agreement(unlabelled[i], labels), -i))
