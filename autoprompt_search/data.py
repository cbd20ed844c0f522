"""Labelled datasets: the user's files and records, deterministic train/test splits and K-shot sampling.

Registered datasets are read by :mod:`corpora`; their carrier packages, labels and test fractions
are in ``asset_registry.DATASETS``.

Splits. None of these has an official split, so ``split_train_test`` derives one:
each example's text fields are normalised (lower-cased, whitespace collapsed, joined by a
tab); exact duplicates are dropped (first kept; a text seen with two different labels is
dropped entirely from a registered dataset, and refused, naming both lines, in the user's file or
records); an example goes to ``test`` iff
``int(sha256(normalised)[:8], 16) / 2**32 < test_fraction``, else to ``train_pool``.
The assignment depends only on the text, not on row order, and a text can never land in
both splits. Test fractions are ``DEFAULT_TEST_FRACTION`` (0.2 for user files); mr's 0.5
gives about 2,000 test sentences, as LM-BFF used.

Few-shot protocol (LM-BFF, RLPrompt): K examples per class for train and K more for dev,
drawn from ``train_pool`` with the seeds in ``LMBFF_SEEDS``; the test set stays fixed.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from autoprompt_search.arguments import whole_number
from autoprompt_search.asset_registry import DATASETS
from autoprompt_search.corpora import REGISTERED, load_registered, split_sentences  # noqa: F401 (part of this module's API)
from autoprompt_search.errors import UserError
from autoprompt_search.examples import Dataset, Example, deduplicate, example_key, normalize_space  # noqa: F401
from autoprompt_search.fileio import lone_surrogate

log = logging.getLogger(__name__)

DEFAULT_TEST_FRACTION = {name: asset.test_fraction for name, asset in DATASETS.items()}
DEFAULT_FILE_TEST_FRACTION = 0.2
LMBFF_SEEDS = (13, 21, 42, 87, 100)
MAX_SEED = 2**32 - 1  # the largest seed numpy's and Optuna's samplers take
SPLITS = ("train_pool", "test", "all")
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def checked_seed(seed: Any) -> int:
    """A seed as an ``int`` (Python's or numpy's whole number), within what the samplers take."""
    return whole_number(seed, "seed", 0, MAX_SEED, most_text="2**32 - 1")


# ---------------------------------------------------------------- user files

def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UserError(f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line} is not valid UTF-8 (byte {raw[exc.start]:#04x})") from None


def _csv_records(path: Path, text: str, delimiter: str) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """The header and (line number, row) pairs of a CSV/TSV file; checks column counts."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSVs quote nothing
    # strict: a quote never closed, or text after a closing quote, is an error rather than a row read differently
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as exc:
        raise UserError(f"{path}: line 1: malformed header ({exc})") from None
    if not any(header):
        raise UserError(f"{path}: empty file (expected a header row)")
    if repeated := [name for index, name in enumerate(header) if name and name in header[:index]]:
        raise UserError(f"{path}: line 1: the header names the column {repeated[0]!r} twice")

    def rows() -> Iterator[tuple[int, dict]]:
        line = reader.line_num + 1
        try:
            for row in reader:
                if row:
                    if len(row) != len(header):
                        raise UserError(f"{path}: line {line}: {len(row)} columns, but the header has "
                                        f"{len(header)} ({', '.join(header)})")
                    yield line, dict(zip(header, row))
                line = reader.line_num + 1
        except csv.Error as exc:
            unclosed = "; a quoted field starts on this line and is never closed" if "end of data" in str(exc) else ""
            raise UserError(f"{path}: line {line}: malformed CSV ({exc}){unclosed}") from None

    return header, rows()


def _json_records(path: Path, text: str, jsonl: bool) -> Iterable[tuple[int, Any]]:
    """(line or item number, object) pairs of a JSONL or JSON file."""
    if jsonl:
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}: invalid JSON on line {number}, column {exc.colno}: {exc.msg}") from None
                except (ValueError, RecursionError) as exc:
                    raise UserError(f"{path}: invalid JSON on line {number}: {_json_problem(exc)}") from None
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path}: invalid JSON: {_json_problem(exc)}") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, found {type(data).__name__}")
    yield from enumerate(data, start=1)


