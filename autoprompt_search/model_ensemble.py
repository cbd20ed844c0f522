"""Ensembles of models: the ensembles of finished search runs on the same few-shot sample (a search
with SmolLM2-135M and one with Gemma-3-270M, say), and models trained from such runs (``train``'s
prompt methods), combined by a weighted average of their class probabilities, written as one
``models`` prompt file that :func:`autoprompt_search.load` opens.

Each part is loaded as a user would load it (a run's ``ensemble.json``, a train output's
``prompt.json``) and scored on the labelled examples that no part has seen and on the test split.
Frozen runs' weights are fitted on the former as a run fits its members'
(:func:`~autoprompt_search.ensemble.fit_weights`), with the cross-validation folds drawn from the
runs' seed: the uniform average unless the examples clearly prefer a part. Each part's
probabilities there are in-sample (its members were chosen on those examples), so a run that
overfits them more looks better than it is: the uniform average guards against that unless the
evidence is strong. A trained part has learned the train split and chose its epoch on dev, so with
one in the combination nothing is left to fit weights on: the average is uniform.

A trained part's model or adapter is named in ``ensemble.json`` relative to it, so a train output
must lie inside the output folder (``train RUN --out OUT/smollm2-full``, then ``combine ... --out OUT``),
which then moves as one piece.

Output folder (which may also hold the runs themselves, as ``search --models`` writes it, and the train outputs)::

    test_predictions.csv   per test example: gold, each part's and the combination's predictions and probabilities
    ensemble.json          the ensemble of models (kind "models"), each part a run's ensemble.json or a trained prompt.json
    results.json           each part's and the combination's scores, the weights, the parts and provenance (written last)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from autoprompt_search.ensemble import combine_probabilities, fit_weights
from autoprompt_search.errors import UserError
from autoprompt_search.export import checked_models_document
from autoprompt_search.fileio import atomic_write_json, unwritable_reason
from autoprompt_search.logs import Log, to_stderr
from autoprompt_search.predictor import CHECKPOINT, TRAINED_CLASSIFIER, TRAINED_PROMPT, TRAINING, EnsemblePredictor, PromptPredictor, load
from autoprompt_search.prompt_file import PromptFile
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import ENSEMBLE, MANIFEST, POOLS, PREDICTIONS, RESULTS, RunFolder
from autoprompt_search.scoring import PromptScore, evaluate_scores
from autoprompt_search.spaces import slug
from autoprompt_search.splits import SPLIT_NAMES, RunSplits

KIND = "models"  # results.json's "kind": what marks a folder as holding an ensemble of models
TRAIN_OUTPUT_NAMES = (TRAINING, TRAINED_PROMPT, TRAINED_CLASSIFIER, CHECKPOINT)  # what marks a train output, finished or not


@dataclass(frozen=True)
class RunPart:
    """One part: a finished run (its ensemble) or a train output (its trained prompt) started from one.
    ``folder`` is the search run, its model as the run recorded it, its re-derived splits
    (hash-checked) and the train rows the part has seen (as demonstrations, or all of them, trained on)."""

    folder: RunFolder
    model: dict[str, Any]
    splits: RunSplits
    shown_train_rows: frozenset[int]
    trained: Path | None = None  # the train output folder of a trained part

    @property
    def prompt_path(self) -> Path:
        return self.trained / TRAINED_PROMPT if self.trained is not None else self.folder.file(ENSEMBLE)

    @property
    def where(self) -> Path:
        return self.trained if self.trained is not None else self.folder.path


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


def read_parts(runs: Sequence[str | Path], *, out: str | Path | None = None, space: Any = None,
               records: Any = None) -> list[RunPart]:
    """The parts to combine, each checked: a finished run with an ensemble, or a finished train output
    of a prompt method inside ``out``; all on the same train, dev and test examples as the first.
    ``records``: the examples of runs whose examples were given in memory; ``space``: the data to read
    instead of the runs' own (:meth:`RunFolder.splits`)."""
    if len(runs) < 2:
        raise UserError(f"an ensemble of models needs at least 2 finished runs or train outputs, got {len(runs)}")
    seen: set[Path] = set()
    for run in runs:
        if (resolved := Path(run).resolve()) in seen:
            raise UserError(f"{run}: the same run is given twice")
        seen.add(resolved)
    parts: list[RunPart] = []
    first_labels: list[str] = []
    for run in runs:
        trained = Path(run) if any((Path(run) / name).exists() for name in TRAIN_OUTPUT_NAMES) else None
        folder, model = _trained_source(trained, out) if trained else _finished_run(Path(run))
        where = trained or folder.path
        if parts and _hashes(folder.manifest()) != _hashes(parts[0].folder.manifest()):  # before the data are read again
            raise UserError(f"{where}: its train, dev or test examples differ from those of {parts[0].where}; "
                            "an ensemble of models is fitted and scored on one sample: search each model with the same "
                            "dataset, seed and test limit")
        splits = folder.splits(records, space)
        shown = range(len(splits.train)) if trained else folder.read_pools()[0].held_out_train_rows  # trained on, or demonstrations
        part = RunPart(folder, model, splits, frozenset(shown), trained=trained)
        file = folder.prompt_file(part.prompt_path, kinds=("single",) if trained else ("ensemble",))  # on its run's splits
        if trained:
            _check_trained_weights(trained, file)
        labels = list(file.members[0].spec.labels)  # the order of the probabilities' columns
        if parts and labels != first_labels:
            raise UserError(f"{part.prompt_path}: its labels {labels} differ from {parts[0].prompt_path}'s {first_labels}")
        parts.append(part)
        first_labels = first_labels or labels
    return parts


