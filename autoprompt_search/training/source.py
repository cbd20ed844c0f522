"""What a training run starts from: a search's run folder or one of its prompt files, read into the
prompt to train, the model it was found on, and the run's own splits (re-derived and hash-checked)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoprompt_search.arguments import whole_number
from autoprompt_search.calibration import Calibration
from autoprompt_search.errors import UserError
from autoprompt_search.prompt import ModelInfo, PromptSpec
from autoprompt_search.prompt_file import PromptFile
from autoprompt_search.run_folder import BEST, ENSEMBLE, MANIFEST, RunFolder
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
    held_out_estimate: float | None = None  # the search's held-out estimate for its best prompt, where it made one


def read_source(source: str | Path, start: str = "best", *, member: int | None = None, records: Any = None,
                space: Any = None) -> TrainSource:
    """A run folder (its ``best.json``, or its best manual prompt with ``start="manual"``) or a
    prompt/ensemble JSON inside a run folder (an ensemble gives its member of largest weight).
    ``member``: the ensemble's N-th distinct prompt in the search's ranking (1 is its top prompt; see
    :func:`_pick`); with a run folder, of the folder's ``ensemble.json``."""
    path = Path(source)
    if start not in STARTS:
        raise UserError(f"unknown start {start!r}; choose one of {', '.join(STARTS)}", option="start")
    if member is not None and start != "best":
        raise UserError("member picks a searched prompt, not the manual start", option="member")
    member = None if member is None else whole_number(member, "member", 1)
    if not path.exists():
        raise UserError(f"{path}: no such run folder or prompt file")
    folder = RunFolder(path if path.is_dir() else path.parent)
    if not folder.file(MANIFEST).is_file():
        where = "is not a run folder" if path.is_dir() else "does not sit in its run folder"
        raise UserError(f"{path}: {where} ({MANIFEST} missing): training uses the run's own few-shot split, "
                        "so it starts from a search's run folder or a prompt file inside one")
    folder.check_finished()
    prompt_path = path if not path.is_dir() else folder.file(ENSEMBLE if member is not None else BEST)
    if member is not None and not prompt_path.is_file():
        raise UserError(f"{folder.path}: {ENSEMBLE} missing; member picks a prompt of the run's ensemble", option="member")
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
        index, which = _pick(file, prompt_path, member)
        spec = file.members[index].spec
        scores = (file.document.get("scores") if file.kind == "single" else file.document["members"][index].get("scores")) or {}
        frozen, estimate = scores.get("test", {}), _chosen_prompt_estimate(folder, file)
        described = {"start": "best" if file.kind == "single" else which}
    splits = folder.splits(records, space)
    return TrainSource(replace(spec, calibration=Calibration()),  # training fits the class bias itself
                       {**described, "path": str(path.resolve()), "prompt_file": str(prompt_path), "template": spec.template.source,
                        "verbalizer": spec.verbalizer, "calibration_dropped": spec.calibration.method},
                       file.model, splits, folder, manual,
                       {"source_prompt_test": frozen, "ensemble_test": (results.get("ensemble") or {}).get("test")},
                       estimate)


def _pick(file: PromptFile, path: Path, member: int | None) -> tuple[int, str]:
    """The index of the member to train and how the output describes it. With ``member``: the N-th
    distinct prompt in the file's order (the search's ranking), members that differ only in
    calibration or in the order of a label's words counting as one (:func:`_as_trained`); without:
    the member of largest weight (a single prompt file's one prompt)."""
    if member is None:
        index = max(range(len(file.members)), key=lambda i: file.members[i].weight)
        return index, f"ensemble member of largest weight ({file.members[index].where})"  # as before --member: resumes match
    if file.kind != "ensemble":
        raise UserError(f"{path}: holds a single prompt; member picks a prompt of an ensemble file", option="member")
    prompts = [_as_trained(candidate.spec) for candidate in file.members]
    distinct = [index for index, prompt in enumerate(prompts) if prompt not in prompts[:index]]
    if member > len(distinct):
        raise UserError(f"{path}: choose a member from 1 to {len(distinct)}: the ensemble's {len(file.members)} members are "
                        f"{len(distinct)} distinct prompt(s) once calibration (which training drops) and the order of "
                        "a label's words are set aside",
                        option="member")
    index = distinct[member - 1]
    return index, f"ensemble prompt {member} of {len(distinct)} distinct, asked for ({file.members[index].where})"


def _as_trained(spec: PromptSpec) -> tuple[str, tuple[int, ...], tuple[frozenset[str], ...]]:
    """What training sees of a prompt, for telling prompts apart: its template, trigger tokens and each
    label's set of words (the calibration is dropped, and a label's words are averaged, so their order
    does not matter)."""
    template, verbalizer = spec.parsed()
    return template.source, spec.trigger_ids, tuple(frozenset(words) for words in verbalizer.words)


def _chosen_prompt_estimate(folder: RunFolder, file: PromptFile) -> float | None:
    """The search's held-out estimate for its best prompt (a single prompt file's own, else
    ``best.json``'s ``scores.estimate``): the ceiling for epoch 0 of every prompt the search chose
    on these dev examples, ensemble members included, which have no estimate of their own."""
    document = file.document if file.kind == "single" else (folder.read_json(BEST) if folder.file(BEST).is_file() else {})
    accuracy = ((document.get("scores") or {}).get("estimate") or {}).get("accuracy")
    return float(accuracy) if isinstance(accuracy, (int, float)) else None


def _spec_of_entry(entry: dict[str, Any], like: PromptSpec) -> PromptSpec:
    """A results.json entry (template and verbalizer) as a prompt on the run's labels and fields."""
    return PromptSpec(Template.parse(entry["template"], fields=like.fields), entry["verbalizer"], like.labels, like.fields)
