"""What the chosen prompt and ensemble will score on unseen data, estimated without flattering.

The leaderboard's train+dev figure is the score of the prompt that won on those very examples:
with 56 labels and hundreds of trials it overstates (MR: 0.857 on train+dev, 0.721 on test). The
estimate here repeats the *choice* on part of the examples and scores it on the rest:

- only dev examples are held out: the label words and generated templates were chosen on train,
  so a train example cannot judge them;
- the dev examples are split into stratified folds; for each fold, every candidate (the
  leaderboard's top :data:`CANDIDATES`) is re-ranked on train plus the other folds exactly as the
  leaderboard ranks, the winner and the ensemble built from that ranking (members and weights
  refitted) predict the held-out fold;
- the held-out predictions of all folds give the accuracy, with a 95% Wilson interval on the
  number of dev examples; ``chance`` is the accuracy of always answering the held-out examples'
  most frequent label, and an interval that reaches it says that the run has not shown a prompt
  better than guessing.

The candidates themselves were proposed by a sampler that saw every example, so a small optimism
remains; the test split is the figure to trust, when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from autoprompt_search.ensemble import combine_probabilities, fit_weights, select_members
from autoprompt_search.label_free import choose_by_agreement
from autoprompt_search.ranking import ranking_key

CANDIDATES = 200  # leaderboard rows re-ranked per fold; far below them nothing wins a fold
MAX_FOLDS = 4
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Candidate:
    """A leaderboard row's identity (for the ranking's tie-breaks) and its calibrated class
    probabilities on the scored few-shot examples (train rows first, then dev)."""

    template: str
    verbalizer: dict[str, list[str]]
    calibration: str
    probabilities: np.ndarray  # [n, classes]


@dataclass(frozen=True)
class HeldOutEstimate:
    accuracy: float
    low: float
    high: float
    n: int
    folds: int
    chance: float

    @property
    def includes_chance(self) -> bool:
        return self.low <= self.chance

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "interval": [self.low, self.high], "confidence": CONFIDENCE, "n": self.n,
                "folds": self.folds, "chance": self.chance, "includes_chance": self.includes_chance,
                "method": "the choice repeated on train + other dev folds, scored on each held-out dev fold; Wilson interval"}


def estimate_choices(candidates: Sequence[Candidate], gold: Sequence[int], dev_rows: np.ndarray, *, objective: str,
                     ensemble_size: int, prompts_per_template: int, seed: int,
                     unlabelled: Sequence[np.ndarray] | None = None) -> dict[str, HeldOutEstimate] | None:
    """Held-out estimates of the search's two choices, ``best`` and ``ensemble``; None when some
    label has fewer than 2 dev examples (no fold could hold it out). ``best`` is the top prompt, or,
    given each candidate's probabilities on the unlabelled texts, the prompt
    :func:`label_free.choose_by_agreement` picks from the fold's ranking."""
    gold = np.asarray(gold, dtype=np.int64)
    dev_rows = np.asarray(dev_rows, dtype=np.int64)
    dev_gold = gold[dev_rows]
    counts = np.bincount(dev_gold, minlength=int(gold.max()) + 1 if len(gold) else 0)
    present = counts[counts > 0]
    if not candidates or len(present) < 2 or present.min() < 2:
        return None
    folds = int(min(MAX_FOLDS, present.min()))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = np.stack([c.probabilities for c in candidates])  # [candidates, n, classes]
    predictions = probabilities.argmax(axis=2)
    correct = {"best": np.zeros(len(dev_rows), dtype=bool), "ensemble": np.zeros(len(dev_rows), dtype=bool)}
    for chosen_on_dev, held_out in splitter.split(np.zeros(len(dev_rows)), dev_gold):
        rows = np.setdiff1d(np.arange(len(gold)), dev_rows[held_out])
        order, values = _rank(candidates, probabilities[:, rows], predictions[:, rows], gold[rows], objective)
        target = dev_rows[held_out]
        best = order[0] if unlabelled is None else order[
            choose_by_agreement([values[i] for i in order], [unlabelled[i] for i in order], len(rows))]
        correct["best"][held_out] = predictions[best, target] == gold[target]
        members = select_members(list(order), ensemble_size, prompts_per_template, key=lambda i: candidates[i].template)
        fit = fit_weights([probabilities[i, rows] for i in members], gold[rows], seed=seed)
        combined = combine_probabilities([probabilities[i, target] for i in members], fit.weights)
        correct["ensemble"][held_out] = combined.argmax(axis=1) == gold[target]
    chance = float(counts.max() / len(dev_rows))
    return {name: _wilson(hits, folds, chance) for name, hits in correct.items()}


def _rank(candidates: Sequence[Candidate], probabilities: np.ndarray, predictions: np.ndarray, gold: np.ndarray,
          objective: str) -> tuple[list[int], np.ndarray]:
    """Candidate indices in the leaderboard's order (:func:`ranking.ranking_key`) on these rows, and
    each candidate's objective value on them."""
    log_scores = np.log(np.clip(probabilities, 1e-300, None))
    gold_scores = np.take_along_axis(log_scores, gold[None, :, None], axis=2)[..., 0]
    others = log_scores.copy()
    np.put_along_axis(others, gold[None, :, None], -np.inf, axis=2)
    margins = (gold_scores - others.max(axis=2)).mean(axis=1)
    if objective == "accuracy":
        values = (predictions == gold).mean(axis=1)
    else:
        values = np.array([f1_score(gold, row, average="macro", zero_division=0) for row in predictions])
    order = sorted(range(len(candidates)), key=lambda i: ranking_key(float(values[i]), float(margins[i]), candidates[i].template,
                                                                     candidates[i].verbalizer, candidates[i].calibration))
    return order, values


def _wilson(hits: np.ndarray, folds: int, chance: float) -> HeldOutEstimate:
    interval = binomtest(int(hits.sum()), len(hits)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return HeldOutEstimate(float(hits.mean()), float(interval.low), float(interval.high), len(hits), folds, chance)