def _json_problem(exc: Exception) -> str:
    """What json.loads refused beyond a syntax error: a number too long to read, or nesting too deep."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"a number too long to read ({exc})"


def load_file(path: str | Path, *, text_fields: Sequence[str] = ("text",), label_field: str | None = "label",
              labels: Sequence[str] | None = None, name: str | None = None) -> Dataset:
    """Load a labelled ``.csv``/``.tsv`` (header row), ``.jsonl`` or ``.json`` (list) file; with
    ``label_field`` None, a file of texts whose labels (if any) are not read.

    Rows whose text fields are all empty are skipped (with a logged count); every other
    problem is a UserError naming the file and the line (or, for .json, the item).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if suffix not in FILE_SUFFIXES:
        raise UserError(f"{path}: unknown extension {path.suffix!r}; use .csv, .tsv, .jsonl or .json")
    text_fields = list(text_fields)
    labels = [str(y) for y in labels] if labels is not None else None
    if not text_fields:
        raise UserError(f"{path}: no text fields given")
    text = _read_text(path)
    if not text.strip():
        raise UserError(f"{path}: empty file")
    where = "item" if suffix == ".json" else "line"
    if suffix in (".csv", ".tsv"):
        header, records = _csv_records(path, text, "\t" if suffix == ".tsv" else ",")
        for column in [*text_fields, *([label_field] if label_field is not None else [])]:
            if column not in header:
                raise UserError(f"{path}: no column {column!r}; columns are: {', '.join(header)}")
    else:
        records = _json_records(path, text, jsonl=suffix == ".jsonl")

    return from_records(records, text_fields=text_fields, label_field=label_field, labels=labels, name=name or path.stem,
                        origin=str(path), where=where)


def from_records(records: Iterable[Any], *, text_fields: Sequence[str] = ("text",), label_field: str | None = "label",
                 labels: Sequence[str] | None = None, name: str = "data", origin: str = "data", where: str = "record") -> Dataset:
    """A dataset from records (mappings of column to value), numbered from 1 unless given as
    ``(number, record)`` pairs; every problem is a UserError naming ``origin`` and the record.
    With ``label_field`` None the texts are unlabelled: every example's label is empty and the
    dataset lists no labels."""
    text_fields = list(text_fields)
    labels = [str(y) for y in labels] if labels is not None else None
    examples: list[Example] = []
    skipped: list[int] = []
    first: dict[str, tuple[Any, str]] = {}  # normalised text -> (number, label) where it was first seen
    numbered = (item if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int) else (number, item)
                for number, item in enumerate(records, start=1))
    for number, record in numbered:
        if not isinstance(record, Mapping):
            raise UserError(f"{origin}: {where} {number}: expected a JSON object, found {type(record).__name__}")
        for column in [*text_fields, *([label_field] if label_field is not None else [])]:
            if column not in record:
                raise UserError(f"{origin}: {where} {number}: no field {column!r}; fields are: {', '.join(map(str, record))}")
        values = {f: _as_string(record[f], origin, where, number, f) for f in text_fields}
        values = {f: normalize_space(v) for f, v in values.items()}
        if not any(values.values()):
            skipped.append(number)
            continue
        if label_field is None:
            examples.append(Example(values, ""))
            continue
        label = _as_string(record[label_field], origin, where, number, label_field).strip()
        if not label:
            raise UserError(f"{origin}: {where} {number}: empty label in field {label_field!r}")
        if labels is not None and label not in labels:
            raise UserError(f"{origin}: {where} {number}: label {label!r} is not one of {', '.join(labels)}")
        example = Example(values, label)
        number_before, label_before = first.setdefault(example_key(example, text_fields), (number, label))
        if label_before != label:  # split_train_test would drop both silently
            raise UserError(f"{origin}: {where} {number}: the same text as {where} {number_before} with another label "
                            f"({label!r} here, {label_before!r} there); give each text one label")
        examples.append(example)

    if skipped:
        log.warning("%s: skipped %d rows with empty text (%s %s)", origin, len(skipped), where,
                    ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else ""))
    if not examples:
        raise UserError(f"{origin}: no examples with text in field(s) {', '.join(text_fields)}")
    if label_field is None:
        return Dataset(name, examples, [], text_fields)
    found = sorted({ex.label for ex in examples})
    if labels is not None:
        missing = [y for y in labels if y not in found]
        if missing:
            raise UserError(f"{origin}: no examples with label(s) {', '.join(missing)}")
    if len(found) < 2:
        raise UserError(f"{origin}: every example has the label {found[0]!r} in field {label_field!r}; "
                        "a classifier needs examples of at least two labels")
    return Dataset(name, examples, labels if labels is not None else found, text_fields)


