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
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from autoprompt_search.asset_registry import DEFAULT_MODEL, MODELS
from autoprompt_search.candidates.generators import REGISTRY, GenerationRounds, Generators, section_schema
from autoprompt_search.candidates.template_pool import TemplateBlocks, join_fields
from autoprompt_search.data import FILE_SUFFIXES, REGISTERED
from autoprompt_search.errors import UserError
from autoprompt_search.fileio import lone_surrogate
from autoprompt_search.space_checks import Invalid
from autoprompt_search.space_types import (
    DEFAULT_CALIBRATION,
    Budget,
    DatasetSpec,
    Ensemble,
    FewShot,
    Pruner,
    SearchSpace,
    TemplateSpace,
    Unlabelled,
    VerbalizerSpace,
    absolute_path,
    as_records,
)
from autoprompt_search.templates import SLOT, Template
from autoprompt_search.verbalizers import Verbalizer

_LEAF = None
SCHEMA: dict[str, Any] = {
    "include": _LEAF, "name": _LEAF, "description": _LEAF, "model": _LEAF, "max_length": _LEAF,
    "dataset": {"path": _LEAF, "name": _LEAF, "text_fields": _LEAF, "label_field": _LEAF, "labels": _LEAF,
                "test_fraction": _LEAF},
    "few_shot": {"k": _LEAF, "seeds": _LEAF},
    "templates": {"seeds": _LEAF, "blocks": {"prefixes": _LEAF, "connectors": _LEAF, "endings": _LEAF},
                  "max_candidates": _LEAF},
    "verbalizers": {"seeds": _LEAF},
    "generators": section_schema(),
    "calibration": _LEAF, "objective": _LEAF,
    "budget": {"trials": _LEAF, "timeout_seconds": _LEAF},
    "pruner": {"type": _LEAF, "chunks": _LEAF},
    "ensemble": {"size": _LEAF, "prompts_per_template": _LEAF},
    "unlabelled": {"texts": _LEAF, "select": _LEAF, "path": _LEAF},
}  # fmt: skip


def schema() -> dict[str, Any]:
    """The keys a space may hold, with the generators registered now (one may be added after import)."""
    return {**SCHEMA, "generators": section_schema()}


# ------------------------------------------------------------------------------- reading files


def read_space_yaml(path: Path, included_by: str = "") -> dict[str, Any]:
    """One search-space file's own data, its includes not followed; errors name the file and line."""
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
    except RecursionError:
        raise UserError(f"{path}: invalid YAML: nested too deeply") from None
    except (ValueError, LookupError, AttributeError, TypeError) as error:  # PyYAML's constructors: !!int abc, 2020-13-45, ...
        raise UserError(f"{path}: invalid YAML: a value cannot be read ({type(error).__name__}: {error})") from None
    if data is None:
        raise UserError(f"{path}: the file is empty")
    _check_values(data, str(path))
    _check_duplicates(yaml.compose(text, Loader=yaml.SafeLoader), path, set())
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys (dataset, templates, verbalizers, ...), found a {type(data).__name__}")
    return data


MAX_NODES = 100_000  # values in a space, aliases expanded: more is an alias bomb
MAX_INT = 2**63  # larger integers cannot be a count, and some cannot even be printed


def _check_values(data: Any, origin: str) -> None:
    """Refuse what would break later: a cycle of aliases, an alias bomb, a huge integer, text that is not UTF-8."""
    sizes: dict[int, int] = {}  # id -> nodes with aliases expanded, so each shared value is walked once
    active: set[int] = set()

    def walk(value: Any, key: str) -> int:
        if isinstance(value, bool):
            return 1
        if isinstance(value, int):
            if abs(value) > MAX_INT:
                raise UserError(f"{origin}: {key or 'the file'}: the integer is too large (beyond ±2**63)")
            return 1
        if isinstance(value, str):
            if (surrogate := lone_surrogate(value)) is not None:
                raise UserError(f"{origin}: {key or 'the file'}: the text holds a lone surrogate {surrogate!r}, "
                                "which is not a character (write the character itself, not its \\u escape)")
            return 1
        if not isinstance(value, (dict, list)):
            return 1
        if id(value) in active:
            raise UserError(f"{origin}: {key or 'the file'}: the value contains itself (an alias inside its own anchor)")
        if id(value) not in sizes:
            active.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            size = 1
            for name, item in items:
                if isinstance(value, list):
                    here = f"{key}[{name}]"
                else:
                    walk(name, key)  # a key is checked as a value
                    here = f"{key}.{name}" if key else str(name)
                size += walk(item, here)
                if size > MAX_NODES:
                    raise UserError(f"{origin}: {key or 'the file'}: more than {MAX_NODES:,} values once its aliases are expanded")
            active.discard(id(value))
            sizes[id(value)] = size
        return sizes[id(value)]

    walk(data, "")