def _finished_run(path: Path) -> tuple[RunFolder, dict[str, Any]]:
    """A finished run with an ensemble, and its model as it recorded it."""
    folder = RunFolder(path)
    folder.check_finished()
    if not folder.file(ENSEMBLE).is_file() or not folder.file(POOLS).is_file():
        missing = ENSEMBLE if not folder.file(ENSEMBLE).is_file() else POOLS
        raise UserError(f"{folder.path}: {missing} missing; the run cannot be a part of an ensemble of models")
    return folder, folder.manifest().get("model") or {"name": str(folder.path)}


def _trained_source(path: Path, out: str | Path | None) -> tuple[RunFolder, dict[str, Any]]:
    """The run a train output (a prompt method's, inside ``out``, its weights beside it) started from,
    which must still be there, and the model as that run recorded it, marked as trained."""
    if (path / TRAINED_CLASSIFIER).is_file():
        raise UserError(f"{path}: a classification-head model has no prompt; an ensemble of models takes the outputs of "
                        "train's prompt methods (full, lora, soft)")
    if not (path / TRAINING).is_file():
        raise UserError(f"{path}: a train output that has not finished ({TRAINING} missing): finish it with train --resume")
    if not (path / TRAINED_PROMPT).is_file():
        raise UserError(f"{path}: {TRAINED_PROMPT} missing; the train output cannot be a part of an ensemble of models")
    if out is None or not path.resolve().is_relative_to(Path(out).resolve()):
        raise UserError(f"{path}: a trained part must lie inside the output folder{f' {out}' if out is not None else ''}, "
                        "whose ensemble.json names its model relative to itself: train into it "
                        "(train RUN --out OUT/NAME) or move the train output there")
    training = RunFolder(path).read_json(TRAINING)
    source, relative = _recorded_source(path, training)
    folder = RunFolder(source if not source.is_file() else source.parent)  # a run folder, or a prompt file in one
    try:
        folder.check_finished()
    except UserError as error:
        tried = "" if source.exists() else (f"; nor is it at {relative} seen from the train output" if relative else
                                            "; this train output records no path from itself to it (an older one): put the run back there")
        raise UserError(f"{path / TRAINING}: options.source.path: the run the model was trained from is needed for its "
                        f"examples ({error}){tried}") from None
    model = folder.manifest().get("model") or {"name": str(folder.path)}
    if (trained_on := training["options"].get("model")) and model.get("weights_sha256") not in (None, trained_on):
        raise UserError(f"{path / TRAINING}: options.source.path: {folder.path} is a run of another model "
                        f"(weights {model.get('weights_sha256')}, the output was trained on {trained_on})")
    inside = path.resolve().relative_to(Path(out).resolve()).as_posix()
    return folder, {**model, "trained": {"method": training.get("method"), "output": inside}}


