"""What a training run starts from: a search's run folder or one of its prompt files, read into the
prompt to train, the model it was found on, and the run's own splits (re-derived and hash-checked)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoprompt_search.calibration import Calibration
from autoprompt_search.errors import UserError
from autoprompt_search.prompt import ModelInfo, PromptSpec
from autoprompt_search.run_folder import BEST, MANIFEST, RunFolder
from autoprompt_search.splits import RunSplits
from autoprompt_search.templates import Template

STARTS = ("best", "manual")  # the run's best prompt, or its best manual (seed) prompt


@dataclass(frozen=True)
class TrainSource:
    """The prompt to train (calibration dropped: training fits the class bias itself), where it
    came from, the model and the run's train, dev and test splits."""

    spec: PromptSpec
    described: dict[str, Any]  # what the output records about the source
    model: ModelInfo
    splits: RunSplits
    folder: RunFolder
    manual_spec: PromptSpec | None  # the run's best manual prompt, for initialising a soft prompt from its text
    frozen_scores: dict[str, Any]  # the frozen source prompt's and ensemble's test scores, as the search reported them
    held_out_estimate: float | None = None  # the search's held-out estimate of the prompt's accuracy, where it made one


def read_source(source: str | Path, start: str = "best", *, records: Any = None, space: Any = None) -> TrainSource:
    """A run folder (its ``best.json``, or its best manual prompt with ``start="manual"``) or a
    prompt/ensemble JSON inside a run folder (an ensemble gives its member of largest weight)."""
    path = Path(source)
    if start not in STARTS:
        raise UserError(f"unknown start {start!r}; choose one of {', '.join(STARTS)}", option="start")
    if not path.exists():
        raise UserError(f"{path}: no such run folder or prompt file")
    folder = RunFolder(path if path.is_dir() else path.parent)
    if not folder.file(MANIFEST).is_file():
        where = "is not a run folder" if path.is_dir() else "does not sit in its run folder"
        raise UserError(f"{path}: {where} ({MANIFEST} missing): training uses the run's own few-shot split, "
                        "so it starts from a search's run folder or a prompt file inside one")
    folder.check_finished()
    prompt_path = folder.file(BEST) if path.is_dir() else path
    file = folder.prompt_file(prompt_path, kinds=("single", "ensemble"))  # an ensemble of models has no one model to train
    results = folder.results()
    manual_entry = results.get("best_manual")
    manual = _spec_of_entry(manual_entry, file.members[0].spec) if manual_entry else None
    if start == "manual":
        if manual is None:
            raise UserError(f"{folder.path}: the run has no manual prompt to start from", option="start")
        spec, frozen, described = manual, manual_entry["test"], {"start": "manual", "trial": manual_entry["trial"]}
        estimate = None
    else:
        member = max(file.members, key=lambda m: m.weight)
        spec = member.spec
        scores = (file.document.get("scores") if file.kind == "single" else member_scores(file, member)) or {}
        frozen, estimate = scores.get("test", {}), (scores.get("estimate") or {}).get("accuracy")
        described = {"start": "best" if file.kind == "single" else f"ensemble member of largest weight ({member.where})"}
    splits = folder.splits(records, space)
    return TrainSource(replace(spec, calibration=Calibration()),
                       {**described, "path": str(path.resolve()), "prompt_file": str(prompt_path), "template": spec.template.source,
                        "verbalizer": spec.verbalizer, "calibration_dropped": spec.calibration.method},
                       file.model, splits, folder, manual,
                       {"source_prompt_test": frozen, "ensemble_test": (results.get("ensemble") or {}).get("test")},
                       float(estimate) if isinstance(estimate, (int, float)) else None)


def member_scores(file, member) -> dict[str, Any] | None:
    """The scores an ensemble file recorded for one member."""
    index = file.members.index(member)
    return file.document["members"][index].get("scores")


def _spec_of_entry(entry: dict[str, Any], like: PromptSpec) -> PromptSpec:
    """A results.json entry (template and verbalizer) as a prompt on the run's labels and fields."""
    return PromptSpec(Template.parse(entry["template"], fields=like.fields), entry["verbalizer"], like.labels, like.fields)
