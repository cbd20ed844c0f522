"""Prompt files, read: a prompt or ensemble JSON checked field by field (each mistake names the
file and the field) into a :class:`PromptFile`; nothing in the file is ever run.

Kinds: ``single`` (one prompt), ``ensemble`` (weighted prompts on one model) and ``models`` (weighted
``ensemble`` documents, or trained ``single`` ones, each on its own model: :mod:`autoprompt_search.model_ensemble`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from autoprompt_search.backends import DEFAULT_MAX_LENGTH, MODEL_KINDS, PRECISIONS
from autoprompt_search.calibration import CALIBRATION_METHODS
from autoprompt_search.errors import UserError
from autoprompt_search.fileio import read_json
from autoprompt_search.prompt import ADAPTER_METHODS, AdapterInfo, ModelInfo, PromptSpec
from autoprompt_search.scoring import DEFAULT_CHUNK_SIZE
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

FORMAT = "autoprompt_search.prompt"
BASE_FORMAT_VERSION = 1  # what a file is written as unless it needs a later version, so older versions still read it
ADAPTER_FORMAT_VERSION = 2  # added model.adapter (a trained PEFT adapter)
PRECISION_FORMAT_VERSION = 3  # added model.precision (other than float32)
MODELS_FORMAT_VERSION = 4  # added kind "models" (ensembles of several models)
TRAINED_PARTS_FORMAT_VERSION = 5  # added trained prompts (kind "single", a model or adapter beside the file) as parts of "models"
FORMAT_VERSION = TRAINED_PARTS_FORMAT_VERSION  # what this version reads
KINDS = ("single", "ensemble", "models")
DEFAULT_BATCH_SIZE = 32
MAX_COUNT = 2**31 - 1  # the largest batch size, chunk size, length or token id a file may give
MAX_FILE_BYTES = 64 << 20  # prompt files are kilobytes; a larger one is not read
_MISSING = object()


# -- reading and validation ----------------------------------------------------------------------
@dataclass(frozen=True)
class PromptMember:
    spec: PromptSpec
    weight: float = 1.0
    word_token_ids: dict[str, list[list[int]]] | None = None
    where: str = "prompt"  # its place in the file, for messages


@dataclass(frozen=True)
class PromptFile:
    """A checked prompt file: what :func:`load` needs, and the whole document. A ``models`` file has
    no model of its own: its ``parts`` are (weight, ``ensemble`` or trained ``single`` file) pairs, each on its model."""

    kind: str
    model: ModelInfo | None
    batch_size: int
    chunk_size: int
    members: tuple[PromptMember, ...]
    document: dict[str, Any] = field(repr=False)
    parts: tuple[tuple[float, "PromptFile"], ...] = ()


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite number (JSON's NaN, Infinity and 1e999 are refused), an integer within a float's exact range."""
    return (_is_int(value) and abs(value) <= 2**53) or (isinstance(value, float) and math.isfinite(value))


def _is_count(value: Any) -> bool:
    return _is_int(value) and 0 < value <= MAX_COUNT


