"""The leaderboard's order and its rows: no Optuna, no torch, so reports and benchmarks can rank
the trials of a finished run without loading either."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from autoprompt_search.calibration import Calibration
from autoprompt_search.templates import Template


def ranking_key(objective: float, mean_margin: float, template: str, verbalizer: dict[str, list[str]], calibration: str) -> tuple:
    """The leaderboard's order: objective, then mean margin, then the prompt's text (never trial order)."""
    return (-objective, -mean_margin, template, json.dumps(verbalizer), calibration)


@dataclass(frozen=True)
class TrialResult:
    """A finished trial as the leaderboard sees it."""

    number: int
    objective: float
    accuracy: float
    macro_f1: float
    mean_margin: float
    template: Template
    verbalizer: dict[str, list[str]]
    calibration: Calibration
    manual: bool
    params: dict[str, Any] = field(default_factory=dict)
    dev_accuracy: float = float("nan")