def _check_duplicates(node: yaml.Node | None, path: Path, seen: set[int]) -> None:
    """safe_load keeps the last of two equal keys silently; a repeated section would lose data."""
    if id(node) in seen:  # an alias: checked where its anchor is
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in first:
                    raise UserError(
                        f"{path}: line {key.start_mark.line + 1}: duplicate key {key.value!r} (first at line {first[key.value]})"
                    )
                first[key.value] = key.start_mark.line + 1
            _check_duplicates(value, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, path, seen)


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
    data = read_space_yaml(path, str(chain[-1]) if chain else "")
    _check_keys(data, schema(), path)
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
        try:
            resolved = target.resolve()
        except (OSError, ValueError, RuntimeError) as error:  # a NUL, a lone surrogate, a name too long, ~nosuchuser
            raise UserError(f"{path}: include: {name!r} is not a usable file name ({error})") from None
        if resolved in seen:
            cycle = " -> ".join(str(p) for p in (*chain[seen.index(target.resolve()) :], path, target))
            raise UserError(f"{path}: include: include cycle: {cycle}")
        layers += _layers(target, (*chain, path))
    return [*layers, (path, data)]


class _Origins:
    """Which file set each key of the merged data, so an error names that file."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.by_key: dict[tuple[str, ...], Path] = {}

    def mark(self, keys: tuple[str, ...], value: Any, file: Path, replaced: Any = None) -> None:
        """``file`` set ``keys`` to ``value``, replacing ``replaced``: the keys under that are forgotten."""
        self._forget(keys, replaced)
        self.by_key[keys] = file
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.mark((*keys, str(key)), item, file)

    def _forget(self, keys: tuple[str, ...], replaced: Any) -> None:
        if isinstance(replaced, Mapping):
            for key, item in replaced.items():
                self.by_key.pop((*keys, str(key)), None)
                self._forget((*keys, str(key)), item)

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
            origins.mark(here, value, file, merged.get(key))
            merged[key] = copy.deepcopy(value)
    return merged


# ------------------------------------------------------------------------------- building


BUNDLED_DIR = Path(__file__).parent / "search_spaces"  # shipped in the wheel; the top-level search_spaces/ links here


def bundled_spaces() -> list[str]:
    """Names of the search spaces shipped with the package, without ``.yaml`` and without ``base`` (only included)."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml") if p.stem != "base")


def _space_file(given: str | Path) -> Path:
    """The file to load: ``given`` if it is a file, else the bundled space a bare name (``mr``, ``mr.yaml``) names."""
    path = Path(given)
    name = path.name.removesuffix(".yaml")
    try:
        if path.is_file() or path.name != str(given):  # an existing file always wins; a path with a folder is never a name
            return path
        if (BUNDLED_DIR / f"{name}.yaml").is_file():  # base.yaml too, for an include
            return BUNDLED_DIR / f"{name}.yaml"
    except OSError as error:  # a name too long
        raise UserError(f"{given}: not a usable file name ({error.strerror})") from None
    raise UserError(f"{given}: no such file, nor a bundled search space (bundled: {', '.join(bundled_spaces())})")


def load_space(path: str | Path) -> SearchSpace:
    """Read, merge and validate a search-space YAML file, or a bundled space by name (see :func:`bundled_spaces`)."""
    path = _space_file(path)
    origins = _Origins(path)
    raw: dict[str, Any] = {}
    for file, layer in _layers(path):
        raw = _merge(raw, layer, file, origins)
    try:
        return _build(raw, path, origins)
    except Invalid as error:
        raise UserError(f"{origins.file(error.key)}: {error}") from None


