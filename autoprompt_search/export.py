"""Prompt files: write found prompts as JSON and load them back as scikit-learn style predictors.

A prompt file (``best.json``) holds all that is needed to apply a prompt again: template,
verbalizer, the fixed calibration, trigger tokens, the model's weight hash and the batching
the search scored with, plus ready forms for OpenPrompt and PEFT. :func:`load` checks the file
and the model and returns a predictor whose probabilities equal the search's bit for bit.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from autoprompt_search.backends import DEFAULT_MAX_LENGTH, MODEL_KINDS, Backend, load_backend
from autoprompt_search.cache import SlotCache, default_cache_dir
from autoprompt_search.ensemble import combine_probabilities
from autoprompt_search.errors import UserError
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.prompt import ModelInfo, PromptSpec
from autoprompt_search.scoring import CALIBRATION_METHODS, DEFAULT_CHUNK_SIZE, PromptScorer
from autoprompt_search.templates import RenderedPrompt, Template
from autoprompt_search.verbalizers import Verbalizer

FORMAT = "autoprompt_search.prompt"
FORMAT_VERSION = 1
DEFAULT_BATCH_SIZE = 32
PEFT_TASK_TYPES = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "masked": "FEATURE_EXTRACTION"}
_OPEN_BRACE = '{"text": "\\u007b"}'  # OpenPrompt evaluates it as a Python literal: "\u007b" is "{"
_MISSING = object()
Texts = Iterable[str | Mapping[str, str]]


# -- ready forms for other tools ---------------------------------------------------------------
def openprompt_form(spec: PromptSpec, tokenizer: Any = None) -> dict[str, Any]:
    """The prompt as an OpenPrompt template text and ManualVerbalizer label words."""
    template = Template.parse(spec.template, fields=spec.fields)
    field_map = {name: ("text_a", "text_b")[i] if i < 2 else f"meta.{name}" for i, name in enumerate(template.fields_used)}
    pieces = []
    for segment in template.segments:
        if segment.kind == "literal":  # a bare "{" opens a placeholder in OpenPrompt; a bare "}" is harmless
            pieces.append(segment.value.replace("{", _OPEN_BRACE))
        elif segment.kind == "field":
            target = field_map[segment.value]
            pieces.append(json.dumps({"meta": target[5:]} if target.startswith("meta.") else {"placeholder": target}))
        else:
            pieces.append('{"mask"}' if segment.kind == "slot" else '{"soft"}')
    form: dict[str, Any] = {
        "template_class": "MixedTemplate" if template.n_triggers else "ManualTemplate",
        "template_text": "".join(pieces),
        "label_words": {label: list(words) for label, words in spec.verbalizer.items()},
        "classes": list(spec.labels),
        "verbalizer_prefix": " " if template.slot_follows_space() else "",  # ManualVerbalizer(prefix=...)
        "field_map": field_map,
    }
    if template.n_triggers:
        form["trigger_token_ids"] = list(spec.trigger_ids)
        if tokenizer is not None:
            form["trigger_tokens"] = [tokenizer.decode([token]) for token in spec.trigger_ids]
    notes = [
        (len(field_map) > 2, f"InputExample has two text fields; {', '.join(list(field_map)[2:])} are read from InputExample.meta."),
        (template.n_triggers > 0, '[T] trigger slots are OpenPrompt soft tokens ({"soft"}, MixedTemplate), randomly '
                                  "initialised; copy the embeddings of trigger_token_ids into them to start from the found tokens."),
        ("{" in "".join(s.value for s in template.segments if s.kind == "literal"),
         f"A literal '{{' is written as {_OPEN_BRACE}, since a bare '{{' opens a placeholder in OpenPrompt."),
        (spec.calibration.method != "none", "The calibration is not in this form: apply prompt.calibration to the class log-scores."),
    ]
    return _with_notes(form, notes)


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
    template = Template.parse(spec.template, fields=spec.fields)
    words = " ".join(" ".join(s.value for s in template.segments if s.kind == "literal").split())
    form: dict[str, Any] = {
        "peft_type": "PROMPT_TUNING",
        "task_type": PEFT_TASK_TYPES[model.kind],
        "prompt_tuning_init": "TEXT" if words else "RANDOM",
        "prompt_tuning_init_text": words or None,
        "num_virtual_tokens": len(tokenizer(words)["input_ids"]) if tokenizer is not None and words else None,
        "tokenizer_name_or_path": model.path or model.name,
    }
    return _with_notes(form, [
        (model.kind == "masked", "PEFT has no masked-LM task type; FEATURE_EXTRACTION prepends the virtual tokens and "
                                 "returns the wrapped AutoModelForMaskedLM's own logits, so the mask position moves by "
                                 "num_virtual_tokens."),
        (not words, "The template has no words of its own: set num_virtual_tokens yourself (RANDOM init)."),
        (bool(words) and tokenizer is None, "Set num_virtual_tokens to len(tokenizer(prompt_tuning_init_text)['input_ids'])."),
    ])


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


def _header(kind: str) -> dict[str, Any]:
    from autoprompt_search import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__, "kind": kind}


def _model_block(model: ModelInfo, batch_size: int, chunk_size: int) -> dict[str, Any]:
    return {**asdict(model), "batch_size": batch_size, "chunk_size": chunk_size}


def _write(path: str | Path, document: dict[str, Any], model: ModelInfo, tokenizer: Any) -> Path:
    document = _plain(document)
    checked = _parse(document, str(path))  # never write a file that load() would refuse
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


# -- reading and validation ----------------------------------------------------------------------
@dataclass(frozen=True)
class PromptMember:
    spec: PromptSpec
    weight: float = 1.0
    word_token_ids: dict[str, list[list[int]]] | None = None
    where: str = "prompt"  # its place in the file, for messages


@dataclass(frozen=True)
class PromptFile:
    """A checked prompt file: what :func:`load` needs, and the whole document."""

    kind: str
    model: ModelInfo
    batch_size: int
    chunk_size: int
    members: tuple[PromptMember, ...]
    document: dict[str, Any] = field(repr=False)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (_is_str, "a string"),
    "positive int": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "number": (_is_number, "a number"),
    "mapping": (lambda v: isinstance(v, dict), "a mapping"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "strings": (_list_of(_is_str), "a list of strings"),
    "ints": (_list_of(_is_int), "a list of integers"),
    "numbers": (_list_of(_is_number), "a list of numbers"),
    "words": (lambda v: isinstance(v, dict) and all(map(_list_of(_is_str), v.values())), "a mapping from label to words"),
    "token ids": (lambda v: isinstance(v, dict) and all(map(_list_of(_list_of(_is_int)), v.values())),
                  "a mapping from label to lists of token ids"),
}


def _get(data: Mapping, key: str, where: str, check: str, origin: str, default: Any = _MISSING,
         choices: Sequence[str] = ()) -> Any:
    """``data[key]`` checked against ``check`` (and ``choices``); errors name the file and the field."""
    name = f"{where}.{key}" if where else key
    if key not in data:
        if default is _MISSING:
            raise UserError(f"{origin}: {name}: missing (required)")
        return default
    test, description = _CHECKS[check]
    if not test(data[key]):
        raise UserError(f"{origin}: {name}: expected {description}, got {_describe(data[key])}")
    if choices and data[key] not in choices:
        raise UserError(f"{origin}: {name}: expected {' or '.join(map(repr, choices))}, got {data[key]!r}")
    return data[key]


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def read(path: str | Path) -> PromptFile:
    """Read and check a prompt file without loading its model."""
    origin = str(path)
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{origin}: no such prompt file") from None
    except IsADirectoryError:
        raise UserError(f"{origin}: is a folder; give the prompt file (such as best.json)") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{origin}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{origin}: cannot read it ({error})") from None
    return _parse(document, origin)


def _parse(document: Any, origin: str) -> PromptFile:
    if not isinstance(document, dict):
        raise UserError(f"{origin}: expected a JSON object at the top level, got {_describe(document)}")
    _get(document, "format", "", "str", origin, choices=(FORMAT,))
    version = _get(document, "format_version", "", "positive int", origin)
    if version > FORMAT_VERSION:
        from autoprompt_search import __version__

        raise UserError(f"{origin}: format_version: the file has version {version}, but autoprompt_search "
                        f"{__version__} reads up to version {FORMAT_VERSION}; upgrade autoprompt_search")
    kind = _get(document, "kind", "", "str", origin, choices=("single", "ensemble"))
    block = _get(document, "model", "", "mapping", origin)
    model = ModelInfo(name=_get(block, "name", "model", "str", origin),
                      kind=_get(block, "kind", "model", "str", origin, choices=MODEL_KINDS),
                      weights_sha256=_get(block, "weights_sha256", "model", "str", origin),
                      path=_get(block, "path", "model", "str", origin, ""),
                      max_length=_get(block, "max_length", "model", "positive int", origin, DEFAULT_MAX_LENGTH))
    if kind == "single":
        members = [_parse_member(document, "", origin, weighted=False)]
    else:
        rows = _get(document, "members", "", "list", origin)
        if not rows:
            raise UserError(f"{origin}: members: the ensemble has no members")
        members = []
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise UserError(f"{origin}: members[{index}]: expected a mapping, got {_describe(row)}")
            members.append(_parse_member(row, f"members[{index}]", origin, weighted=True))
        if sum(member.weight for member in members) <= 0:
            raise UserError(f"{origin}: members: every weight is zero; at least one must be positive")
        for member in members[1:]:
            if member.spec.labels != members[0].spec.labels:
                raise UserError(f"{origin}: {member.where}.labels: {list(member.spec.labels)} differ from "
                                f"{members[0].where}.labels {list(members[0].spec.labels)}")
    return PromptFile(kind, model, _get(block, "batch_size", "model", "positive int", origin, DEFAULT_BATCH_SIZE),
                      _get(block, "chunk_size", "model", "positive int", origin, DEFAULT_CHUNK_SIZE),
                      tuple(members), document)


def _parse_member(data: dict, where: str, origin: str, *, weighted: bool) -> PromptMember:
    prefix = f"{where}." if where else ""
    weight = float(_get(data, "weight", where, "number", origin)) if weighted else 1.0
    if not (weight >= 0 and math.isfinite(weight)):
        raise UserError(f"{origin}: {prefix}weight: expected a non-negative number, got {weight}")
    spec = _parse_spec(_get(data, "prompt", where, "mapping", origin), f"{prefix}prompt", origin)
    ids = _get(data, "word_token_ids", where, "token ids", origin, None)
    if ids is not None and set(ids) != set(spec.labels):
        raise UserError(f"{origin}: {prefix}word_token_ids: its labels {list(ids)} differ from "
                        f"{prefix}prompt.labels {list(spec.labels)}")
    return PromptMember(spec, weight, ids, f"{prefix}prompt")


def _parse_spec(data: dict, where: str, origin: str) -> PromptSpec:
    template = _get(data, "template", where, "str", origin)
    verbalizer = _get(data, "verbalizer", where, "words", origin)
    labels = _get(data, "labels", where, "strings", origin)
    fields = _get(data, "fields", where, "strings", origin)
    if len(set(labels)) != len(labels) or not labels:
        raise UserError(f"{origin}: {where}.labels: expected distinct label names, got {labels}")
    calibration = _get(data, "calibration", where, "mapping", origin, {})
    method = _get(calibration, "method", f"{where}.calibration", "str", origin, "none", CALIBRATION_METHODS)
    bias = _get(calibration, "bias", f"{where}.calibration", "numbers", origin, [])
    if method != "none" and len(bias) != len(labels):
        raise UserError(f"{origin}: {where}.calibration.bias: expected {len(labels)} numbers (one per label), got {len(bias)}")
    trigger_ids = _get(data, "trigger_ids", where, "ints", origin, [])
    parsed = Template.parse(template, fields=fields, origin=f"{origin}: {where}.template")
    if parsed.n_triggers != len(trigger_ids):
        raise UserError(f"{origin}: {where}.trigger_ids: the template has {parsed.n_triggers} trigger slots [T] "
                        f"but {len(trigger_ids)} ids are given")
    Verbalizer.parse(verbalizer, labels, origin=f"{origin}: {where}.verbalizer")
    return PromptSpec.from_dict(data)


# -- predictors ----------------------------------------------------------------------------------
class _Classifier:
    classes_: list[str]
    file: PromptFile | None = None  # set by load(): scores, dataset, provenance

    def predict_proba(self, texts: Texts) -> np.ndarray:
        raise NotImplementedError

    def predict(self, texts: Texts) -> list[str]:
        """The likeliest label of each text."""
        return [self.classes_[index] for index in self.predict_proba(texts).argmax(axis=1)]

    def score(self, texts: Texts, labels: Iterable[str]) -> float:
        """Accuracy of :meth:`predict` against gold label names."""
        texts, labels = _as_list(texts), [str(label) for label in labels]
        if len(texts) != len(labels) or not texts:
            raise UserError(f"labels: expected one label per text, got {len(labels)} labels for {len(texts)} texts")
        if unknown := [label for label in labels if label not in self.classes_]:
            raise UserError(f"labels: unknown label {unknown[0]!r}; the prompt's classes are {', '.join(self.classes_)}")
        return float(np.mean([p == g for p, g in zip(self.predict(texts), labels)]))


class PromptPredictor(_Classifier):
    """One prompt on a frozen model (through a PromptScorer): its calibrated class probabilities."""

    def __init__(self, spec: PromptSpec, scorer: PromptScorer, *, origin: str = "prompt") -> None:
        self.spec, self.scorer = spec, scorer
        self.template, self.verbalizer = spec.parsed()
        self.template.check_for_model(scorer.backend.kind, origin=f"{origin}.template")
        self.word_ids = scorer.word_ids(self.template, self.verbalizer)
        self.classes_ = list(self.verbalizer.labels)

    def predict_proba(self, texts: Texts) -> np.ndarray:
        """``[n, classes]`` probabilities, by the same scorer steps as the search."""
        prompts = self.prompts(texts)
        if not prompts:
            return np.empty((0, len(self.classes_)))
        return self.probabilities(self.scorer.class_scores(prompts, self.word_ids))

    def prompts(self, texts: Texts) -> list[RenderedPrompt]:
        """The template rendered on ``texts`` (checked against its fields)."""
        examples = _examples(_as_list(texts), self.template.fields_used)
        return self.scorer.prepare(self.template, examples, self.spec.trigger_ids or None).prompts if examples else []

    def probabilities(self, raw: torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities from raw class log-scores, as PromptScore.probabilities."""
        log_scores = self.spec.calibration.apply(raw).double().numpy()
        exp = np.exp(log_scores - log_scores.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


class EnsemblePredictor(_Classifier):
    """A weighted average of prompts' probabilities; members share one backend and cache."""

    def __init__(self, members: Sequence[PromptPredictor], weights: Sequence[float]) -> None:
        self.members, self.weights = list(members), [float(weight) for weight in weights]
        self.classes_ = list(self.members[0].classes_)
        if any(member.classes_ != self.classes_ for member in self.members):
            raise ValueError("ensemble members must share their classes, in the same order")

    def predict_proba(self, texts: Texts) -> np.ndarray:
        """The weighted average of the members' probabilities; members that share a template are
        read from one pass of the model over ``texts``."""
        texts = _as_list(texts)
        if not texts:
            return np.empty((0, len(self.classes_)))
        groups: dict[tuple, list[int]] = {}
        for index, member in enumerate(self.members):
            groups.setdefault((member.spec.template, member.spec.fields, member.spec.trigger_ids, id(member.scorer)), []).append(index)
        probabilities: list[np.ndarray] = [np.empty(0)] * len(self.members)
        for indices in groups.values():
            first = self.members[indices[0]]
            raws = first.scorer.variant_class_scores(first.prompts(texts), [self.members[i].word_ids for i in indices])
            for index, raw in zip(indices, raws):
                probabilities[index] = self.members[index].probabilities(raw)
        return combine_probabilities(probabilities, self.weights)


def _as_list(texts: Texts) -> list[str | Mapping[str, str]]:
    if isinstance(texts, (str, Mapping)):
        raise UserError("texts: expected a list of texts (or of mappings field -> text), got a single one; wrap it in a list")
    return list(texts)


def _examples(texts: Sequence[str | Mapping[str, str]], fields: Sequence[str]) -> list[dict[str, str]]:
    """Each text as a mapping over the template's fields; a plain string fills its only field."""
    examples = []
    for index, item in enumerate(texts):
        if isinstance(item, str) and len(fields) == 1:
            item = {fields[0]: item}
        elif isinstance(item, str):
            raise UserError(f"texts[{index}]: the template uses the fields {', '.join(fields)}; "
                            "give each example as a mapping field -> text")
        elif not isinstance(item, Mapping):
            raise UserError(f"texts[{index}]: expected a text or a mapping field -> text, got {type(item).__name__}")
        if missing := [name for name in fields if name not in item]:
            raise UserError(f"texts[{index}]: missing field {missing[0]!r}; the template uses {', '.join(fields)}")
        if wrong := [name for name in fields if not isinstance(item[name], str)]:
            raise UserError(f"texts[{index}].{wrong[0]}: expected a string, got {type(item[wrong[0]]).__name__}")
        examples.append({name: item[name] for name in fields})
    return examples


# -- loading -------------------------------------------------------------------------------------
def load(path: str | Path, model: str | Path | Backend | None = None, device: str = "auto", cache: bool = True, *,
         strict: bool = True) -> PromptPredictor | EnsemblePredictor:
    """Load a prompt file as a predictor on its model.

    The model is ``model`` if given (a name, a folder, or a loaded backend used as it is), else
    the file's ``model.path`` if that folder exists, else ``model.name``. A model or tokenizer
    that differs from the search's is refused unless ``strict=False`` (then a warning).
    """
    origin, file = str(path), read(path)
    if isinstance(model, Backend):
        backend, source = model, str(model.path or "the given backend")
    else:
        found = file.model.path if file.model.path and Path(file.model.path).is_dir() else file.model.name
        source = str(model) if model is not None else found
        try:
            backend = load_backend(source, kind=file.model.kind, device=device, batch_size=file.batch_size,
                                   max_length=file.model.max_length)
        except UserError as error:
            if model is not None:
                raise
            raise UserError(f"{origin}: model: cannot load the prompt's model ({error}); pass model=... to give its folder") from None
    for key, expected, actual in (("kind", file.model.kind, backend.kind),
                                  ("weights_sha256", file.model.weights_sha256, backend.weights_hash)):
        if expected != actual:
            _mismatch(f"{origin}: model.{key}: the prompt was found on another model ({key} {expected!r} in the file, "
                      f"{actual!r} for {source}); its scores do not carry over", strict)
    scorer = PromptScorer(backend, SlotCache(default_cache_dir()) if cache else SlotCache(), chunk_size=file.chunk_size)
    predictors = []
    for member in file.members:
        predictor = PromptPredictor(member.spec, scorer, origin=f"{origin}: {member.where}")
        now = {label: [list(word) for word in words] for label, words in zip(predictor.classes_, predictor.word_ids)}
        if member.word_token_ids is not None and (changed := [k for k in now if now[k] != member.word_token_ids[k]]):
            _mismatch(f"{origin}: {member.where[: -len('prompt')]}word_token_ids: this model's tokenizer gives other token "
                      f"ids for the words of {changed[0]!r} ({now[changed[0]]}) than the search used "
                      f"({member.word_token_ids[changed[0]]})", strict)
        predictors.append(predictor)
    result = predictors[0] if file.kind == "single" else EnsemblePredictor(predictors, [m.weight for m in file.members])
    result.file = file
    return result


def _mismatch(message: str, strict: bool) -> None:
    """A file and a model that disagree: an error, or with ``strict=False`` a warning."""
    if strict:
        raise UserError(message + "; pass strict=False to use it anyway")
    warnings.warn(message, UserWarning, stacklevel=3)
