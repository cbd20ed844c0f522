"""Fuzzing with Hypothesis: the template parser, the search-space loader and the data loaders.

Each target gets ``FUZZ_EXAMPLES`` (10,000) generated inputs, near-valid and junk alike, and may
only succeed or raise the project's own error (:class:`UserError`; ``Invalid`` is one). Any other
exception (KeyError, TypeError, UnicodeDecodeError, a YAML or JSON error, RecursionError ...), or
an example that runs past ``HANG_SECONDS``, fails the test. Every success is checked for sanity: a
parsed template writes back to the same segments, a loaded space only holds what its checks allow,
a loaded dataset only has labels from its ``labels`` and splits cleanly.

The runs are derandomized (the same inputs on every run, no example database), and every file is
written into one temporary folder per target, reused from example to example. Each test counts the
examples it ran and the successes among them, and fails if fewer than the settings ask for ran.
``AUTOPROMPT_FUZZ_EXAMPLES`` lowers the count while developing; CI runs the default.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoprompt_search import data
from autoprompt_search.asset_registry import DATASETS, MODELS
from autoprompt_search.candidates.generators import REGISTRY
from autoprompt_search.candidates.generators.label_words import LABEL_WORD_SCORING
from autoprompt_search.candidates.generators.triggers import TRIGGER_FILTERS, TRIGGER_LOSSES, TRIGGER_POSITIONS
from autoprompt_search.errors import UserError
from autoprompt_search.examples import example_key, normalize_space
from autoprompt_search.spaces import load_space, schema, space_from_mapping
from autoprompt_search.templates import Segment, Template, escape

MIN_FUZZ_EXAMPLES = 10_000  # what the issue asks for: never fewer in CI
FUZZ_EXAMPLES = 10_000  # generated inputs per target
EXAMPLES = int(os.environ.get("AUTOPROMPT_FUZZ_EXAMPLES", FUZZ_EXAMPLES))
HANG_SECONDS = 3.0  # one example is a few milliseconds of work; past this it counts as a hang
MIN_SUCCESS_SHARE = 0.01  # the near-valid inputs must reach the checks behind the first error

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

COUNTS: dict[str, int] = {}
SUCCESSES: dict[str, int] = {}


def test_fuzz_counts_cannot_shrink() -> None:
    assert FUZZ_EXAMPLES >= MIN_FUZZ_EXAMPLES
    if "AUTOPROMPT_FUZZ_EXAMPLES" not in os.environ:
        assert FUZZ.max_examples >= MIN_FUZZ_EXAMPLES


# ------------------------------------------------------------------------------- harness


class Hang(Exception):
    """An example ran past HANG_SECONDS."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"one example ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _outcome(target: str, call: Callable[[], Any]) -> Any:
    """``call()``'s result, or None when it raised a UserError; any other exception propagates."""
    COUNTS[target] += 1
    with _time_limit(HANG_SECONDS):
        try:
            result = call()
        except UserError as error:
            assert str(error).strip(), "a UserError without a message"
            return None
    SUCCESSES[target] += 1
    return result


def _run(target: str, fuzz: Callable[[], None]) -> None:
    COUNTS[target] = SUCCESSES[target] = 0
    fuzz()
    print(f"{target}: {COUNTS[target]} examples, {SUCCESSES[target]} successes")
    assert COUNTS[target] >= FUZZ.max_examples, f"{target}: only {COUNTS[target]} examples ran"
    assert SUCCESSES[target] >= MIN_SUCCESS_SHARE * COUNTS[target], f"{target}: only {SUCCESSES[target]} successes"


class Raw:
    """Text spliced into a generated YAML or JSON document as it is (an unquoted scalar, a tag, junk)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


def _emit(document: Any, style: str, ascii_only: bool = True) -> str:
    """``document`` as JSON (``json``) or YAML (``block``/``flow``), its Raw leaves spliced in."""
    raws: list[str] = []

    def plain(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"RAW{len(raws) - 1}RAW"
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    value = plain(document)
    if style == "json":
        text = json.dumps(value, ensure_ascii=ascii_only)
        quote = '"'
    else:
        options = {"default_flow_style": style == "flow", "allow_unicode": not ascii_only, "sort_keys": False, "width": 10_000}
        try:
            text = yaml.dump(value, Dumper=yaml.CSafeDumper, **options)
        except UnicodeEncodeError:  # libyaml takes UTF-8 only: a lone surrogate needs the Python emitter
            text = yaml.dump(value, Dumper=yaml.SafeDumper, **options)
        quote = ""
    for i, raw in enumerate(raws):
        text = text.replace(f"{quote}RAW{i}RAW{quote}", raw)
    return text


def _write(path: Path, content: bytes) -> Path:
    """Write a file anew (unlinked first: ext4 flushes a truncated file on close, which costs milliseconds)."""
    path.unlink(missing_ok=True)
    path.write_bytes(content)
    return path


def _python(value: Any) -> Any:
    """A generated document as Python data: Raw leaves become their text."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return {key: _python(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_python(item) for item in value]
    return value