def _as_string(value: Any, origin: str, where: str, number: int, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        if (surrogate := lone_surrogate(value)) is not None:
            raise UserError(f"{origin}: {where} {number}: field {field!r} holds a lone surrogate {surrogate!r}, which is not a character")
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    raise UserError(f"{origin}: {where} {number}: field {field!r} must be a string, found {type(value).__name__}")


def load_dataset(spec: str, **file_kwargs: Any) -> Dataset:
    """A registered dataset name, or the path of a data file (``file_kwargs`` go to load_file)."""
    if spec in REGISTERED:
        # Callers may pass the file defaults along; anything else would be silently ignored.
        defaults = {"text_fields": ["text"], "label_field": "label"}
        given = [k for k, v in file_kwargs.items() if k != "name" and v is not None
                 and (list(v) if k == "text_fields" else v) != defaults.get(k)]
        if given:
            raise UserError(f"{', '.join(given)}: only for data files, not the registered dataset {spec!r}")
        dataset = load_registered(spec)
        dataset.name = file_kwargs.get("name") or dataset.name
        return dataset
    path = Path(spec)
    if path.suffix.lower() not in FILE_SUFFIXES and not path.exists():
        raise UserError(f"unknown dataset {spec!r}: not a registered name ({', '.join(sorted(REGISTERED))}) "
                        f"nor a .csv/.tsv/.jsonl/.json file")
    return load_file(path, **file_kwargs)


# ---------------------------------------------------------------- splits and sampling

def check_test_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}", option="test_fraction")


def split_train_test(dataset: Dataset, test_fraction: float) -> tuple[Dataset, Dataset]:
    """(train_pool, test) by a hash of the normalised text, after de-duplication."""
    check_test_fraction(test_fraction)
    unique = deduplicate(dataset)
    train, test = [], []
    for i, ex in enumerate(unique.examples):
        digest = hashlib.sha256(example_key(ex, unique.fields).encode("utf-8")).hexdigest()
        (test if int(digest[:8], 16) / 2**32 < test_fraction else train).append(i)
    return unique.subset(train), unique.subset(test)


def load_split(spec: str, split: str, *, test_fraction: float | None = None, **file_kwargs: Any) -> Dataset:
    """One split of a registered dataset or data file: ``train_pool``, ``test``, or ``all`` (the de-duplicated whole)."""
    default = DEFAULT_TEST_FRACTION.get(spec, DEFAULT_FILE_TEST_FRACTION)
    return split_dataset(load_dataset(spec, **file_kwargs), split, test_fraction, default)


def split_dataset(
    dataset: Dataset, split: str, test_fraction: float | None = None, default_fraction: float = DEFAULT_FILE_TEST_FRACTION
) -> Dataset:
    """One split of a loaded dataset: ``train_pool``, ``test``, or ``all`` (the de-duplicated whole)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "all":
        return deduplicate(dataset)
    train, test = split_train_test(dataset, default_fraction if test_fraction is None else test_fraction)
    return train if split == "train_pool" else test


def few_shot(pool: Dataset, k: int, seed: int, origin: str | None = None) -> tuple[Dataset, Dataset]:
    """(train, dev) with exactly ``k`` examples per class each, disjoint, drawn with ``seed``.

    Within each split the examples come in a seeded shuffled order (not grouped by class).
    ``origin`` (the data file or dataset name) starts the error when a label has too few examples.
    """
    if k < 1:
        raise UserError(f"K must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    train: list[int] = []
    dev: list[int] = []
    for label in pool.labels:
        indices = [i for i, ex in enumerate(pool.examples) if ex.label == label]
        if len(indices) < 2 * k:
            raise UserError(f"{origin or pool.name}: label {label!r} has {len(indices)} examples in the train pool; "
                            f"K={k} (few_shot.k) needs {2 * k} (K for train and K for dev)")
        chosen = rng.permutation(indices)[: 2 * k]
        train.extend(int(i) for i in chosen[:k])
        dev.extend(int(i) for i in chosen[k:])
    return pool.subset(rng.permutation(train)), pool.subset(rng.permutation(dev))


def sample(dataset: Dataset, n: int, seed: int) -> Dataset:
    """A deterministic random subset of ``n`` examples in their original order (all if n >= len)."""
    if n < 1:
        raise UserError(f"limit must be at least 1, got {n}")
    if n >= len(dataset):
        return dataset.subset(range(len(dataset)))
    chosen = np.random.default_rng(seed).choice(len(dataset), size=n, replace=False)
    return dataset.subset(sorted(chosen))
