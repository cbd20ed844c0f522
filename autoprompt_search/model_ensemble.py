"""Ensembles of models: the ensembles of finished search runs on the same few-shot sample (a search
with SmolLM2-135M and one with Gemma-3-270M, say) combined by a weighted average of their class
probabilities, written as one ``models`` prompt file that :func:`autoprompt_search.load` opens.

Each run's ensemble is loaded from its ``ensemble.json``, as a user would load it, and scored on
the labelled examples that no run shows as a demonstration and on the test split. The parts'
weights are fitted on the former as a run fits its members' (:func:`~autoprompt_search.ensemble.fit_weights`),
with the cross-validation folds drawn from the runs' seed: the uniform average unless the examples
clearly prefer a part. Each part's probabilities there are in-sample (its members were chosen on
those examples), so a run that overfits them more looks better than it is: the uniform average
guards against that unless the evidence is strong.

Output folder (which may also hold the runs themselves, as ``search --models`` writes it)::

    test_predictions.csv   per test example: gold, each part's and the combination's predictions and probabilities
    ensemble.json          the ensemble of models (kind "models"), each part a run's ensemble.json document
    results.json           each part's and the combination's scores, the weights, the runs and provenance (written last)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from autoprompt_search.ensemble import combine_probabilities, fit_weights
from autoprompt_search.errors import UserError
from autoprompt_search.export import checked_models_document
from autoprompt_search.fileio import atomic_write_json, unwritable_reason
from autoprompt_search.predictor import EnsemblePredictor, load
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import ENSEMBLE, MANIFEST, POOLS, PREDICTIONS, RESULTS, RunFolder
from autoprompt_search.scoring import PromptScore, evaluate_scores
from autoprompt_search.spaces import slug
from autoprompt_search.splits import SPLIT_NAMES, RunSplits

Log = Callable[[str], None]
KIND = "models"  # results.json's "kind": what marks a folder as holding an ensemble of models


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunPart:
    """One finished run whose ensemble is a part: its folder, its model as the run recorded it, its
    re-derived splits (hash-checked) and the train rows its templates show as demonstrations."""

    folder: RunFolder
    model: dict[str, Any]
    splits: RunSplits
    shown_train_rows: frozenset[int]


@dataclass(frozen=True)
class ModelEnsembleResult:
    """A written ensemble of models: its folder, the parts' weights and what results.json holds."""

    path: Path
    weights: tuple[float, ...]
    summary: dict[str, Any] = field(repr=False)

    @property
    def test_accuracy(self) -> float:
        return self.summary["ensemble"]["test"]["accuracy"]


def check_output(out: Path, *, replace: bool) -> None:
    """A user error, before anything is scored or written, when ``out`` cannot take an ensemble of
    models: a file or a search run is in the way, it cannot be written, or it already holds a
    combination (or a train output's predictions) and ``replace`` is not given (only an earlier
    ensemble of models is ever replaced)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; give a folder for the ensemble of models")
    if (out / MANIFEST).exists():
        raise UserError(f"{out}: holds a search run ({MANIFEST}); give another folder for the ensemble of models")
    if reason := unwritable_reason(out):
        raise UserError(f"{out}: {reason}")
    present = [name for name in (RESULTS, ENSEMBLE, PREDICTIONS) if (out / name).exists()]
    if not present:
        return
    earlier = RunFolder(out).read_json(RESULTS).get("kind") == KIND if (out / RESULTS).is_file() else False
    if not (replace and earlier):
        raise UserError(f"{out}: already holds {present[0]}; choose another output folder")


def read_parts(runs: Sequence[str | Path], *, space: Any = None, records: Any = None) -> list[RunPart]:
    """The runs to combine, each checked: finished, with an ensemble of its own data, on the same
    train, dev and test examples as the first. ``records``: the examples of runs whose examples were
    given in memory; ``space``: the data to read instead of the runs' own (:meth:`RunFolder.splits`)."""
    if len(runs) < 2:
        raise UserError(f"an ensemble of models needs at least 2 finished runs, got {len(runs)}")
    seen: set[Path] = set()
    for run in runs:
        if (resolved := Path(run).resolve()) in seen:
            raise UserError(f"{run}: the same run is given twice")
        seen.add(resolved)
    parts: list[RunPart] = []
    for run in runs:
        folder = RunFolder(run)
        folder.check_finished()
        manifest = folder.manifest()
        if not folder.file(ENSEMBLE).is_file() or not folder.file(POOLS).is_file():
            missing = ENSEMBLE if not folder.file(ENSEMBLE).is_file() else POOLS
            raise UserError(f"{folder.path}: {missing} missing; the run cannot be a part of an ensemble of models")
        if parts and _hashes(manifest) != _hashes(parts[0].folder.manifest()):
            raise UserError(f"{folder.path}: its train, dev or test examples differ from those of {parts[0].folder.path}; "
                            "an ensemble of models is fitted and scored on one sample: search each model with the same "
                            "dataset, seed and test limit")
        file = folder.prompt_file(folder.file(ENSEMBLE), kinds=("ensemble",))
        if parts and list(file.members[0].spec.labels) != list(parts[0].splits.dev.labels):
            raise UserError(f"{folder.file(ENSEMBLE)}: its labels {list(file.members[0].spec.labels)} differ from "
                            f"{parts[0].folder.path}'s {list(parts[0].splits.dev.labels)}")
        pools, _ = folder.read_pools()
        parts.append(RunPart(folder, manifest.get("model") or {"name": str(folder.path)}, folder.splits(records, space),
                             frozenset(pools.held_out_train_rows)))
    return parts


