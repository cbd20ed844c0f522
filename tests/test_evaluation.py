"""``evaluate_prompt``, the Python form of ``autoprompt-search evaluate``: its sample and its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoprompt_search.cache import SlotCache
from autoprompt_search.errors import UserError
from autoprompt_search.evaluation import evaluate_prompt
from autoprompt_search.testing import write_tiny_dataset

TEMPLATE, WORDS = "{text} It was {mask}", {"negative": ["bad"], "positive": ["good"]}


def test_numpy_numbers_sample_as_python_numbers_do_and_the_report_is_json(tmp_path: Path, tiny_causal_lm: Path) -> None:
    data = write_tiny_dataset(tmp_path / "tiny.csv", copies=2)
    cache = SlotCache(tmp_path / "cache")
    plain = evaluate_prompt(str(data), str(tiny_causal_lm), TEMPLATE, WORDS, split="all", limit=6, seed=3, cache=cache)
    drawn = evaluate_prompt(str(data), str(tiny_causal_lm), TEMPLATE, WORDS, split="all", limit=np.int64(6), seed=np.uint8(3),
                            cache=cache)
    assert json.loads(json.dumps(drawn.report))["dataset"] == plain.report["dataset"]
    assert plain.report["dataset"]["n"] == 6 and drawn.report["accuracy"] == plain.report["accuracy"]


@pytest.mark.parametrize(("options", "message"), [
    ({"limit": 0}, "limit must be a whole number of at least 1, got 0"),
    ({"limit": 2, "seed": -1}, r"seed must be a whole number from 0 to 2\*\*32 - 1, got -1"),
])
def test_bad_numbers_are_refused_by_name(tmp_path: Path, tiny_causal_lm: Path, options: dict, message: str) -> None:
    data = write_tiny_dataset(tmp_path / "tiny.csv")
    with pytest.raises(UserError, match=message):
        evaluate_prompt(str(data), str(tiny_causal_lm), TEMPLATE, WORDS, split="all", cache=SlotCache(tmp_path / "cache"), **options)