def _recorded_source(path: Path, training: dict[str, Any]) -> tuple[Path, str | None]:
    """The source a train output records: its absolute path, or, where that is gone (the tree moved
    or was copied to another machine), its path seen from the output, if that leads somewhere; and
    that relative path (None in outputs written before it was recorded)."""
    options = training.get("options")
    source = options.get("source") if isinstance(options, dict) else None
    recorded = source.get("path") if isinstance(source, dict) else None
    if not isinstance(recorded, str) or not recorded:
        raise UserError(f"{path / TRAINING}: options.source.path: the run the model was trained from is not recorded")
    described = training.get("source")
    relative = described.get("path_from_output") if isinstance(described, dict) else None
    relative = relative if isinstance(relative, str) and relative else None
    if not Path(recorded).exists() and relative and (path / relative).exists():
        return (path / relative).resolve(), relative
    return Path(recorded), relative


def _check_trained_weights(path: Path, file: PromptFile) -> None:
    """A user error when the model or adapter folder that a train output's prompt file names beside it is gone."""
    for name, value in (("model.path", file.model.path), ("model.adapter.path", file.model.adapter and file.model.adapter.path)):
        if value and not Path(value).is_absolute() and not (path / value).is_dir():
            raise UserError(f"{path / TRAINED_PROMPT}: {name}: the trained weights' folder {path / value} is missing "
                            "(an output written without them, or moved without them)")


def _hashes(manifest: dict[str, Any]) -> dict[str, str | None]:
    splits = manifest["dataset"]["splits"]
    return {name: (splits.get(name) or {}).get("content_hash") for name in SPLIT_NAMES}


def combine_runs(runs: Sequence[str | Path], out: str | Path, *, device: str = "auto", cache: bool = True, replace: bool = False,
                 space: Any = None, records: Any = None, log: Log = to_stderr) -> ModelEnsembleResult:
    """Combine the ensembles of ``runs`` (finished run folders on the same few-shot sample, or train
    outputs inside ``out`` started from such runs) into an ensemble of models in ``out``; ``replace``
    lets it overwrite an earlier ensemble of models there. ``space``/``records``: see :func:`read_parts`."""
    began = time.perf_counter()
    out = Path(out)
    check_output(out, replace=replace)
    parts = read_parts(runs, out=out, space=space, records=records)
    splits = parts[0].splits
    shown = frozenset().union(*(part.shown_train_rows for part in parts))
    scored = [e for row, e in enumerate(splits.train.examples) if row not in shown] + list(splits.dev.examples)
    labels = list(splits.dev.labels)
    gold = [labels.index(e.label) for e in scored]
    test_gold = [labels.index(e.label) for e in splits.test.examples]
    selection, test, documents = [], [], []
    for part in parts:
        name = part.model.get("name", str(part.where))
        log(f"{name}{' (trained)' if part.trained else ''}: on {len(scored)} train+dev and {len(splits.test)} test examples")
        predictor = load(part.prompt_path, device=device, cache=cache)
        selection.append(predictor.predict_proba([e.fields for e in scored]))
        test.append(_with_progress(predictor, [e.fields for e in splits.test.examples], f"test {name}"))
        documents.append(_relative_to_out(part, predictor.file.document))
        del predictor  # one model in memory at a time
    fit = _weights(parts, selection, gold, splits.seed)
    combined_selection, combined_test = (_score(combine_probabilities(p, fit["weights"]), g)
                                         for p, g in ((selection, gold), (test, test_gold)))
    provenance = stamp()
    dataset = {"name": splits.dev.name, **splits.describe()}
    part_rows = [{"run": str(part.folder.path.resolve()), "model": part.model, "weight": weight,
                  "train_dev": _score(p, gold).summary(), "test": _score(t, test_gold).summary()}
                 for part, weight, p, t in zip(parts, fit["weights"], selection, test)]
    scores = {"train_dev": combined_selection.summary(), "test": combined_test.summary()}
    document = checked_models_document(out / ENSEMBLE, [(d, row) for d, row in zip(documents, part_rows)], scores=scores,
                                       weights_fit=fit, dataset=dataset, provenance=provenance)
    columns = _columns([part.model.get("name", "") for part in parts])
    predictions = {column: _score(t, test_gold) for column, t in zip(columns, test)} | {"ensemble": combined_test}
    in_sample = ("a trained part learned these examples or chose its epoch on them: the figures here flatter"
                 if any(part.trained for part in parts)
                 else "the parts' ensembles and their weights were chosen on these examples: they flatter")
    summary = {"kind": KIND, "parts": [{"column": c, **row} for c, row in zip(columns, part_rows)],
               "ensemble": {**scores, "weights": list(fit["weights"]), "weights_fit": fit,
                            "train_dev_note": in_sample},
               "scored_train_dev_rows": len(scored), "dataset": dataset,
               "timings": {"total_seconds": time.perf_counter() - began}, "provenance": provenance}
    folder = RunFolder(out)
    folder.create()
    # results.json last: an ensemble of models is complete (and replaceable) once it is there.
    folder.write_predictions(splits.test, test_gold, predictions)
    atomic_write_json(out / ENSEMBLE, document)
    folder.write_json(RESULTS, summary)
    return ModelEnsembleResult(out, tuple(fit["weights"]), summary)