def space_from_mapping(mapping: Mapping[str, Any], *, name: str = "space", records: Any = None) -> SearchSpace:
    """A space from Python data with the YAML file's keys and checks (``include:`` names files or
    bundled spaces, relative to the working folder); errors name ``<name>``. Relative paths in it
    are relative to the working folder. ``records`` (a list of mappings or a pandas DataFrame) are
    the examples, the ``dataset`` section naming their columns (``text_fields``, ``label_field``,
    ``labels``) and the dataset's ``name``."""
    top = Path.cwd() / f"<{name}>"
    data = copy.deepcopy(dict(mapping))
    _check_values(data, str(top))
    _check_keys(data, schema(), top)
    includes = data.pop("include", None) or []
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(i, str) and i.strip() for i in includes):
        raise UserError(f"{top}: include: must be a file name or a list of file names")
    origins = _Origins(top)
    raw: dict[str, Any] = {}
    for include in includes:
        for file, layer in _layers(_space_file(include)):
            raw = _merge(raw, layer, file, origins)
    raw = _merge(raw, data, top, origins)
    try:
        return _build({"name": name, **raw}, None, origins, records)
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


def _build(raw: dict[str, Any], path: Path | None, origins: _Origins, records: Any = None) -> SearchSpace:
    dataset = _dataset(raw.get("dataset"), origins) if records is None else _records_dataset(raw.get("dataset"), records)
    labels = dataset.labels
    templates = _section(raw, "templates")
    blocks = None
    if templates.get("blocks") is not None:
        blocks = TemplateBlocks(
            **_kwargs(_section(templates, "templates.blocks"), "templates.blocks", prefixes=True, connectors=True, endings=True)
        )
        _check_blocks(blocks, dataset.text_fields, origins)
    seeds = tuple(
        _template(s, f"templates.seeds[{i}]", dataset.text_fields, origins)
        for i, s in enumerate(_tuple(templates.get("seeds", []), "templates.seeds"))
    )
    verbalizer_seeds = []
    for i, spec in enumerate(_tuple(_section(raw, "verbalizers").get("seeds", []), "verbalizers.seeds")):
        key = f"verbalizers.seeds[{i}]"
        if not isinstance(spec, Mapping):
            raise Invalid(key, f"must be a mapping from each label to its words, got {spec!r}")
        spec = {
            _text(label, key): [_text(w, key) for w in (words if isinstance(words, list) else [words])] for label, words in spec.items()
        }
        labels = labels or tuple(sorted(spec))  # a file without labels: data.py sorts the labels found
        verbalizer_seeds.append(Verbalizer.parse(spec, labels, origin=f"{origins.file(key)}: {key}"))
    generators = _generators(_section(raw, "generators"), dataset.text_fields, origins)
    calibration = raw.get("calibration", list(DEFAULT_CALIBRATION))
    model = _model(raw.get("model", DEFAULT_MODEL), origins)
    return SearchSpace(
        name=raw.get("name", path.stem if path else "space"), description=raw.get("description", ""), dataset=dataset, model=model,
        max_length=raw.get("max_length"),
        few_shot=FewShot(**_kwargs(_section(raw, "few_shot"), "few_shot", seeds=True)),
        templates=TemplateSpace(seeds, blocks, templates.get("max_candidates", 40)),
        verbalizers=VerbalizerSpace(tuple(verbalizer_seeds)),
        generators=generators,
        calibration=_tuple(calibration, "calibration"), objective=raw.get("objective", "accuracy"),
        budget=Budget(**_kwargs(_section(raw, "budget"), "budget")), pruner=Pruner(**_kwargs(_section(raw, "pruner"), "pruner")),
        ensemble=Ensemble(**_kwargs(_section(raw, "ensemble"), "ensemble")),
        unlabelled=_unlabelled(_section(raw, "unlabelled"), origins), source=path, raw=raw,
    )  # fmt: skip


