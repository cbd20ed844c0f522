"""Calibration of a prompt's class scores: the methods and the fitted correction, without torch
at import time (spaces, exports and reports name calibrations without loading a model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

CalibrationMethod = Literal["none", "contextual", "prior"]
CALIBRATION_METHODS: tuple[str, ...] = ("none", "contextual", "prior")


@dataclass(frozen=True)
class Calibration:
    """A per-class log-space correction applied to the class scores of a prompt."""

    method: CalibrationMethod = "none"
    bias: tuple[float, ...] = ()

    def apply(self, raw_scores: torch.Tensor) -> torch.Tensor:
        """Calibrated class log-scores; their softmax is the class probability."""
        import torch

        if self.method == "prior":
            return raw_scores - torch.tensor(self.bias, dtype=raw_scores.dtype)
        normalized = torch.log_softmax(raw_scores, dim=1)
        if self.method == "contextual":
            return normalized - torch.tensor(self.bias, dtype=raw_scores.dtype)
        return normalized

    @classmethod
    def prior_from(cls, raw_scores: torch.Tensor) -> Calibration:
        """``prior``: the mean raw class scores of unlabelled prompts ``[texts, classes]``; no label is read."""
        return cls("prior", tuple(float(v) for v in raw_scores.mean(dim=0)))

    def to_dict(self) -> dict:
        return {"method": self.method, "bias": list(self.bias)}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(data.get("method", "none"), tuple(data.get("bias", ())))