def _weights(parts: Sequence[RunPart], selection: list[np.ndarray], gold: Sequence[int], seed: int) -> dict[str, Any]:
    """The parts' weights and how they were set: fitted on the unseen train+dev examples, or uniform
    when a trained part has learned them (its probabilities there say nothing of unseen text)."""
    if trained := [part.model["trained"]["output"] for part in parts if part.trained is not None]:
        return {"method": "uniform: a trained part learned the train examples and chose its epoch on dev, "
                          "so no labelled example is left to fit weights on", "weights": [1.0 / len(parts)] * len(parts),
                "trained_parts": trained}
    return fit_weights(selection, gold, seed=seed).to_dict()


def _relative_to_out(part: RunPart, document: dict[str, Any]) -> dict[str, Any]:
    """A trained part's document with its model and adapter folders named relative to ``out`` (where
    ensemble.json is written) instead of to the train output; a run's ensemble as it is."""
    if part.trained is None:
        return document
    moved = Path(part.model["trained"]["output"])  # the train output's folder, relative to out
    model = dict(document["model"])
    if model.get("path") and not Path(model["path"]).is_absolute():
        model["path"] = (moved / model["path"]).as_posix()
    if isinstance(model.get("adapter"), dict):
        model["adapter"] = {**model["adapter"], "path": (moved / model["adapter"]["path"]).as_posix()}
    return {**document, "model": model}


def _with_progress(predictor: PromptPredictor | EnsemblePredictor, texts: list[dict[str, str]], desc: str) -> np.ndarray:
    """The predictor's probabilities on ``texts``, with a bar of examples per second and time left."""
    passes = len(predictor.passes()) if isinstance(predictor, EnsemblePredictor) else 1
    scorer = predictor.members[0].scorer if isinstance(predictor, EnsemblePredictor) else predictor.scorer
    with scorer.progress_bar(len(texts) * passes, desc):
        return predictor.predict_proba(texts)


def _score(probabilities: np.ndarray, gold: Sequence[int]) -> PromptScore:
    return evaluate_scores(torch.log(torch.from_numpy(np.asarray(probabilities, dtype=np.float64))), gold)


def _columns(names: Sequence[str]) -> list[str]:
    """test_predictions.csv's column of each part: ``part<i>_<model slug>`` (never "ensemble", never twice)."""
    return [f"part{index}_{slug(Path(name).name or name) or 'model'}" for index, name in enumerate(names, 1)]