PERCENT = st.integers(0, 101)
ODD_ENCODING = st.sampled_from(("utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "ascii", "shift_jis"))
SPLICE = st.binary(min_size=1, max_size=4)


def _chance(draw: st.DrawFn, percent: int) -> bool:
    """True about ``percent`` times in 100 (Hypothesis favours the ends of a range: they count as False)."""
    return 1 <= draw(PERCENT) <= percent


def _pick(draw: st.DrawFn, options: Any) -> Any:
    """One of ``options`` (a sequence only known while drawing)."""
    return options[draw(st.integers(0, len(options) - 1))]


def _rotated(draw: st.DrawFn, items: list[Any]) -> list[Any]:
    """``items`` in another order: rotated, maybe reversed."""
    if not items:
        return items
    at = draw(st.integers(0, len(items) - 1))
    items = items[at:] + items[:at]
    return items[::-1] if _chance(draw, 50) else items


def _encode(draw: st.DrawFn, text: str) -> bytes:
    """``text`` as bytes in a random encoding, sometimes with random bytes spliced in."""
    encoded = text.encode(draw(ODD_ENCODING) if _chance(draw, 25) else "utf-8", errors="replace")
    if _chance(draw, 10):
        at = draw(st.integers(0, len(encoded)))
        encoded = encoded[:at] + draw(SPLICE) + encoded[at:]
    return encoded


# ------------------------------------------------------------------------------- templates

FIELD_NAMES = ("text", "premise", "hypothesis", "sentence", "title", "mask", "Text", "_x", "t2")
TEMPLATE_PIECES = (
    "{text}", "{text}", "{mask}", "{mask}", "{ mask }", "{premise}", "{hypothesis}", "{ text\n}", "{", "}", "{{", "}}", "[T]", "[T]",
    "[", "]", "T", "{{mask}}", "{}", "{ }", "{1x}", "{mask", "mask}", "{text}}", "{{text}", "{a-b}", "{é}", "{\U0001d531ext}",
    "\\{", "{mask}{mask}", "{[T]}", "[T}", "{T]", "[t]", "[ T ]", "\n", " ", "\t", "\r\n", "\u00a0", "\u2028", "It was ", ": ", "?",
)  # fmt: skip
LITERAL_CHARS = "ab Rv:.,?!-\n\t[]T{}\\\"'é中😀\u200b\u00a0\u2028\x00\ufeff\ud800"

_literal_text = st.text(st.sampled_from(LITERAL_CHARS), max_size=8) | st.text(max_size=4)
_pad = st.sampled_from(["", "", " ", "\n", "\t", "\u3000"])
_slot_name = st.text(st.sampled_from("abtxyzT_019é-"), max_size=6) | st.sampled_from(FIELD_NAMES)
_named_slot = st.builds(lambda before, name, after: "{" + before + name + after + "}", _pad, _slot_name, _pad)
template_text = st.lists(st.sampled_from(TEMPLATE_PIECES) | _literal_text | _named_slot, max_size=10).map("".join)

_valid_piece = st.one_of(_literal_text.map(escape), st.sampled_from(["[T]", "{text}", "{premise}", " ", "\n"]))


@st.composite
def valid_template(draw: st.DrawFn) -> str:
    """A template that parses: escaped literals, fields and triggers around one {mask} and one {text}."""
    pieces = draw(st.lists(_valid_piece, max_size=6))
    for piece in ("{mask}", "{text}"):
        pieces.insert(draw(st.integers(0, len(pieces))), piece)
    return "".join(pieces)


@st.composite
def _near_valid_template(draw: st.DrawFn) -> str:
    """A template that parses, with a piece of junk now and then."""
    text = draw(valid_template())
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(TEMPLATE_PIECES) | _literal_text | _named_slot) + text[at:]
    return text


template_any = st.one_of(
    template_text,
    template_text,
    _near_valid_template(),
    _near_valid_template(),
    st.text(max_size=30),
    st.sampled_from([None, 0, 1.5, b"{text} {mask}", ["{text} {mask}"], {"text": None}, "", "  \n ", "{text}{mask}"]),
)
field_lists = st.none() | st.lists(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), max_size=3)


def _write_segments(segments: tuple[Segment, ...]) -> str:
    """Template source for parsed segments: literals escaped, slots written plainly."""
    written = {"literal": escape, "field": lambda name: "{" + name + "}", "slot": lambda _: "{mask}", "trigger": lambda _: "[T]"}
    return "".join(written[segment.kind](segment.value) for segment in segments)


def _check_template(template: Template, source: str, fields: list[str] | None) -> None:
    kinds = [segment.kind for segment in template.segments]
    assert kinds.count("slot") == 1 and template.fields_used
    assert fields is None or set(template.fields_used) <= set(fields)
    assert template.n_triggers == source.count("[T]")  # every [T] outside braces is a trigger
    assert all(segment.value for segment in template.segments if segment.kind == "literal")
    assert not any(a == b == "literal" for a, b in zip(kinds, kinds[1:])), "two literals in a row"
    assert Template.parse(_write_segments(template.segments), fields=fields).segments == template.segments
    template.text_after_slot()
    template.whitespace_before_slot()
    template.slot_follows_space()
    template.check_for_model("masked")
    if template.continues_after_slot():
        with pytest.raises(UserError, match="must be last"):
            template.check_for_model("causal")
    else:
        template.check_for_model("causal")


def test_fuzz_template_parser() -> None:
    @FUZZ
    @given(source=template_any, fields=field_lists, origin=st.sampled_from(["template", "spaces.yaml: templates.seeds[0]", ""]))
    def fuzz(source: Any, fields: list[str] | None, origin: str) -> None:
        template = _outcome("templates", lambda: Template.parse(source, fields=fields, origin=origin))
        if template is not None:
            _check_template(template, source, fields)

    _run("templates", fuzz)


