"""Prompt files, written: found prompts as versioned JSON, with ready forms for OpenPrompt and PEFT.

A prompt file (``best.json``) holds all that is needed to apply a prompt again: template,
verbalizer, the fixed calibration, trigger tokens, the model's weight hash and the batching
the search scored with. Reading it back is :mod:`prompt_file`'s job, predicting :mod:`predictor`'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from autoprompt_search.asset_registry import MODELS
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.prompt import ModelInfo, PromptSpec
from autoprompt_search.prompt_file import (
    BASE_FORMAT_VERSION,
    FORMAT,
    MODELS_FORMAT_VERSION,
    TRAINED_PARTS_FORMAT_VERSION,
    format_version_for,
    parse_document,
)
from autoprompt_search.scoring import DEFAULT_CHUNK_SIZE

PEFT_TASK_TYPES = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "masked": "FEATURE_EXTRACTION"}
_OPEN_BRACE = '{"text": "\\u007b"}'  # OpenPrompt evaluates it as a Python literal: "\u007b" is "{"


# -- ready forms for other tools ---------------------------------------------------------------
def openprompt_form(spec: PromptSpec, tokenizer: Any = None) -> dict[str, Any]:
    """The prompt as an OpenPrompt template text and ManualVerbalizer label words.

    OpenPrompt tokenizes each template piece on its own, and only a plain space before a piece
    joins it: other whitespace before a field (the newlines after demonstrations) is moved into the
    field's ``post_processing``, so the field is tokenized with it as the search does. A trigger
    whose token OpenPrompt's own soft-token init reads back exactly (given a tokenizer) starts from it.
    """
    template = spec.template
    field_map = {name: ("text_a", "text_b")[i] if i < 2 else f"meta.{name}" for i, name in enumerate(template.fields_used)}
    pieces: list[str] = []
    triggers = iter(spec.trigger_ids)
    random_triggers = 0
    for index, segment in enumerate(template.segments):
        if segment.kind == "literal":  # a bare "{" opens a placeholder in OpenPrompt; a bare "}" is harmless
            pieces.append(segment.value.replace("{", _OPEN_BRACE))
        elif segment.kind == "field":
            target = field_map[segment.value]
            piece = {"meta": target[5:]} if target.startswith("meta.") else {"placeholder": target}
            whitespace = template.whitespace_before(index)
            if whitespace in ("", " "):
                pieces.append(json.dumps(piece))
            else:  # OpenPrompt evaluates the piece as Python: the lambda puts the whitespace back before the text
                pieces[-1] = pieces[-1][: len(pieces[-1]) - len(whitespace)]
                pieces.append(json.dumps(piece)[:-1] + f', "post_processing": lambda s: {json.dumps(whitespace)} + s}}')
        elif segment.kind == "slot":
            pieces.append('{"mask"}')
        else:
            text = _trigger_text(next(triggers), template.whitespace_before(index), tokenizer)
            random_triggers += text is None
            pieces.append(json.dumps({"soft": text}) if text else '{"soft"}')
    slot_space = template.whitespace_before_slot()
    form: dict[str, Any] = {
        "template_class": "MixedTemplate" if template.n_triggers else "ManualTemplate",
        "template_text": "".join(pieces),
        "label_words": {label: list(words) for label, words in spec.verbalizer.items()},
        "classes": list(spec.labels),
        "verbalizer_prefix": " " if slot_space.endswith(" ") else "",  # ManualVerbalizer(prefix=...)
        "field_map": field_map,
    }
    if template.n_triggers:
        form["trigger_token_ids"] = list(spec.trigger_ids)
        if tokenizer is not None:
            form["trigger_tokens"] = [tokenizer.decode([token]) for token in spec.trigger_ids]
    notes = [
        (len(field_map) > 2, f"InputExample has two text fields; {', '.join(list(field_map)[2:])} are read from InputExample.meta."),
        (random_triggers > 0, '[T] trigger slots are OpenPrompt soft tokens ({"soft"}, MixedTemplate), randomly '
                              "initialised; copy the embeddings of trigger_token_ids into them to start from the found tokens."),
        ("{" in "".join(s.value for s in template.segments if s.kind == "literal"),
         f"A literal '{{' is written as {_OPEN_BRACE}, since a bare '{{' opens a placeholder in OpenPrompt."),
        (slot_space not in ("", " ", "\n"), f"OpenPrompt tokenizes the whitespace {slot_space!r} before the slot apart from the "
                                             "label word, unlike the search: its scores can differ."),
        (spec.calibration.method != "none", "The calibration is not in this form: apply prompt.calibration to the class log-scores."),
    ]
    return _with_notes(form, notes)


def _trigger_text(token: int, whitespace: str, tokenizer: Any) -> str | None:
    """The text of a trigger token that OpenPrompt's soft-token init turns back into exactly that token
    (the piece's text after the space OpenPrompt adds), or None."""
    if tokenizer is None or whitespace != " ":
        return None
    text = tokenizer.decode([token]).strip()
    return text if text and tokenizer.encode(" " + text, add_special_tokens=False) == [token] else None


def _with_notes(form: dict[str, Any], notes: list[tuple[bool, str]]) -> dict[str, Any]:
    if text := " ".join(note for applies, note in notes if applies):
        form["note"] = text
    return form


def peft_form(spec: PromptSpec, model: ModelInfo, tokenizer: Any = None) -> dict[str, Any]:
    """A PEFT ``PromptTuningConfig`` initialised from the template's own words.

    ``num_virtual_tokens`` is filled only with a tokenizer: PEFT's TEXT init tokenizes the text
    with ``tokenizer(text)["input_ids"]`` (special tokens included) and cuts or repeats it to
    ``num_virtual_tokens``, so the two must agree for the words to be used exactly once.
    """
    template = spec.template
    words = " ".join(" ".join(s.value for s in template.segments if s.kind == "literal").split())
    form: dict[str, Any] = {
        "peft_type": "PROMPT_TUNING",
        "task_type": PEFT_TASK_TYPES[model.kind],
        "prompt_tuning_init": "TEXT" if words else "RANDOM",
        "prompt_tuning_init_text": words or None,
        "num_virtual_tokens": len(tokenizer(words)["input_ids"]) if tokenizer is not None and words else None,
        "tokenizer_name_or_path": portable_tokenizer_name(model),
    }
    return _with_notes(form, [
        (model.name in MODELS and MODELS[model.name].tokenizer_hub_id is None,
         f"tokenizer_name_or_path is this project's registered name: give PEFT its folder, "
         f"autoprompt_search.assets.resolve_model({model.name!r})."),
        (model.kind == "masked", "PEFT has no masked-LM task type; FEATURE_EXTRACTION prepends the virtual tokens and "
                                 "returns the wrapped AutoModelForMaskedLM's own logits, so the mask position moves by "
                                 "num_virtual_tokens."),
        (not words, "The template has no words of its own: set num_virtual_tokens yourself (RANDOM init)."),
        (bool(words) and tokenizer is None, "Set num_virtual_tokens to len(tokenizer(prompt_tuning_init_text)['input_ids'])."),
    ])


def portable_tokenizer_name(model: ModelInfo) -> str:
    """What PEFT should load the tokenizer from on any machine: the hub id of a registered model's
    tokenizer when known (resolved online or from a Hugging Face cache), else the model's name as
    the user gave it; never this machine's asset cache folder."""
    asset = MODELS.get(model.name)
    return asset.tokenizer_hub_id or model.name if asset is not None else model.name


def exports(spec: PromptSpec, model: ModelInfo, tokenizer: Any = None) -> dict[str, Any]:
    return {"openprompt": openprompt_form(spec, tokenizer), "peft": peft_form(spec, model, tokenizer)}


# -- writers -----------------------------------------------------------------------------------
def write_prompt(path: str | Path, spec: PromptSpec, model: ModelInfo, *, scores: Mapping, dataset: Mapping,
                 provenance: Mapping, word_token_ids: Mapping[str, Sequence[Sequence[int]]], batch_size: int,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, tokenizer: Any = None) -> Path:
    """Write one prompt atomically; ``tokenizer`` (optional) fills PEFT's ``num_virtual_tokens``."""
    return _write(path, {
        **_header("single"), "prompt": spec.to_dict(), "word_token_ids": word_token_ids,
        "model": _model_block(model, batch_size, chunk_size), "scores": scores, "dataset": dataset,
        "exports": None, "provenance": provenance,  # exports are filled once the rest is checked
    }, model, tokenizer)


def write_ensemble(path: str | Path, members: Sequence[tuple[PromptSpec, float, Mapping]], model: ModelInfo, *,
                   scores: Mapping, dataset: Mapping, provenance: Mapping, weights_fit: Mapping, batch_size: int,
                   chunk_size: int = DEFAULT_CHUNK_SIZE, tokenizer: Any = None,
                   word_token_ids: Sequence[Mapping[str, Sequence[Sequence[int]]]] | None = None) -> Path:
    """Write an ensemble of (spec, weight, member scores) atomically; ``word_token_ids``: one per member."""
    if word_token_ids is not None and len(word_token_ids) != len(members):
        raise ValueError("word_token_ids must give one mapping per member")
    rows = [{"prompt": spec.to_dict(), "weight": weight, "scores": member_scores, "exports": None}
            for spec, weight, member_scores in members]
    for row, ids in zip(rows, word_token_ids or ()):
        row["word_token_ids"] = ids
    return _write(path, {
        **_header("ensemble"), "members": rows, "model": _model_block(model, batch_size, chunk_size),
        "scores": scores, "weights_fit": weights_fit, "dataset": dataset, "provenance": provenance,
    }, model, tokenizer)


def checked_models_document(path: str | Path, parts: Sequence[tuple[Mapping, Mapping]], *, scores: Mapping, weights_fit: Mapping,
                            dataset: Mapping, provenance: Mapping) -> dict[str, Any]:
    """The document of an ensemble of models, checked as load() will read it from ``path``: per part,
    (a run's ensemble.json document, as read and scored, with its weight in what to record about it)."""
    rows = [{**record, "ensemble": part} for part, record in parts]
    trained = any(part.get("kind") == "single" for part, _ in parts)  # older readers refuse it rather than misread it
    version = TRAINED_PARTS_FORMAT_VERSION if trained else MODELS_FORMAT_VERSION
    document = _plain({**_header("models"), "format_version": version, "parts": rows, "scores": scores,
                       "weights_fit": weights_fit, "dataset": dataset, "provenance": provenance})
    parse_document(document, str(path))  # never write a file that load() would refuse
    return document


def _header(kind: str) -> dict[str, Any]:
    from autoprompt_search.version import __version__

    return {"format": FORMAT, "format_version": BASE_FORMAT_VERSION, "library_version": __version__, "kind": kind}


def _model_block(model: ModelInfo, batch_size: int, chunk_size: int) -> dict[str, Any]:
    block = {**asdict(model), "batch_size": batch_size, "chunk_size": chunk_size}
    if model.adapter is None:
        del block["adapter"]
    if model.precision == "float32":
        del block["precision"]
    return block


def _write(path: str | Path, document: dict[str, Any], model: ModelInfo, tokenizer: Any) -> Path:
    document = _plain(document)
    document["format_version"] = format_version_for(model)
    checked = parse_document(document, str(path))  # never write a file that load() would refuse
    for row, member in zip(document["members"] if checked.kind == "ensemble" else [document], checked.members):
        row["exports"] = exports(member.spec, model, tokenizer)
    return atomic_write_json(path, document)


def _plain(value: Any) -> Any:
    """JSON-native copy: numpy scalars and arrays, tuples and paths become plain values."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return str(value) if isinstance(value, Path) else value


