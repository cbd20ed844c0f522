"""Search spaces as data: a YAML file says what the prompt search may try, and with which budget.

``load_space(path)`` reads the file with ``yaml.safe_load``, applies its ``include:`` files, checks
every key and value, and returns a frozen :class:`SearchSpace`. Every mistake is a
:class:`UserError` naming the file and the field path (``mr.yaml: templates.seeds[2]: ...``).

Includes. ``include: base.yaml`` (or a list) is relative to the including file. The result is a
stack of layers applied in order: the included files first (each with its own includes, depth
first), then the file itself; mappings merge key by key, anything else (lists included) is
replaced by the later layer. A cycle of includes is an error.

Paths in a file (``dataset.path``, a ``model`` folder) are relative to the file that sets them.
The set of keys is :data:`SCHEMA`; see ``search_spaces/base.yaml`` for a commented example.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from autoprompt_search.assets import DEFAULT_MODEL, MODELS
from autoprompt_search.data import FILE_SUFFIXES, LMBFF_SEEDS, REGISTERED
from autoprompt_search.errors import UserError
from autoprompt_search.space_checks import Invalid, need_choice, need_int
from autoprompt_search.space_generators import (DemonstrationsGenerator, GenerationRounds, Generators, LabelProbeGenerator, LabelWordsGenerator,
                                                TriggersGenerator)
from autoprompt_search.templates import SLOT, Template
from autoprompt_search.verbalizers import Verbalizer

# Label names and order as the loaders in data.py produce them; known here without loading data.
REGISTERED_LABELS: dict[str, tuple[str, ...]] = {
    "mr": ("negative", "positive"),
    "rt": ("negative", "positive"),
    "subj": ("subjective", "objective"),
    "bbc": ("business", "entertainment", "politics", "sport", "tech"),
    "tweets": ("negative", "neutral", "positive"),
}
REGISTERED_FIELDS: tuple[str, ...] = ("text",)  # every registered dataset has this one field
OBJECTIVES = ("accuracy", "macro_f1")
PRUNERS = ("median", "wilcoxon", "none")
DEFAULT_CALIBRATION = ("none", "contextual", "prior")
MIN_MAX_LENGTH = 16  # room for a short template, the slot and some text

_LEAF = None
SCHEMA: dict[str, Any] = {
    "include": _LEAF, "name": _LEAF, "description": _LEAF, "model": _LEAF, "max_length": _LEAF,
    "dataset": {"path": _LEAF, "name": _LEAF, "text_fields": _LEAF, "label_field": _LEAF, "labels": _LEAF,
                "test_fraction": _LEAF},
    "few_shot": {"k": _LEAF, "seeds": _LEAF},
    "templates": {"seeds": _LEAF, "blocks": {"prefixes": _LEAF, "connectors": _LEAF, "endings": _LEAF},
                  "max_candidates": _LEAF},
    "verbalizers": {"seeds": _LEAF},
    "generators": {"label_words": {"enabled": _LEAF, "words_per_class": _LEAF, "scoring": _LEAF, "templates": _LEAF},
                   "label_probe": {"enabled": _LEAF, "words_per_class": _LEAF, "templates": _LEAF, "shortlist": _LEAF},
                   "triggers": {"enabled": _LEAF, "templates": _LEAF, "count": _LEAF, "position": _LEAF, "base_templates": _LEAF,
                                "candidates": _LEAF, "steps": _LEAF, "restarts": _LEAF, "batch_size": _LEAF, "patience": _LEAF,
                                "init": _LEAF, "filters": _LEAF, "loss": _LEAF, "fluency": _LEAF},
                   "rounds": {"count": _LEAF, "trials": _LEAF},
                   "demonstrations": {"enabled": _LEAF, "per_class": _LEAF, "sets": _LEAF, "templates": _LEAF,
                                      "separator": _LEAF}},
    "calibration": _LEAF, "objective": _LEAF,
    "budget": {"trials": _LEAF, "timeout_seconds": _LEAF},
    "pruner": {"type": _LEAF, "chunks": _LEAF},
    "ensemble": {"size": _LEAF, "prompts_per_template": _LEAF},
}  # fmt: skip
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ------------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset (``path`` is None) or a data file with its column options."""

    name: str
    path: Path | None = None
    text_fields: tuple[str, ...] = REGISTERED_FIELDS
    label_field: str = "label"
    labels: tuple[str, ...] | None = None  # None: a file whose labels are read from the data
    test_fraction: float | None = None  # None: data.py's default for the dataset

    def __post_init__(self) -> None:
        if self.path is None:
            need_choice("dataset", self.name, tuple(sorted(REGISTERED)))
            if self.text_fields != REGISTERED_FIELDS or self.label_field != "label" or self.labels not in (None, REGISTERED_LABELS[self.name]):
                raise Invalid("dataset", f"text_fields, label_field and labels are only for data files, not the registered dataset {self.name!r}")
            object.__setattr__(self, "labels", REGISTERED_LABELS[self.name])
        if not self.text_fields:
            raise Invalid("dataset.text_fields", "must list at least one column")
        for i, name in enumerate(self.text_fields):
            if not isinstance(name, str) or not _FIELD_NAME.match(name) or name == SLOT:
                raise Invalid(f"dataset.text_fields[{i}]", f"must be a name usable as a template field {{name}} (letters, digits, _; not 'mask'), got {name!r}")
        if not isinstance(self.label_field, str) or not self.label_field:
            raise Invalid("dataset.label_field", f"must be a column name, got {self.label_field!r}")
        if self.labels is not None and (len(self.labels) < 2 or len(set(self.labels)) != len(self.labels)):
            raise Invalid("dataset.labels", f"must list at least two distinct labels, got {list(self.labels)}")
        fraction = self.test_fraction
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1):
            raise Invalid("dataset.test_fraction", f"must be a number between 0 and 1 (exclusive), got {fraction!r}")

    @property
    def registered(self) -> bool:
        return self.path is None

    @property
    def spec(self) -> str:
        """What ``data.load_split`` takes: the registered name or the file path."""
        return self.name if self.path is None else str(self.path)

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``data.load_split(self.spec, split, **kwargs)``."""
        kwargs: dict[str, Any] = {} if self.test_fraction is None else {"test_fraction": self.test_fraction}
        if self.path is not None:
            kwargs.update(text_fields=list(self.text_fields), label_field=self.label_field, name=self.name,
                          labels=None if self.labels is None else list(self.labels))
        return kwargs


@dataclass(frozen=True)
class FewShot:
    k: int = 16
    seeds: tuple[int, ...] = LMBFF_SEEDS

    def __post_init__(self) -> None:
        need_int("few_shot.k", self.k, 1)
        if not self.seeds:
            raise Invalid("few_shot.seeds", "must list at least one seed")
        for i, seed in enumerate(self.seeds):
            need_int(f"few_shot.seeds[{i}]", seed, 0)
        if len(set(self.seeds)) != len(self.seeds):
            raise Invalid("few_shot.seeds", f"must not repeat a seed, got {list(self.seeds)}")


@dataclass(frozen=True)
class TemplateBlocks:
    """Pieces combined as ``prefix + fields + connector + ending``; each ending holds the slot."""

    prefixes: tuple[str, ...] = ("",)
    connectors: tuple[str, ...] = (" ",)
    endings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("prefixes", "connectors", "endings"):
            values = getattr(self, name)
            if not values:
                raise Invalid(f"templates.blocks.{name}", "must list at least one piece")
            for i, value in enumerate(values):
                if not isinstance(value, str):
                    raise Invalid(f"templates.blocks.{name}[{i}]", f"must be a quoted string, got {value!r}")

    @property
    def n_combinations(self) -> int:
        return len(self.prefixes) * len(self.connectors) * len(self.endings)


@dataclass(frozen=True)
class TemplateSpace:
    seeds: tuple[Template, ...] = ()
    blocks: TemplateBlocks | None = None
    max_candidates: int = 40

    def __post_init__(self) -> None:
        if not self.seeds and self.blocks is None:
            raise Invalid("templates", "must give seeds, blocks or both")
        need_int("templates.max_candidates", self.max_candidates, 1)


@dataclass(frozen=True)
class VerbalizerSpace:
    seeds: tuple[Verbalizer, ...]

    def __post_init__(self) -> None:
        if not self.seeds:
            raise Invalid("verbalizers.seeds", "must list at least one verbalizer")
        for i, seed in enumerate(self.seeds[1:], start=1):
            if seed.labels != self.seeds[0].labels:
                raise Invalid(f"verbalizers.seeds[{i}]", f"has labels {list(seed.labels)}, but seeds[0] has {list(self.seeds[0].labels)}")


@dataclass(frozen=True)
class Budget:
    """Stop after ``trials`` trials or ``timeout_seconds``, whichever comes first; at least one is set."""

    trials: int | None = 60
    timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.trials is None and self.timeout_seconds is None:
            raise Invalid("budget", "must set trials, timeout_seconds or both")
        if self.trials is not None:
            need_int("budget.trials", self.trials, 1)
        timeout = self.timeout_seconds
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
            raise Invalid("budget.timeout_seconds", f"must be a number of seconds above 0 (or null), got {timeout!r}")


@dataclass(frozen=True)
class Pruner:
    type: str = "median"
    chunks: int = 4  # dev examples are scored in this many chunks; a trial may stop after each

    def __post_init__(self) -> None:
        need_choice("pruner.type", self.type, PRUNERS)
        need_int("pruner.chunks", self.chunks, 1)


@dataclass(frozen=True)
class Ensemble:
    size: int = 5  # distinct templates (each costs one pass over the test split)
    prompts_per_template: int = 3  # verbalizer/calibration variants per template, free once it is cached

    def __post_init__(self) -> None:
        need_int("ensemble.size", self.size, 1)
        need_int("ensemble.prompts_per_template", self.prompts_per_template, 1)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; ``raw`` is the merged YAML, ``source`` the file it came from."""

    name: str
    dataset: DatasetSpec
    templates: TemplateSpace
    verbalizers: VerbalizerSpace
    model: str = DEFAULT_MODEL  # a registered name or an absolute folder path
    max_length: int | None = None  # tokens per prompt (texts are cut to fit); None: the model's default
    few_shot: FewShot = FewShot()
    generators: Generators = Generators()
    calibration: tuple[str, ...] = DEFAULT_CALIBRATION
    objective: str = "accuracy"
    budget: Budget = Budget()
    pruner: Pruner = Pruner()
    ensemble: Ensemble = Ensemble()
    description: str = ""
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        from autoprompt_search.scoring import CALIBRATION_METHODS  # lazy: scoring imports torch

        if not isinstance(self.name, str) or not self.name.strip():
            raise Invalid("name", f"must be a non-empty string, got {self.name!r}")
        if not isinstance(self.description, str):
            raise Invalid("description", "must be a string")
        if self.max_length is not None:
            need_int("max_length", self.max_length, MIN_MAX_LENGTH)
        if not self.calibration:
            raise Invalid("calibration", f"must list at least one of {', '.join(CALIBRATION_METHODS)}")
        for i, method in enumerate(self.calibration):
            need_choice(f"calibration[{i}]", method, tuple(CALIBRATION_METHODS))
        if len(set(self.calibration)) != len(self.calibration):
            raise Invalid("calibration", f"must not repeat a method, got {list(self.calibration)}")
        need_choice("objective", self.objective, OBJECTIVES)
        for i, seed in enumerate(self.verbalizers.seeds):
            if self.dataset.labels is not None and set(seed.labels) != set(self.dataset.labels):
                raise Invalid(f"verbalizers.seeds[{i}]", f"covers {list(seed.labels)}, but the data's labels are {list(self.dataset.labels)}")
        for i, template in enumerate(self.templates.seeds):
            if template.n_triggers:
                raise Invalid(f"templates.seeds[{i}]", f"{template.source!r} holds trigger slots [T]; put it under generators.triggers.templates")
            unknown = [f for f in template.fields_used if f not in self.dataset.text_fields]
            if unknown:
                raise Invalid(f"templates.seeds[{i}]", f"uses {{{unknown[0]}}}, not a field of the data ({', '.join(self.dataset.text_fields)})")
        if self.generators.rounds.count > 1 and not (self.generators.label_words.enabled or self.generators.label_probe.enabled):
            raise Invalid("generators.rounds.count", "later rounds run the word generators again: turn on "
                                                     "generators.label_words or generators.label_probe, or keep one round")
        if self.generators.label_probe.enabled and self.few_shot.k < 2:
            raise Invalid("generators.label_probe", f"needs few_shot.k of at least 2 (the probe is cross-validated), got {self.few_shot.k}")
        shown = self.generators.demonstrations
        if shown.enabled and shown.per_class * shown.sets >= self.few_shot.k:
            raise Invalid("generators.demonstrations", f"shows per_class x sets = {shown.per_class * shown.sets} train examples "
                                                      f"per label, which must stay below few_shot.k ({self.few_shot.k}): "
                                                      "the shown examples are not scored")
        self._check_for_model()

    def _check_for_model(self) -> None:
        """Causal models score the slot as the continuation, so nothing may follow ``{mask}``."""
        if self.model_kind != "causal":
            return
        pieces = [(f"templates.seeds[{i}]", t) for i, t in enumerate(self.templates.seeds)]
        pieces += [(f"generators.triggers.templates[{i}]", t) for i, t in enumerate(self.generators.triggers.templates)]
        if self.templates.blocks is not None:
            joined = join_fields(self.dataset.text_fields)
            pieces += [(f"templates.blocks.endings[{i}]", Template.parse(f"{joined} {e}")) for i, e in enumerate(self.templates.blocks.endings)]
        for key, template in pieces:
            if template.continues_after_slot():
                raise Invalid(key, f"continues after the slot {{mask}} in {template.source!r}; the model {self.model} is causal, so {{mask}} must come last")

    @property
    def model_kind(self) -> str | None:
        """``causal`` or ``masked`` for a registered model; None for a folder (known once loaded)."""
        asset = MODELS.get(self.model)
        return asset.lm_type if asset is not None else None

    @property
    def labels(self) -> tuple[str, ...]:
        """The dataset's labels, or for a file without ``labels`` those of the verbalizer seeds."""
        return self.dataset.labels or self.verbalizers.seeds[0].labels

    def with_overrides(self, model: str | None = None, trials: int | None = None, timeout: float | None = None) -> SearchSpace:
        """A copy with the command line's model or budget; ``overrides`` records what changed."""
        changes: dict[str, Any] = {}
        overrides = dict(self.overrides)
        budget = self.budget
        if model is not None:
            changes["model"] = overrides["model"] = model
        try:
            if trials is not None or timeout is not None:
                budget = Budget(trials if trials is not None else budget.trials, timeout if timeout is not None else budget.timeout_seconds)
                changes["budget"] = budget
                overrides["budget"] = dataclasses.asdict(budget)
            return dataclasses.replace(self, **changes, overrides=overrides)
        except Invalid as error:
            raise UserError(f"{self.source}: with --model/--trials/--timeout given: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """The effective space as JSON-able data (for the run manifest)."""
        result = {name: dataclasses.asdict(getattr(self, name)) for name in ("few_shot", "generators", "budget", "pruner", "ensemble")}
        result["generators"]["triggers"]["templates"] = [t.source for t in self.generators.triggers.templates]
        blocks = self.templates.blocks
        return {
            "name": self.name, "description": self.description, "source": str(self.source) if self.source else None,
            "dataset": {**dataclasses.asdict(self.dataset), "path": str(self.dataset.path) if self.dataset.path else None},
            "model": self.model, "max_length": self.max_length, "labels": list(self.labels),
            "templates": {"seeds": [t.source for t in self.templates.seeds], "max_candidates": self.templates.max_candidates,
                          "blocks": dataclasses.asdict(blocks) if blocks else None},
            "verbalizers": {"seeds": [v.to_dict() for v in self.verbalizers.seeds]},
            "calibration": list(self.calibration), "objective": self.objective, **result, "overrides": dict(self.overrides),
        }  # fmt: skip


# ------------------------------------------------------------------------------- reading files


def _read_yaml(path: Path, included_by: str = "") -> dict[str, Any]:
    where = f"{included_by}: include: " if included_by else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{where}{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{where}{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise UserError(f"{where}{path}: cannot read it ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        line = text.splitlines()[mark.line] if mark is not None and mark.line < len(text.splitlines()) else ""
        hint = " (YAML reads an unquoted {...} as a mapping: put templates in quotes)" if "{" + SLOT + "}" in line else ""
        raise UserError(f"{path}: {at}invalid YAML: {problem}{hint}") from None
    if data is None:
        raise UserError(f"{path}: the file is empty")
    _check_duplicates(yaml.compose(text, Loader=yaml.SafeLoader), path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys (dataset, templates, verbalizers, ...), found a {type(data).__name__}")
    return data


def _check_duplicates(node: yaml.Node | None, path: Path) -> None:
    """safe_load keeps the last of two equal keys silently; a repeated section would lose data."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in first:
                    raise UserError(f"{path}: line {key.start_mark.line + 1}: duplicate key {key.value!r} (first at line {first[key.value]})")
                first[key.value] = key.start_mark.line + 1
            _check_duplicates(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, path)


def _check_keys(data: Mapping[Any, Any], schema: Mapping[str, Any], file: Path, prefix: str = "") -> None:
    """Unknown keys are errors, with a suggestion when one is close."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if not isinstance(key, str) or key not in schema:
            known = list(schema)
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{file}: {path}: unknown key ({hint}known here: {', '.join(known)})")
        if isinstance(schema[key], dict) and isinstance(value, Mapping):
            _check_keys(value, schema[key], file, path + ".")


def _layers(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """(file, data) layers in the order they apply: includes (depth first), then the file."""
    data = _read_yaml(path, str(chain[-1]) if chain else "")
    _check_keys(data, SCHEMA, path)
    includes = data.pop("include", None)
    if includes is None:
        includes = []
    elif isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) and i.strip() for i in includes):
        raise UserError(f"{path}: include: must be a file name or a list of file names")
    layers: list[tuple[Path, dict[str, Any]]] = []
    for name in includes:
        target = path.parent / name
        seen = [p.resolve() for p in (*chain, path)]
        if target.resolve() in seen:
            cycle = " -> ".join(str(p) for p in (*chain[seen.index(target.resolve()):], path, target))
            raise UserError(f"{path}: include: include cycle: {cycle}")
        layers += _layers(target, (*chain, path))
    return [*layers, (path, data)]


class _Origins:
    """Which file set each key of the merged data, so an error names that file."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.by_key: dict[tuple[str, ...], Path] = {}

    def mark(self, keys: tuple[str, ...], value: Any, file: Path) -> None:
        for old in [k for k in self.by_key if k[: len(keys)] == keys]:
            del self.by_key[old]
        self.by_key[keys] = file
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.mark((*keys, str(key)), item, file)

    def file(self, key: str) -> Path:
        keys = tuple(re.sub(r"\[\d+\]", "", key).split("."))
        while keys:
            if keys in self.by_key:
                return self.by_key[keys]
            keys = keys[:-1]
        return self.top


def _merge(base: dict[str, Any], layer: Mapping[str, Any], file: Path, origins: _Origins, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    merged = dict(base)
    for key, value in layer.items():
        here = (*keys, str(key))
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value, file, origins, here)
        else:
            merged[key] = copy.deepcopy(value)
            origins.mark(here, value, file)
    return merged


# ------------------------------------------------------------------------------- building


def load_space(path: str | Path) -> SearchSpace:
    """Read, merge and validate a search-space YAML file."""
    path = Path(path)
    origins = _Origins(path)
    raw: dict[str, Any] = {}
    for file, layer in _layers(path):
        raw = _merge(raw, layer, file, origins)
    try:
        return _build(raw, path, origins)
    except Invalid as error:
        raise UserError(f"{origins.file(error.key)}: {error}") from None


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key.rpartition(".")[2], {})
    if not isinstance(value, Mapping):
        raise Invalid(key, f"must be a mapping, got {value!r}")
    return value