def _with_text(template: Template, text: str) -> tuple[Segment, ...]:
    """The segments ``template.with_text_before_slot(text)`` must have: ``text`` is literal text before the slot."""
    segments = list(template.segments)
    index = template._slot_index()
    if text:
        if index and segments[index - 1].kind == "literal":
            segments[index - 1] = Segment("literal", segments[index - 1].value + text)
        else:
            segments.insert(index, Segment("literal", text))
    return tuple(segments)


def test_fuzz_text_written_into_a_template_stays_literal() -> None:
    """escape() and with_text_before_slot(): any text goes in as literal text, nothing else."""

    @FUZZ
    @given(source=valid_template(), text=st.lists(st.sampled_from(TEMPLATE_PIECES) | _literal_text, max_size=4).map("".join))
    def fuzz(source: str, text: str) -> None:
        template = Template.parse(source)
        written = _outcome("escape", lambda: template.with_text_before_slot(text))
        assert written is not None, f"with_text_before_slot({text!r}) failed on {source!r}"
        assert written.segments == _with_text(template, text)
        escaped = _outcome("escape", lambda: Template.parse("{text}" + escape(text) + "{mask}"))
        assert escaped is not None and "".join(s.value for s in escaped.segments if s.kind == "literal") == text

    _run("escape", fuzz)


# ------------------------------------------------------------------------------- search spaces

REG_DATASETS = sorted(data.REGISTERED)
EXISTING_DATA = ("data.csv", "data.tsv", "data.jsonl", "data.json")
DATA_PATHS = (*EXISTING_DATA, "DATA.CSV", "missing.csv", "data.txt", "sub", "sub/", "", " ", "~/data.csv", "~nosuchuser/data.csv",
              "x" * 300 + ".csv", "a\x00.csv", ".", "/", "../data.csv", "data.csv ", "./data.csv")  # fmt: skip
MODEL_VALUES = (*MODELS, *MODELS, "sub", ".", "missing-model", "~nosuchuser/model", "~", "", " ", "x" * 300, "a\x00b", "/", "SmolLM2-135m")
INCLUDES = ("inc.yaml", "inc.yaml", "space.yaml", "inc2.yaml", "missing.yaml", "sub", ".", "", " ", "base", "base.yaml", "mr",
            "x" * 300 + ".yaml", "a\x00.yaml", "~nosuchuser/inc.yaml", "./inc.yaml", "sub/../inc.yaml")  # fmt: skip
LABEL_WORDS = ("negative", "positive", "subjective", "objective", "neutral", "a", "b", "c", "yes", "no", "0", "1", " a ", "", "Négatif")
WORDS = ("bad", "good", "great", "terrible", "fine", "ok", "x", "Yes", "no", "", " ", "Dis{", "[T]", "a b", "😀", "\n")
RAW_YAML = (
    "yes", "no", "on", "off", "~", "null", ".inf", "-.inf", ".nan", "0x1F", "0o17", "017", "0b101", "1_000", "1e3", "12:30:00", "190:20:30",
    "2020-01-01", "2020-13-45", "2020-02-30", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 +25:00", "!!float abc", "!!int abc",
    "!!int 0xZZ", "!!bool maybe", "!!timestamp x", "!!timestamp 2020-99-99", "!!binary '@@'", "!!binary aGk=", "!!set {a, b}",
    "!!omap [a: 1]", "!!omap x", "!!pairs [a: 1]", "!!python/object:os.system x", "!!python/tuple [1]", "!!str", "!!null x", "!!map []",
    "!!seq {}", "!!value x", "!!merge x", "!<tag:yaml.org,2002:int> x", "!local x", "'{text} {mask}'", "{text} It was {mask}",
    "[{text}, {mask}]", "&a [*a]", "&m {name: *m}", "&s {seeds: *s}", "*undefined", "{<<: 1}", "{<<: [1]}", "{<<: {a: 1}, a: 2}",
    '"\\ud800"', '"\\udfff x"', '"\\x00"', '"\\q"', '"\\U0010FFFF"', "|\n  block", ">-\n  folded", "? a", "- - -", "@", "`", "%YAML 1.1",
    "---", "...", "\t", "'unterminated", "&a 1", "!!float 1_0.5", "!!float .5e1", "!!int 1_0", "!!int -0b1", "=", "{a: 1, a: 2}",
    "[1, 2", "{a", "9" * 5000, "1" + "0" * 4400, "-" + "9" * 4400, "0x" + "f" * 4000, "0b" + "1" * 15000, "1" + "0" * 400 + ".5",
)  # fmt: skip
NESTINGS = (("[", "]"), ("{a: ", "}"))
NESTING_DEPTH = st.sampled_from([1, 20, 20, 20, 600])  # PyYAML's composer recurses; its scanner is quadratic in the depth


@st.composite
def _nested(draw: st.DrawFn) -> Raw:
    """Deeply nested flow collections."""
    depth = draw(NESTING_DEPTH)
    open_, close = draw(st.sampled_from(NESTINGS))
    return Raw(open_ * depth + "1" + close * depth)


