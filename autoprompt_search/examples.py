"""Labelled examples and datasets: the records every loader produces and every split hashes."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

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


def example_key(example: Example, fields: Sequence[str]) -> str:
    return "\t".join(normalize_space(example.fields.get(f, "")).lower() for f in fields)


def deduplicate(dataset: Dataset) -> Dataset:
    """Drop exact duplicates (normalised text), keeping the first; drop conflicting texts entirely."""
    first: dict[str, int] = {}
    conflicts: set[str] = set()
    for i, ex in enumerate(dataset.examples):
        key = example_key(ex, dataset.fields)
        if key not in first:
            first[key] = i
        elif dataset.examples[first[key]].label != ex.label:
            conflicts.add(key)
    return dataset.subset(i for key, i in first.items() if key not in conflicts)