def _generators(section: Mapping[str, Any], fields: tuple[str, ...], origins: _Origins) -> Generators:
    """Each registered generator's config from its section, read by its dataclass fields: a tuple
    field takes a list (or one value), a tuple of templates parses each."""
    configs = {}
    for name, generator in REGISTRY.items():
        key = f"generators.{name}"
        kwargs = dict(_section(section, key))
        for item in dataclasses.fields(generator.config):
            if item.name in kwargs and str(item.type).startswith("tuple"):
                values = _tuple(kwargs[item.name], f"{key}.{item.name}")
                if "Template" in str(item.type):
                    values = tuple(_template(t, f"{key}.{item.name}[{i}]", fields, origins) for i, t in enumerate(values))
                kwargs[item.name] = values
        configs[name] = generator.config(**kwargs)
    return Generators(configs, GenerationRounds(**_section(section, "generators.rounds")))


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
                raise UserError(
                    f"{origins.file(key)}: {key}: {piece!r} holds a trigger slot [T]; "
                    "templates with triggers go under generators.triggers.templates"
                )


def slug(text: str) -> str:
    """A file-name-safe form of a model name or folder."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(text).name if "/" in text else text).strip("-")


def _records_dataset(value: Any, records: Any) -> DatasetSpec:
    """The dataset section of a space whose examples are given in memory: its name and columns."""
    records = as_records(records)
    options = dict(value) if isinstance(value, Mapping) else {"name": value}
    if "path" in options:
        raise Invalid("dataset.path", "is for a data file; the examples were given in memory")
    if "text_fields" in options:
        options["text_fields"] = _tuple(options["text_fields"], "dataset.text_fields")
    if options.get("labels") is not None:
        options["labels"] = tuple(_text(y, f"dataset.labels[{i}]") for i, y in enumerate(_tuple(options["labels"], "dataset.labels")))
    return DatasetSpec(**{**options, "name": str(options.get("name") or "data"), "records": tuple(records)})


def _dataset(value: Any, origins: _Origins) -> DatasetSpec:
    if value is None:
        raise Invalid("dataset", f"is required: a registered dataset ({', '.join(sorted(REGISTERED))}) or a mapping with 'path'")
    if isinstance(value, str):
        if value in REGISTERED:
            return DatasetSpec(value)
        if Path(value).suffix.lower() not in FILE_SUFFIXES:
            close = difflib.get_close_matches(value, sorted(REGISTERED), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise Invalid(
                "dataset",
                f"{value!r} is not a registered dataset ({', '.join(sorted(REGISTERED))}) nor a {'/'.join(FILE_SUFFIXES)} file{hint}",
            )
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
    file = _data_file(options.pop("path"), "dataset.path", origins)
    return DatasetSpec(**{"name": options.pop("name", None) or file.stem, "path": file, **options})


def _data_file(given: Any, key: str, origins: _Origins) -> Path:
    """The data file a space names at ``key``, relative to the file that sets it; it must exist."""
    if not isinstance(given, str) or not given.strip():
        raise Invalid(key, f"must be a file path, got {given!r}")
    try:
        file = Path(given).expanduser()
        file = absolute_path(file if file.is_absolute() else origins.file(key).parent / file)
        found = file.is_file()
    except (OSError, RuntimeError) as error:  # ~nosuchuser, a name too long
        raise Invalid(key, f"{given!r}: not a usable file path ({error})") from None
    if not found:
        raise Invalid(key, f"{given!r}: no such file (looked for {file})")
    if file.suffix.lower() not in FILE_SUFFIXES:
        raise Invalid(key, f"{given!r}: unknown extension; use {', '.join(FILE_SUFFIXES)}")
    return file


def _unlabelled(section: Mapping[str, Any], origins: _Origins) -> Unlabelled:
    options = _kwargs(section, "unlabelled")
    if options.get("path") is not None:
        options["path"] = _data_file(options["path"], "unlabelled.path", origins)
    return Unlabelled(**options)


def _model(value: Any, origins: _Origins) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("model", f"must be a registered model ({', '.join(MODELS)}) or a model folder, got {value!r}")
    if value in MODELS:
        return value
    try:
        folder = Path(value).expanduser()
        folder = folder if folder.is_absolute() else origins.file("model").parent / folder
        found = folder.is_dir()
    except (OSError, RuntimeError) as error:  # ~nosuchuser, a name too long
        raise Invalid("model", f"{value!r}: not a usable folder path ({error})") from None
    if not found:
        raise Invalid("model", f"{value!r} is neither a registered model ({', '.join(MODELS)}) nor a folder (looked for {folder})")
    return str(folder.absolute())