@st.composite
def _alias_bomb(draw: st.DrawFn) -> Raw:
    """Anchors that each repeat the one before ``width`` times: a short text for ``width ** levels`` nodes."""
    levels, width = draw(st.integers(1, 9)), draw(st.integers(2, 9))
    items = ["&l0 [x, x]"]
    items += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    if draw(st.booleans()):  # as a mapping, as a sequence
        return Raw("{" + ", ".join(f"k{i}: {item}" for i, item in enumerate(items)) + "}")
    return Raw("[" + ", ".join(items) + "]")


_raw_scalar = st.sampled_from(RAW_YAML).map(Raw)
raw_yaml = st.one_of(*[_raw_scalar] * 12, _nested(), _alias_bomb())
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 100), st.integers(), st.floats(), st.text(max_size=6), raw_yaml)
_junk_key = st.text(max_size=5) | st.integers(0, 3) | st.sampled_from(["seeds", "path", "name"])
junk = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_junk_key, inner, max_size=3), max_leaves=6)
_count = st.integers(-1, 5) | st.integers(-(2**65), 2**65) | st.sampled_from([0, 1, 16, 40, 60, True, 1.0, "3", None])
_fraction = st.floats() | st.sampled_from([0.2, 0.5, 0, 1, True, "0.2", None])
_label = st.sampled_from(LABEL_WORDS) | st.integers(-1, 2) | st.booleans() | st.text(max_size=4)
_labels = st.lists(_label, max_size=4) | _label