def _tuple(value: Any, key: str) -> tuple[Any, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise Invalid(key, f"must be a list, got {value!r}")
    return tuple(value)


def _kwargs(section: Mapping[str, Any], key: str, **list_keys: bool) -> dict[str, Any]:
    """A section's values as dataclass arguments; the keys in ``list_keys`` become tuples."""
    return {name: _tuple(value, f"{key}.{name}") if name in list_keys else value for name, value in section.items()}


def _text(value: Any, key: str) -> str:
    """A label or word from YAML: strings and integers, never YAML's booleans (yes/no/on/off)."""
    if isinstance(value, bool):
        raise Invalid(key, f"has {value}, which YAML read from an unquoted yes/no/on/off/true/false: put it in quotes")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise Invalid(key, f"must be a quoted string, got {value!r}")
    return value


def _build(raw: dict[str, Any], path: Path, origins: _Origins) -> SearchSpace:
    dataset = _dataset(raw.get("dataset"), origins)
    labels = dataset.labels
    templates = _section(raw, "templates")
    blocks = None
    if templates.get("blocks") is not None:
        blocks = TemplateBlocks(**_kwargs(_section(templates, "templates.blocks"), "templates.blocks", prefixes=True, connectors=True, endings=True))
        _check_blocks(blocks, dataset.text_fields, origins)
    seeds = tuple(_template(s, f"templates.seeds[{i}]", dataset.text_fields, origins) for i, s in enumerate(_tuple(templates.get("seeds", []), "templates.seeds")))
    verbalizer_seeds = []
    for i, spec in enumerate(_tuple(_section(raw, "verbalizers").get("seeds", []), "verbalizers.seeds")):
        key = f"verbalizers.seeds[{i}]"
        if not isinstance(spec, Mapping):
            raise Invalid(key, f"must be a mapping from each label to its words, got {spec!r}")
        spec = {_text(label, key): [_text(w, key) for w in (words if isinstance(words, list) else [words])] for label, words in spec.items()}
        labels = labels or tuple(sorted(spec))  # a file without labels: data.py sorts the labels found
        verbalizer_seeds.append(Verbalizer.parse(spec, labels, origin=f"{origins.file(key)}: {key}"))
    generators = _section(raw, "generators")
    label_words = _section(generators, "generators.label_words")
    triggers = _kwargs(_section(generators, "generators.triggers"), "generators.triggers", filters=True)
    triggers["templates"] = tuple(_template(t, f"generators.triggers.templates[{i}]", dataset.text_fields, origins)
                                  for i, t in enumerate(_tuple(triggers.get("templates", []), "generators.triggers.templates")))
    calibration = raw.get("calibration", list(DEFAULT_CALIBRATION))
    model = _model(raw.get("model", DEFAULT_MODEL), origins)
    return SearchSpace(
        name=raw.get("name", path.stem), description=raw.get("description", ""), dataset=dataset, model=model,
        max_length=raw.get("max_length"),
        few_shot=FewShot(**_kwargs(_section(raw, "few_shot"), "few_shot", seeds=True)),
        templates=TemplateSpace(seeds, blocks, templates.get("max_candidates", 40)),
        verbalizers=VerbalizerSpace(tuple(verbalizer_seeds)),
        generators=Generators(LabelWordsGenerator(**_kwargs(label_words, "generators.label_words", scoring=True)),
                              LabelProbeGenerator(**_kwargs(_section(generators, "generators.label_probe"), "generators.label_probe")),
                              TriggersGenerator(**triggers),
                              GenerationRounds(**_kwargs(_section(generators, "generators.rounds"), "generators.rounds")),
                              DemonstrationsGenerator(**_kwargs(_section(generators, "generators.demonstrations"),
                                                                "generators.demonstrations"))),
        calibration=_tuple(calibration, "calibration"), objective=raw.get("objective", "accuracy"),
        budget=Budget(**_kwargs(_section(raw, "budget"), "budget")), pruner=Pruner(**_kwargs(_section(raw, "pruner"), "pruner")),
        ensemble=Ensemble(**_kwargs(_section(raw, "ensemble"), "ensemble")), source=path, raw=raw,
    )  # fmt: skip


def _template(value: Any, key: str, fields: tuple[str, ...], origins: _Origins) -> Template:
    if not isinstance(value, str):
        hint = " (YAML reads an unquoted {...} as a mapping: put the template in quotes)" if isinstance(value, Mapping) else ""
        raise Invalid(key, f"must be a quoted string, got {value!r}{hint}")
    return Template.parse(value, fields=fields, origin=f"{origins.file(key)}: {key}")


def _check_blocks(blocks: TemplateBlocks, fields: tuple[str, ...], origins: _Origins) -> None:
    """Each piece must fit a template: prefixes and connectors without the slot, endings with it."""
    joined = join_fields(fields)
    for name, build in (("prefixes", lambda p: f"{p}{joined} {{mask}}"), ("connectors", lambda c: f"{joined}{c}{{mask}}"),
                        ("endings", lambda e: f"{joined} {e}")):  # fmt: skip
        for i, piece in enumerate(getattr(blocks, name)):
            key = f"templates.blocks.{name}[{i}]"
            if _template(build(piece), key, fields, origins).n_triggers:
                raise UserError(f"{origins.file(key)}: {key}: {piece!r} holds a trigger slot [T]; "
                                "templates with triggers go under generators.triggers.templates")


def join_fields(fields: tuple[str, ...]) -> str:
    """The input part of a block combination: ``{text}``, or ``{a} {b}`` for several fields."""
    return " ".join(f"{{{name}}}" for name in fields)


def _dataset(value: Any, origins: _Origins) -> DatasetSpec:
    if value is None:
        raise Invalid("dataset", f"is required: a registered dataset ({', '.join(sorted(REGISTERED))}) or a mapping with 'path'")
    if isinstance(value, str):
        if value in REGISTERED:
            return DatasetSpec(value)
        if Path(value).suffix.lower() not in FILE_SUFFIXES:
            close = difflib.get_close_matches(value, sorted(REGISTERED), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise Invalid("dataset", f"{value!r} is not a registered dataset ({', '.join(sorted(REGISTERED))}) nor a "
                                      f"{'/'.join(FILE_SUFFIXES)} file{hint}")
        value = {"path": value}
        origins.by_key[("dataset", "path")] = origins.file("dataset")
    if not isinstance(value, Mapping):
        raise Invalid("dataset", f"must be a registered name or a mapping with 'path', got {value!r}")
    options = dict(value)
    if "text_fields" in options:
        options["text_fields"] = _tuple(options["text_fields"], "dataset.text_fields")
    if options.get("labels") is not None:
        options["labels"] = tuple(_text(y, f"dataset.labels[{i}]") for i, y in enumerate(_tuple(options["labels"], "dataset.labels")))
    if "path" not in options:
        return DatasetSpec(**{"name": options.pop("name", None), **options})
    given = options.pop("path")
    if not isinstance(given, str) or not given.strip():
        raise Invalid("dataset.path", f"must be a file path, got {given!r}")
    file = Path(given).expanduser()
    file = Path(os.path.normpath((file if file.is_absolute() else origins.file("dataset.path").parent / file).absolute()))
    if not file.is_file():
        raise Invalid("dataset.path", f"{given!r}: no such file (looked for {file})")
    if file.suffix.lower() not in FILE_SUFFIXES:
        raise Invalid("dataset.path", f"{given!r}: unknown extension; use {', '.join(FILE_SUFFIXES)}")
    return DatasetSpec(**{"name": options.pop("name", None) or file.stem, "path": file, **options})


def _model(value: Any, origins: _Origins) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("model", f"must be a registered model ({', '.join(MODELS)}) or a model folder, got {value!r}")
    if value in MODELS:
        return value
    folder = Path(value).expanduser()
    folder = folder if folder.is_absolute() else origins.file("model").parent / folder
    if not folder.is_dir():
        raise Invalid("model", f"{value!r} is neither a registered model ({', '.join(MODELS)}) nor a folder (looked for {folder})")
    return str(folder.absolute())