def _hashes(manifest: dict[str, Any]) -> dict[str, str | None]:
    splits = manifest["dataset"]["splits"]
    return {name: (splits.get(name) or {}).get("content_hash") for name in SPLIT_NAMES}


def combine_runs(runs: Sequence[str | Path], out: str | Path, *, device: str = "auto", cache: bool = True, replace: bool = False,
                 space: Any = None, records: Any = None, log: Log = _stderr) -> ModelEnsembleResult:
    """Combine the ensembles of ``runs`` (finished run folders on the same few-shot sample) into an
    ensemble of models in ``out``; ``replace`` lets it overwrite an earlier ensemble of models there.
    ``space``/``records``: see :func:`read_parts`."""
    began = time.perf_counter()
    out = Path(out)
    check_output(out, replace=replace)
    parts = read_parts(runs, space=space, records=records)
    splits = parts[0].splits
    shown = frozenset().union(*(part.shown_train_rows for part in parts))
    scored = [e for row, e in enumerate(splits.train.examples) if row not in shown] + list(splits.dev.examples)
    labels = list(splits.dev.labels)
    gold = [labels.index(e.label) for e in scored]
    test_gold = [labels.index(e.label) for e in splits.test.examples]
    selection, test, documents = [], [], []
    for part in parts:
        name = part.model.get("name", str(part.folder.path))
        log(f"{name}: its ensemble on {len(scored)} train+dev and {len(splits.test)} test examples")
        predictor = load(part.folder.file(ENSEMBLE), device=device, cache=cache)
        selection.append(predictor.predict_proba([e.fields for e in scored]))
        test.append(_with_progress(predictor, [e.fields for e in splits.test.examples], f"test {name}"))
        documents.append(predictor.file.document)
        del predictor  # one model in memory at a time
    fit = fit_weights(selection, gold, seed=splits.seed)
    combined_selection, combined_test = (_score(combine_probabilities(p, fit.weights), g)
                                         for p, g in ((selection, gold), (test, test_gold)))
    provenance = stamp()
    dataset = {"name": splits.dev.name, **splits.describe()}
    part_rows = [{"run": str(part.folder.path.resolve()), "model": part.model, "weight": weight,
                  "train_dev": _score(p, gold).summary(), "test": _score(t, test_gold).summary()}
                 for part, weight, p, t in zip(parts, fit.weights, selection, test)]
    scores = {"train_dev": combined_selection.summary(), "test": combined_test.summary()}
    document = checked_models_document(out / ENSEMBLE, [(d, row) for d, row in zip(documents, part_rows)], scores=scores,
                                       weights_fit=fit.to_dict(), dataset=dataset, provenance=provenance)
    columns = _columns([part.model.get("name", "") for part in parts])
    predictions = {column: _score(t, test_gold) for column, t in zip(columns, test)} | {"ensemble": combined_test}
    summary = {"kind": KIND, "parts": [{"column": c, **row} for c, row in zip(columns, part_rows)],
               "ensemble": {**scores, "weights": list(fit.weights), "weights_fit": fit.to_dict(),
                            "train_dev_note": "the parts' ensembles and their weights were chosen on these examples: they flatter"},
               "scored_train_dev_rows": len(scored), "dataset": dataset,
               "timings": {"total_seconds": time.perf_counter() - began}, "provenance": provenance}
    folder = RunFolder(out)
    folder.create()
    # results.json last: an ensemble of models is complete (and replaceable) once it is there.
    folder.write_predictions(splits.test, test_gold, predictions)
    atomic_write_json(out / ENSEMBLE, document)
    folder.write_json(RESULTS, summary)
    return ModelEnsembleResult(out, fit.weights, summary)


def _with_progress(predictor: EnsemblePredictor, texts: list[dict[str, str]], desc: str) -> np.ndarray:
    """The predictor's probabilities on ``texts``, with a bar of examples per second and time left."""
    with predictor.members[0].scorer.progress_bar(len(texts) * len(predictor.passes()), desc):
        return predictor.predict_proba(texts)


def _score(probabilities: np.ndarray, gold: Sequence[int]) -> PromptScore:
    return evaluate_scores(torch.log(torch.from_numpy(np.asarray(probabilities, dtype=np.float64))), gold)


def _columns(names: Sequence[str]) -> list[str]:
    """test_predictions.csv's column of each part: ``part<i>_<model slug>`` (never "ensemble", never twice)."""
    return [f"part{index}_{slug(Path(name).name or name) or 'model'}" for index, name in enumerate(names, 1)]