def _one_or_list(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return strategy | st.lists(strategy, max_size=4)


def _choice(choices: tuple[str, ...]) -> st.SearchStrategy:
    return st.sampled_from(choices) | st.sampled_from([c.upper() for c in choices] + [c[:-1] for c in choices]) | st.text(max_size=5)


TEMPLATE_STARTS = st.sampled_from(["", "Review: ", "{{x}} ", "é "])
TEMPLATE_BEFORE_SLOT = st.sampled_from([" It was ", "\n", " ", "", " Answer: "])
TEMPLATE_AFTER_SLOT = st.sampled_from([".", " ", " [T]", "{text}", "{mask}"])


def _template_value(fields: tuple[str, ...] = ("text",), triggers: bool = False) -> st.SearchStrategy:
    """A template for a space: mostly ``{field} ... {mask}`` (the slot last, for causal models)."""
    field = st.sampled_from(fields).map(lambda name: "{" + name + "}")
    trigger_count = st.integers(1 if triggers else 0, 3)

    @st.composite
    def near(draw: st.DrawFn) -> str:
        pieces = [draw(TEMPLATE_STARTS), draw(field)]
        if _chance(draw, 20):
            pieces.append(draw(field))
        if triggers or _chance(draw, 10):
            pieces.append(" [T]" * draw(trigger_count))
        pieces += [draw(TEMPLATE_BEFORE_SLOT), "{mask}"]
        if _chance(draw, 10):
            pieces.append(draw(TEMPLATE_AFTER_SLOT))
        return "".join(pieces)

    return st.one_of(near(), near(), near(), template_text)


SPACE_FIELDS = (("text",), ("premise", "hypothesis"), ("text", "title"))
SEED_TEMPLATES = {fields: st.lists(_template_value(fields), min_size=1, max_size=3) for fields in SPACE_FIELDS}


def _generator_leaves() -> dict[str, st.SearchStrategy]:
    choices = {"position": TRIGGER_POSITIONS, "loss": TRIGGER_LOSSES, "filters": TRIGGER_FILTERS, "scoring": LABEL_WORD_SCORING}
    leaves: dict[str, st.SearchStrategy] = {}
    for name, generator in REGISTRY.items():
        for item in dataclasses.fields(generator.config):
            key, default = f"generators.{name}.{item.name}", item.default
            if item.name == "templates" and isinstance(default, tuple):
                strategy = _one_or_list(_template_value(triggers=True))
            elif item.name in choices:
                strategy = _choice(choices[item.name])
                strategy = _one_or_list(strategy) if isinstance(default, tuple) else strategy
            elif isinstance(default, bool):
                strategy = st.booleans() | st.sampled_from(["yes", 1, None])
            elif isinstance(default, int) or default is None:
                strategy = _count
            elif isinstance(default, str):
                strategy = st.sampled_from([default, "", " ", "the", "a b", "{mask}", "[T]", "}", "\n"]) | st.text(max_size=4)
            else:
                strategy = junk
            leaves[key] = strategy
    leaves["generators.rounds.count"] = leaves["generators.rounds.trials"] = _count
    return leaves


LEAVES: dict[str, st.SearchStrategy] = {
    "include": st.sampled_from(INCLUDES) | st.lists(st.sampled_from(INCLUDES), max_size=3) | junk,
    "name": st.sampled_from(["space", "", " ", "mr"]) | st.text(max_size=6),
    "description": st.text(max_size=10),
    "model": st.sampled_from(MODEL_VALUES),
    "max_length": _count | st.sampled_from([16, 15, 128, 512]),
    "dataset": st.sampled_from([*REG_DATASETS, *DATA_PATHS, "imdb", "MR", "m r"]),
    "dataset.path": st.sampled_from(DATA_PATHS),
    "dataset.name": st.sampled_from([*REG_DATASETS, "mine", "", None]) | st.text(max_size=4),
    "dataset.text_fields": _one_or_list(st.sampled_from(FIELD_NAMES) | st.text(max_size=4)),
    "dataset.label_field": st.sampled_from(["label", "gold", "", " "]) | st.text(max_size=4),
    "dataset.labels": _labels,
    "dataset.test_fraction": _fraction,
    "few_shot.k": _count,
    "few_shot.seeds": _one_or_list(_count),
    "templates.seeds": _one_or_list(_template_value()),
    "templates.blocks.prefixes": _one_or_list(st.sampled_from(["", "Review: ", "{mask} ", "[T] ", "{", "{text}"]) | st.text(max_size=4)),
    "templates.blocks.connectors": _one_or_list(st.sampled_from([" It was ", "\n", "", "{mask}", "[T]", "}"]) | st.text(max_size=4)),
    "templates.blocks.endings": _one_or_list(st.sampled_from(["It was {mask}", "{mask}", "{mask}.", "[T] {mask}", "", "{mask}{mask}"])
                                             | _template_value()),
    "templates.max_candidates": _count,
    "calibration": _one_or_list(_choice(("none", "contextual", "prior"))),
    "objective": _choice(("accuracy", "macro_f1")),
    "budget.trials": _count,
    "budget.timeout_seconds": _fraction | st.sampled_from([10, 0.5, -1, float("inf")]),
    "pruner.type": _choice(("median", "wilcoxon", "none")),
    "pruner.chunks": _count,
    "ensemble.size": _count,
    "ensemble.prompts_per_template": _count,
    **_generator_leaves(),
}
SCHEMA = schema()
UNKNOWN_KEY = st.sampled_from(["templatse", "seed", "", "Dataset", 1, None, True]) | st.text(max_size=5)


def _section(draw: st.DrawFn, node: dict[str, Any], prefix: str = "", max_keys: int = 4) -> dict[Any, Any]:
    """A mapping with some of ``node``'s keys, each with a plausible value or junk, and now and then an unknown key."""
    names = sorted(node)
    keys = dict.fromkeys(_pick(draw, names) for _ in range(draw(st.integers(0, min(max_keys, len(names))))))
    section: dict[Any, Any] = {}
    for key in keys:
        path = prefix + key
        if isinstance(node[key], dict) and not _chance(draw, 20):
            section[key] = _section(draw, node[key], path + ".")
        else:
            section[key] = draw(LEAVES[path] if path in LEAVES and not _chance(draw, 20) else junk)
    if _chance(draw, 7):
        section[draw(UNKNOWN_KEY)] = draw(junk)
    return section


SOME_LABELS = st.lists(_label, min_size=1, max_size=3)
ONE_OR_TWO = st.integers(1, 2)
EXTRA_WORDS = st.sampled_from(WORDS) | junk


def _verbalizer(draw: st.DrawFn, labels: list[Any] | None) -> Any:
    """A verbalizer seed: each label (those given, mostly) with distinct words, mostly."""
    if _chance(draw, 7):
        return draw(junk)
    if labels is None or _chance(draw, 10):
        labels = draw(SOME_LABELS)
    words = iter(_rotated(draw, list(WORDS[:9])))
    spec: dict[Any, Any] = {}
    for label in labels:
        chosen = [next(words, "x") for _ in range(draw(ONE_OR_TWO))]
        spec[label] = chosen[0] if len(chosen) == 1 and _chance(draw, 50) else chosen
    if _chance(draw, 10):
        spec[draw(_label)] = draw(EXTRA_WORDS)
    return spec


SPACE_KIND = st.integers(0, 3)
REGISTERED_DATASET = st.sampled_from(REG_DATASETS)
FILE_DATASET = st.sampled_from(EXISTING_DATA)
FILE_FIELDS = st.sampled_from(SPACE_FIELDS)
FILE_LABELS = st.lists(st.sampled_from(LABEL_WORDS[:10]), min_size=2, max_size=3, unique=True)
MODEL = st.sampled_from(MODEL_VALUES)
REQUIRED = ("dataset", "templates", "verbalizers")


@st.composite
def near_valid_space(draw: st.DrawFn) -> dict[Any, Any]:
    """A space that mostly validates: a dataset, seed templates of its fields, verbalizers of its labels,
    with a random section laid over it (keys replaced, added or dropped)."""
    kind = draw(SPACE_KIND)
    if kind <= 1:
        dataset: Any = draw(REGISTERED_DATASET)
        labels: list[Any] | None = list(DATASETS[dataset].labels)
        fields: tuple[str, ...] = ("text",)
    elif kind == 2:
        fields, labels = draw(FILE_FIELDS), draw(FILE_LABELS)
        dataset = {"path": draw(FILE_DATASET), "text_fields": list(fields), "label_field": "label", "labels": labels}
        if _chance(draw, 50):
            del dataset["labels"]
            labels = None
    else:
        dataset, labels, fields = draw(FILE_DATASET), None, ("text",)
    space: dict[Any, Any] = {
        "dataset": dataset,
        "templates": {"seeds": draw(SEED_TEMPLATES[fields])},
        "verbalizers": {"seeds": [_verbalizer(draw, labels) for _ in range(draw(ONE_OR_TWO))]},
    }
    if _chance(draw, 30):
        space["model"] = draw(MODEL)
    overlay = _section(draw, SCHEMA, max_keys=2) if _chance(draw, 70) else {}
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(space.get(key), dict) and _chance(draw, 50):
            space[key] = {**space[key], **value}
        else:
            space[key] = value
    if _chance(draw, 10):
        del space[_pick(draw, REQUIRED)]
    return space


YAML_TOKENS = ("dataset:", "templates:", "seeds:", "verbalizers:", "include: inc.yaml", "include: space.yaml", " ", "\n", "  ", "- ", "[",
               "]", "{", "}", ",", ":", "'", '"', "&a ", "*a", "!!", "|", ">", "#", "---", "...", "? ", "\t", "{text} {mask}", "mr",
               "%", "@", "\\", "\ufeff", "\r\n", "\x00", "\x85", "\u2028", "<<: ", "!!int ", "2020-13-45")  # fmt: skip
MINIMAL = 'dataset: mr\ntemplates:\n  seeds: ["{text} It was {mask}"]\nverbalizers:\n  seeds: [{negative: [bad], positive: [good]}]\n'
YAML_TOKEN = st.sampled_from(YAML_TOKENS) | st.text(max_size=3)
ONE_TO_THREE = st.integers(1, 3)


@st.composite
def _mutated(draw: st.DrawFn, text: str = MINIMAL) -> str:
    """``text`` with a few random cuts and insertions."""
    for _ in range(draw(ONE_TO_THREE)):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 6)))
        text = text[:start] + draw(YAML_TOKEN) + text[end:]
    return text


