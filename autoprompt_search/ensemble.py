"""Ensembles of prompts: pick the top distinct prompts and combine their class probabilities
by a weighted average, with weights fitted on dev under a guard against overfitting."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def combine_probabilities(probabilities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted average ``[n, classes]`` of the members' calibrated class probabilities."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])
    w = np.asarray(weights, dtype=np.float64)
    if stacked.shape[0] != w.shape[0] or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative, not all zero, one per member")
    return np.tensordot(w / w.sum(), stacked, axes=1)
