"""Score one prompt on a dataset split: the Python form of ``autoprompt-search evaluate``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from autoprompt_search import data as data_module
from autoprompt_search.arguments import whole_number
from autoprompt_search.backends import Backend, load_backend
from autoprompt_search.cache import SlotCache, default_cache_dir
from autoprompt_search.data import Dataset
from autoprompt_search.provenance import stamp
from autoprompt_search.scoring import PromptScore, PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer


@dataclass
class EvaluationResult:
    score: PromptScore
    report: dict[str, Any] = field(default_factory=dict)


def evaluate_prompt(
    dataset: str | Dataset,
    model: str | Backend,
    template: str,
    verbalizer: str | Mapping[str, Any],
    *,
    calibrate: str = "none",
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    cache: SlotCache | None = None,
    data_options: Mapping[str, Any] | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """Score ``template`` + ``verbalizer`` on a dataset split with a frozen model.

    ``dataset`` is a registered name, a file path or a loaded :class:`Dataset`; ``model`` a
    registered name, a local folder or a loaded backend. ``prior`` calibration subtracts each
    class's mean log-score over the evaluated texts (no labels used).
    """
    began = time.perf_counter()
    seed, limit = data_module.checked_seed(seed), None if limit is None else whole_number(limit, "limit", 1)
    examples = dataset if isinstance(dataset, Dataset) else data_module.load_split(dataset, split, **(data_options or {}))
    if limit is not None:
        examples = data_module.sample(examples, limit, seed)
    parsed_template = Template.parse(template, fields=examples.fields)
    parsed_verbalizer = Verbalizer.parse(verbalizer, examples.labels)
    backend = model if isinstance(model, Backend) else load_backend(model, **(model_options or {}))
    loaded = time.perf_counter()
    scorer = PromptScorer(backend, cache if cache is not None else SlotCache(default_cache_dir()))
    passes_before, forward_before = backend.forward_passes, backend.forward_seconds
    prepared = scorer.prepare(parsed_template, [example.fields for example in examples.examples])
    gold = [examples.labels.index(example.label) for example in examples.examples]
    score = scorer.score(prepared, parsed_verbalizer, gold, calibration=calibrate)
    finished = time.perf_counter()
    report = {
        **score.summary(),
        "template": parsed_template.source,
        "verbalizer": parsed_verbalizer.to_dict(),
        "calibration": score.calibration.to_dict(),
        "labels": list(examples.labels),
        "dataset": {"name": examples.name, "split": split, "n": len(examples), "content_hash": examples.content_hash(),
                    "limit": limit, "seed": seed},
        "model": {"name": str(model) if not isinstance(model, Backend) else str(backend.path), "path": str(backend.path),
                  "kind": backend.kind, "weights_sha256": backend.weights_hash, "precision": backend.precision},
        "timing": {"load_seconds": loaded - began, "score_seconds": finished - loaded,
                   "forward_seconds": backend.forward_seconds - forward_before,
                   "examples_per_second": len(examples) / max(finished - loaded, 1e-9)},
        "forward_passes": backend.forward_passes - passes_before,
        "cache": {"hits": scorer.cache.hits, "misses": scorer.cache.misses},
        "provenance": stamp(),
    }
    return EvaluationResult(score, report)