raw_space_text = st.one_of(
    st.text(max_size=60),
    st.lists(YAML_TOKEN, max_size=15).map("".join),
    _mutated(),
    _mutated(),
    st.sampled_from(["", " ", "\n", "---\n", "~", "[]", "- a\n- b\n", "1", "'x'", "{}", "!!binary aGk=", "--- a\n--- b\n", "&a [*a]"]),
)
STYLE = st.sampled_from(["json", "block", "flow"])
RAW_BYTES = st.binary(max_size=60)
TOP_KEY = st.sampled_from(sorted(SCHEMA))


def _space_file(draw: st.DrawFn, main: bool) -> bytes:
    """A space file's bytes: a generated document (JSON or YAML, block or flow) or raw text and bytes."""
    if _chance(draw, 8):
        return draw(RAW_BYTES)
    if _chance(draw, 8):
        return _encode(draw, draw(raw_space_text))
    if main:
        document = draw(near_valid_space())
    else:
        document = _section(draw, SCHEMA, max_keys=3)
        if _chance(draw, 30):
            document["include"] = draw(LEAVES["include"])
    if _chance(draw, 20):  # a YAML problem at one value
        document[draw(TOP_KEY)] = draw(raw_yaml)
    text = _emit(document, draw(STYLE), ascii_only=draw(st.booleans()))
    return _encode(draw, text) if _chance(draw, 10) else text.encode("utf-8", errors="replace")


_record_value = st.one_of(st.text(max_size=6), st.sampled_from(LABEL_WORDS), st.integers(), st.floats(), st.booleans(), st.none(),
                          st.lists(st.integers(), max_size=2), st.binary(max_size=2))
_records = st.lists(st.dictionaries(st.sampled_from(["text", "label", "premise", "gold", "x"]), _record_value, max_size=4)
                    | _record_value, max_size=5)  # fmt: skip
INCLUDED = ("inc.yaml", "inc2.yaml")


@st.composite
def space_case(draw: st.DrawFn) -> dict[str, Any]:
    if _chance(draw, 20):
        return {"mode": "mapping", "mapping": _python(draw(near_valid_space())), "records": draw(_records) if _chance(draw, 30) else None}
    files = {"space.yaml": _space_file(draw, main=True)}
    for name in INCLUDED:
        if _chance(draw, 20):
            files[name] = _space_file(draw, main=False)
    return {"mode": "file", "files": files}


def _check_space(space: Any, source: Path | None) -> None:
    assert isinstance(space.name, str) and space.name.strip()
    assert space.source == source
    labels = space.labels
    assert space.verbalizers.seeds and all(set(v.labels) == set(labels) for v in space.verbalizers.seeds)
    assert space.templates.seeds or space.templates.blocks is not None
    for template in space.templates.seeds:
        assert [s.kind for s in template.segments].count("slot") == 1 and not template.n_triggers
        assert set(template.fields_used) <= set(space.dataset.text_fields)
        if space.model_kind == "causal":
            assert not template.continues_after_slot()
    assert space.model in MODELS or Path(space.model).is_dir()
    assert space.dataset.registered or space.dataset.records is not None or space.dataset.path.is_file()
    # A run records the space in its manifest (fileio.atomic_write_json: UTF-8, ensure_ascii=False).
    json.dumps(space.to_dict(), ensure_ascii=False).encode("utf-8")


@pytest.fixture(scope="module")
def space_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_spaces")
    (folder / "sub").mkdir()
    (folder / "data.csv").write_text("text,label\ngood,positive\nbad,negative\n", encoding="utf-8")
    (folder / "data.tsv").write_text("text\tlabel\ngood\tpositive\nbad\tnegative\n", encoding="utf-8")
    (folder / "data.jsonl").write_text('{"text": "good", "label": "positive"}\n', encoding="utf-8")
    (folder / "data.json").write_text('[{"text": "good", "label": "positive"}]', encoding="utf-8")
    (folder / "data.txt").write_text("good\n", encoding="utf-8")
    return folder