def _is_token_id(value: Any) -> bool:
    return _is_int(value) and 0 <= value <= MAX_COUNT


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (_is_str, "a string"),
    "positive int": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "count": (_is_count, f"a positive integer up to {MAX_COUNT}"),
    "number": (_is_number, "a finite number"),
    "mapping": (lambda v: isinstance(v, dict), "a mapping"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "strings": (_list_of(_is_str), "a list of strings"),
    "token id list": (_list_of(_is_token_id), f"a list of token ids (integers from 0 to {MAX_COUNT})"),
    "numbers": (_list_of(_is_number), "a list of finite numbers"),
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


def format_version_for(model: ModelInfo) -> int:
    """The version a file of this model must carry: older readers refuse an adapter or a precision rather than ignore it."""
    if model.precision != "float32":
        return PRECISION_FORMAT_VERSION
    return ADAPTER_FORMAT_VERSION if model.adapter is not None else BASE_FORMAT_VERSION


def read(path: str | Path, kinds: Sequence[str] = KINDS) -> PromptFile:
    """Read and check a prompt file of one of ``kinds`` without loading its model."""
    return parse_document(read_document(path, "prompt file (such as best.json)"), str(path), kinds)


def read_document(path: str | Path, what: str) -> Any:
    """A JSON file's value; whatever is wrong with it (too large, malformed, nested too deeply, an
    integer too long to read) is a user error naming the file."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = 0  # read_json says what is wrong with it
    if size > MAX_FILE_BYTES:
        raise UserError(f"{path}: {size} bytes, too large for a {what} (at most {MAX_FILE_BYTES})")
    try:
        return read_json(path, what)
    except RecursionError:
        raise UserError(f"{path}: not a {what}: its JSON is nested too deeply") from None
    except ValueError as error:  # json's own errors are handled by read_json; this is an integer of thousands of digits
        raise UserError(f"{path}: not a {what}: {error}") from None


def parse_document(document: Any, origin: str, kinds: Sequence[str] = KINDS) -> PromptFile:
    if not isinstance(document, dict):
        raise UserError(f"{origin}: expected a JSON object at the top level, got {_describe(document)}")
    _get(document, "format", "", "str", origin, choices=(FORMAT,))
    version = _get(document, "format_version", "", "positive int", origin)
    if version > FORMAT_VERSION:
        from autoprompt_search.version import __version__

        raise UserError(f"{origin}: format_version: the file has version {version}, but autoprompt_search "
                        f"{__version__} reads up to version {FORMAT_VERSION}; upgrade autoprompt_search")
    kind = _get(document, "kind", "", "str", origin, choices=kinds)
    if kind == "models":
        return _parse_models(document, origin)
    block = _get(document, "model", "", "mapping", origin)
    model = ModelInfo(name=_get(block, "name", "model", "str", origin),
                      kind=_get(block, "kind", "model", "str", origin, choices=MODEL_KINDS),
                      weights_sha256=_get(block, "weights_sha256", "model", "str", origin),
                      path=_get(block, "path", "model", "str", origin, ""),
                      max_length=_get(block, "max_length", "model", "count", origin, DEFAULT_MAX_LENGTH),
                      adapter=_parse_adapter(block, origin),
                      precision=_get(block, "precision", "model", "str", origin, "float32", choices=PRECISIONS))
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
    return PromptFile(kind, model, _get(block, "batch_size", "model", "count", origin, DEFAULT_BATCH_SIZE),
                      _get(block, "chunk_size", "model", "count", origin, DEFAULT_CHUNK_SIZE),
                      tuple(members), document)


def _parse_models(document: dict, origin: str) -> PromptFile:
    """A ``models`` file: its parts, each an ``ensemble`` (or trained ``single``) document with a weight, sharing their labels."""
    rows = _get(document, "parts", "", "list", origin)
    if len(rows) < 2:
        raise UserError(f"{origin}: parts: an ensemble of models needs at least 2 parts, got {len(rows)}")
    parts = []
    for index, row in enumerate(rows):
        where = f"parts[{index}]"
        if not isinstance(row, dict):
            raise UserError(f"{origin}: {where}: expected a mapping, got {_describe(row)}")
        weight = float(_get(row, "weight", where, "number", origin))
        if not (weight >= 0 and math.isfinite(weight)):
            raise UserError(f"{origin}: {where}.weight: expected a non-negative number, got {weight}")
        # a search's ensemble, or a trained prompt (its model or adapter in a folder beside the file)
        part = parse_document(_get(row, "ensemble", where, "mapping", origin), f"{origin}: {where}.ensemble", kinds=("ensemble", "single"))
        for name in ("labels", "fields") if parts else ():
            mine, first = (getattr(p.members[0].spec, name) for p in (part, parts[0][1]))
            if mine != first:
                raise UserError(f"{origin}: {where}: its {name} {list(mine)} differ from parts[0]'s {list(first)}")
        parts.append((weight, part))
    if sum(weight for weight, _ in parts) <= 0:
        raise UserError(f"{origin}: parts: every weight is zero; at least one must be positive")
    first = parts[0][1]
    return PromptFile("models", None, first.batch_size, first.chunk_size, (), document, tuple(parts))


def _parse_adapter(block: dict, origin: str) -> AdapterInfo | None:
    adapter = _get(block, "adapter", "model", "mapping", origin, None)
    if adapter is None:
        return None
    return AdapterInfo(method=_get(adapter, "method", "model.adapter", "str", origin, choices=ADAPTER_METHODS),
                       path=_get(adapter, "path", "model.adapter", "str", origin),
                       sha256=_get(adapter, "sha256", "model.adapter", "str", origin))


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
    trigger_ids = _get(data, "trigger_ids", where, "token id list", origin, [])
    parsed = Template.parse(template, fields=fields, origin=f"{origin}: {where}.template")
    if parsed.n_triggers != len(trigger_ids):
        raise UserError(f"{origin}: {where}.trigger_ids: the template has {parsed.n_triggers} trigger slots [T] "
                        f"but {len(trigger_ids)} ids are given")
    Verbalizer.parse(verbalizer, labels, origin=f"{origin}: {where}.verbalizer")
    return PromptSpec.from_dict({**data, "template": parsed})