def test_fuzz_space_loader(space_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)

    @FUZZ
    @given(case=space_case())
    def fuzz(case: dict[str, Any]) -> None:
        if case["mode"] == "mapping":
            records = case["records"]

            def build() -> Any:
                space = space_from_mapping(case["mapping"], records=records)
                if records is not None:
                    space.dataset.load_split("all")
                return space

            space = _outcome("spaces", build)
            if space is not None:
                _check_space(space, None)
            return
        for name in ("space.yaml", *INCLUDED):
            (space_folder / name).unlink(missing_ok=True)
        for name, content in case["files"].items():
            _write(space_folder / name, content)
        path = space_folder / "space.yaml"
        space = _outcome("spaces", lambda: load_space(path))
        if space is not None:
            _check_space(space, path)

    _run("spaces", fuzz)


# ------------------------------------------------------------------------------- data files

HEADER_NAMES = ("text", "label", "premise", "hypothesis", "gold", "", " text ", "Text", "label ", "\ufefftext", "a,b", 'q"t', "\t")
CELL_CHARS = "ab xyz,;\"'\t\n\r\\{}[]é中😀\u2028\u00a0\x00\ufeff0\udfff"
DATA_LABELS = ("pos", "neg", "neutral", " pos", "0", "1", "", " ", "True")
RAW_JSON = ('"\\ud800"', '"\\udfff x"', '"a\\ud83d"', "9" * 5000, "-" + "1" * 4400, "1" + "0" * 400 + ".5", "1e999", "-1e999",
            "NaN", "Infinity", "-Infinity", "[" * 2000 + "]" * 2000, "[" * 200 + "]" * 200, '{"a": ' * 1500 + "1" + "}" * 1500,
            '"\\u0000"', '"\\x"', "'single'", "01", ".5", "tru", "true", "null", "[]", "{}", '"a\\nb"', '"\\t pos \\n"',
            '{"text": "x"}', "1.0", "1e2", "-0", "0.1e-400")  # fmt: skip
_cell = st.one_of(st.text(st.sampled_from(CELL_CHARS), min_size=1, max_size=8), st.text(min_size=1, max_size=5),
                  st.sampled_from(DATA_LABELS))
_json_value = st.one_of(_cell, _cell, st.integers(), st.floats(), st.booleans(), st.none(), st.lists(_cell, max_size=2),
                        st.dictionaries(st.text(max_size=3), _cell, max_size=2), st.sampled_from(RAW_JSON).map(Raw))
SUFFIX = st.sampled_from((".csv", ".tsv", ".jsonl", ".json"))
OTHER_SUFFIX = st.sampled_from([".json", ".jsonl", ".tsv", ".CSV", ".Json", ".txt", ""])
TEXT_FIELDS = st.sampled_from((("text",), ("text",), ("premise", "hypothesis"), ("text", "title")))
LABEL_FIELD = st.sampled_from(["label", "label", "gold", "", "text"])
HEADER_NAME = st.sampled_from(HEADER_NAMES) | st.text(max_size=3)
EXTRA_HEADER = st.lists(HEADER_NAME, max_size=1)
RANDOM_HEADER = st.lists(HEADER_NAME, max_size=4)
_table_label = st.sampled_from(DATA_LABELS[:6]) | st.sampled_from(DATA_LABELS)
TABLE_LABELS = st.lists(_table_label, min_size=2, max_size=3, unique=True)
ONE_LABEL = st.lists(_table_label, min_size=1, max_size=1)
ROW_COUNT = st.integers(2, 8)
FEW_ROWS = st.integers(0, 1)
EXTRA_CELLS = st.lists(_cell, max_size=2)
NEWLINE = st.sampled_from(["\n", "\n", "\r\n", "\r"])
QUOTING = st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_MINIMAL, csv.QUOTE_ALL])
ODD_CONTENT = st.sampled_from([b"", b" ", b"\n\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n", b"\xff\xfe", b"\x00", b"\r\n"])
JUNK_LINE = st.sampled_from(["", "  ", "{", "[1]", "nul", "\r"]) | st.text(max_size=5)
JSON_DOCUMENT = st.dictionaries(st.text(max_size=3), _json_value, max_size=2) | _json_value
GIVEN_LABELS = st.lists(st.sampled_from(DATA_LABELS) | st.integers(0, 2) | st.booleans(), max_size=4)
RANDOM_FIELDS = st.lists(HEADER_NAME, max_size=3)
NAME = st.sampled_from([None, None, "", "mine"])


def _table(draw: st.DrawFn, fields: list[str], label_field: str) -> tuple[list[str], list[list[Any]], list[str]]:
    """A header and rows: mostly the fields and the label column, sometimes random and ragged; and the labels used."""
    if not _chance(draw, 20):
        header = _rotated(draw, list(dict.fromkeys([*fields, label_field]))) + draw(EXTRA_HEADER)
    else:
        header = draw(RANDOM_HEADER)
    labels = draw(ONE_LABEL if _chance(draw, 10) else TABLE_LABELS)
    rows = []
    for _ in range(draw(FEW_ROWS if _chance(draw, 10) else ROW_COUNT)):
        row = [_pick(draw, labels) if name == label_field else draw(_cell) for name in header]
        if _chance(draw, 7):  # ragged
            row = row[: draw(st.integers(0, len(row)))] + draw(EXTRA_CELLS)
        rows.append(row)
    return header, rows, labels


def _delimited(draw: st.DrawFn, header: list[str], rows: list[list[Any]], delimiter: str) -> str:
    newline = draw(NEWLINE)
    if not _chance(draw, 30):  # written properly
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=delimiter, quoting=draw(QUOTING), lineterminator=newline)
        writer.writerow(header)
        writer.writerows(rows)
        text = buffer.getvalue()
    else:  # joined naively: quotes, delimiters and newlines in cells break it
        text = newline.join(delimiter.join(map(str, row)) for row in [header, *rows]) + (newline if _chance(draw, 50) else "")
    if _chance(draw, 3):  # a cell over csv's field size limit
        text += f"{delimiter.join(['x' * 140_000] * len(header))}{newline}"
    return text


def _json_lines(draw: st.DrawFn, header: list[str], rows: list[list[Any]], as_list: bool) -> str:
    records: list[Any] = []
    for row in rows:
        record = {name: draw(_json_value) if _chance(draw, 10) else value for name, value in zip(header, row)}
        records.append(draw(_json_value) if _chance(draw, 7) else record)
    if as_list:
        text = _emit(draw(JSON_DOCUMENT) if _chance(draw, 10) else records, "json", ascii_only=_chance(draw, 50))
        return text[: draw(st.integers(0, len(text)))] if _chance(draw, 10) else text
    lines = [_emit(record, "json", ascii_only=_chance(draw, 50)) for record in records]
    if _chance(draw, 20):
        lines.insert(draw(st.integers(0, len(lines))), draw(JUNK_LINE))
    return ("\r\n" if _chance(draw, 20) else "\n").join(lines) + ("\n" if _chance(draw, 50) else "")


@st.composite
def data_case(draw: st.DrawFn) -> dict[str, Any]:
    fields, label_field = list(draw(TEXT_FIELDS)), draw(LABEL_FIELD)
    header, rows, table_labels = _table(draw, fields, label_field)
    suffix = draw(SUFFIX)
    if _chance(draw, 5):
        content = draw(RAW_BYTES)
    elif _chance(draw, 5):
        content = draw(ODD_CONTENT)
    elif _chance(draw, 5):  # one format's text under another's name
        content, suffix = _delimited(draw, header, rows, ",").encode("utf-8", errors="replace"), draw(OTHER_SUFFIX)
    else:
        if suffix in (".csv", ".tsv"):
            text = _delimited(draw, header, rows, "," if suffix == ".csv" else "\t")
        else:
            text = _json_lines(draw, header, rows, suffix == ".json")
        content = _encode(draw, "\ufeff" + text if _chance(draw, 10) else text)
    if _chance(draw, 10):
        fields = draw(RANDOM_FIELDS)
    labels = None
    if _chance(draw, 15):
        labels = draw(GIVEN_LABELS)
    elif _chance(draw, 50):
        labels = _rotated(draw, [label.strip() for label in table_labels])
    records = draw(_records) if _chance(draw, 10) else None
    return {"suffix": suffix, "content": content, "text_fields": fields, "label_field": label_field, "labels": labels,
            "name": draw(NAME), "records": records}  # fmt: skip


def _check_dataset(dataset: data.Dataset, text_fields: list[str], labels: list[Any] | None) -> None:
    assert dataset.fields == list(text_fields)
    assert dataset.examples and len(set(dataset.labels)) >= 2
    found = {example.label for example in dataset.examples}
    assert dataset.labels == ([str(y) for y in labels] if labels is not None else sorted(found))
    for example in dataset.examples:
        assert example.label in dataset.labels and example.label == example.label.strip() != ""
        assert list(example.fields) == list(dict.fromkeys(text_fields)) and any(example.fields.values())
        assert all(isinstance(v, str) and v == normalize_space(v) for v in example.fields.values())


def _split_all(dataset: data.Dataset) -> None:
    """What a search does next with a loaded dataset: hash it and split it."""
    assert len(dataset.content_hash()) == 64
    whole = data.split_dataset(dataset, "all")
    train = data.split_dataset(dataset, "train_pool", 0.5)
    test = data.split_dataset(dataset, "test", 0.5)
    keys = {example_key(e, dataset.fields) for e in whole.examples}
    train_keys = {example_key(e, dataset.fields) for e in train.examples}
    test_keys = {example_key(e, dataset.fields) for e in test.examples}
    assert train_keys | test_keys == keys and not train_keys & test_keys
    assert {e.label for e in whole.examples} <= set(dataset.labels)


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_data")


def test_fuzz_data_loaders(data_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)

    @FUZZ
    @given(case=data_case())
    def fuzz(case: dict[str, Any]) -> None:
        kwargs = {"text_fields": case["text_fields"], "label_field": case["label_field"], "labels": case["labels"]}
        if case["records"] is not None:

            def load() -> data.Dataset:
                return data.from_records(case["records"], **kwargs)
        else:
            path = _write(data_folder / f"data{case['suffix']}", case["content"])

            def load() -> data.Dataset:
                return data.load_file(path, name=case["name"], **kwargs)

        def load_and_split() -> data.Dataset:
            dataset = load()
            _check_dataset(dataset, case["text_fields"], case["labels"])
            _split_all(dataset)
            return dataset

        _outcome("data", load_and_split)

    _run("data", fuzz)
