"""A first search space for data that has none: generic template blocks around the data's own
fields, the label names as the seed verbalizer, and the bundled defaults for everything else
(label words drawn from the model's slot distribution included).

Nothing in it is written for one task: the endings name the common kinds of text classification
(sentiment, topic, category, a plain label) and one ending lists the data's own label names as the
question ("Negative or positive? {mask}"). The search picks among them on the labelled examples.
"""

from __future__ import annotations

import copy
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from autoprompt_search.candidates.template_pool import join_fields
from autoprompt_search.data import REGISTERED, load_dataset
from autoprompt_search.errors import UserError
from autoprompt_search.spaces import BUNDLED_DIR, read_space_yaml, slug

GENERIC_PREFIXES = ("", "Text: ", "Input: ")
GENERIC_CONNECTORS = (" ", "\n")
GENERIC_ENDINGS = (
    "It was {mask}",
    "This text is {mask}",
    "It is about {mask}",
    "Category: {mask}",
    "Topic: {mask}",
    "Sentiment: {mask}",
    "Label: {mask}",
    "Answer: {mask}",
)
# Demonstrations (one labelled example per label before the query, LM-BFF) are shown when the
# labels' examples and the query fit the default 256-token prompt with room to spare: a median
# text of this many words or fewer, times (labels + 1).
DEMONSTRATION_WORDS = 150
DEMONSTRATIONS = {"enabled": True, "per_class": 1, "sets": 4, "templates": 2}
_LETTER_RUNS = re.compile(r"[^\W\d_]+")
_CAMEL_CASE = re.compile(r"(?<=[a-z])(?=[A-Z])")


def label_word(label: str) -> str | None:
    """The word a label name reads as: ``very_negative`` -> ``very negative``, ``SciTech`` -> ``sci
    tech``, ``Positive`` -> ``positive``; None for a name without letters (``0``, ``1``)."""
    words = _LETTER_RUNS.findall(_CAMEL_CASE.sub(" ", label))
    return " ".join(word.lower() for word in words) or None


def options_ending(words: Sequence[str]) -> str:
    """The question that lists the label words: ``Negative or positive? {mask}``."""
    listed = ", ".join(words[:-1]) + f" or {words[-1]}"
    return f"{listed[0].upper()}{listed[1:]}? {{mask}}"


def seed_verbalizer(labels: Sequence[str], origin: str) -> dict[str, list[str]]:
    """Each label's name as its word; a user error naming the labels that are not words."""
    words = {label: label_word(label) for label in labels}
    unnamed = [label for label, word in words.items() if word is None]
    if unnamed:
        raise UserError(f"{origin}: labels {', '.join(map(repr, unnamed))} are not words, so no seed verbalizer can be read from "
                        "them; write a search space with verbalizers.seeds (see search_spaces/mr.yaml), or name the labels with words")
    shared = [label for label, word in words.items() if list(words.values()).count(word) > 1]
    if shared:
        raise UserError(f"{origin}: labels {', '.join(map(repr, shared))} read as the same word; write a search space with "
                        "verbalizers.seeds that tells them apart")
    return {label: [word] for label, word in words.items() if word is not None}


def starting_space(dataset: str | Mapping[str, Any], labels: Sequence[str], text_fields: Sequence[str], *,
                   name: str, origin: str, median_words: float) -> dict[str, Any]:
    """The mapping of a search-space file (the YAML's keys) for ``dataset``: a registered name or a
    ``dataset`` section naming a file and its columns; ``median_words``, the examples' median
    length, decides whether demonstrations fit. ``origin`` names the data in errors."""
    verbalizer = seed_verbalizer(labels, origin)
    fields = join_fields(tuple(text_fields))
    options = options_ending([words[0] for words in verbalizer.values()])
    defaults = read_space_yaml(BUNDLED_DIR / "base.yaml")
    space: dict[str, Any] = {
        "name": name,
        "description": f"Generic starting space for {name} ({', '.join(labels)}), built by autoprompt_search.starter.",
        "model": defaults.pop("model"),
        "dataset": copy.deepcopy(dataset) if isinstance(dataset, Mapping) else dataset,
        "few_shot": defaults.pop("few_shot"),
        "templates": {
            **defaults.pop("templates", {}),
            "seeds": [f"{fields}\n{options}", f"Text: {fields}\nCategory: {{mask}}", f"{fields} It was {{mask}}",
                      f"{fields} This text is about {{mask}}"],
            "blocks": {"prefixes": list(GENERIC_PREFIXES), "connectors": list(GENERIC_CONNECTORS),
                       "endings": [*GENERIC_ENDINGS, options]},
        },
        "verbalizers": {"seeds": [verbalizer]},
    }
    if median_words * (len(labels) + 1) <= DEMONSTRATION_WORDS:
        defaults["generators"] = {**defaults.get("generators", {}), "demonstrations": dict(DEMONSTRATIONS)}
    return {**space, **{key: value for key, value in defaults.items() if key not in space}}


def space_yaml(space: Mapping[str, Any], command: str) -> str:
    """The YAML text of a starting space, headed by what wrote it and what to edit."""
    header = (f"# Written by `{command}`: a generic first search space. Edit the templates (keep {{mask}} last for a\n"
              "# causal model) and the label words to fit the task; `autoprompt-search validate` checks the file.\n")
    return header + yaml.dump(dict(space), Dumper=_SpaceDumper, sort_keys=False, allow_unicode=True, width=1000,
                              default_flow_style=False)


class _SpaceDumper(yaml.SafeDumper):
    """Writes a string that holds a line break in double quotes (``"{text}\\nTopic: {mask}"``), as
    the bundled spaces do, instead of YAML's folded form."""


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if "\n" in value else None)


_SpaceDumper.add_representer(str, _represent_text)


def space_for_data(spec: str, *, text_fields: Sequence[str] | None = None, label_field: str = "label",
                   labels: Sequence[str] | None = None, test_fraction: float | None = None) -> dict[str, Any]:
    """The starting space of a registered dataset (named ``<name>_generic``, apart from its bundled
    space) or of a data file (named after it, its path absolute), the labels read from the data."""
    if spec in REGISTERED and test_fraction is not None:
        raise UserError(f"test_fraction is only for data files, not the registered dataset {spec!r}", option="test_fraction")
    data = load_dataset(spec, label_field=label_field, **({"text_fields": list(text_fields)} if text_fields else {}),
                        **({"labels": list(labels)} if labels else {}))
    median_words = statistics.median(sum(len(text.split()) for text in example.fields.values()) for example in data.examples)
    if spec in REGISTERED:
        return starting_space(spec, data.labels, data.fields, name=f"{spec}_generic", origin=spec,
                              median_words=median_words)
    path = Path(spec).absolute()
    section: dict[str, Any] = {"path": str(path), "text_fields": list(data.fields), "label_field": label_field}
    if labels:
        section["labels"] = list(labels)
    if test_fraction is not None:
        section["test_fraction"] = test_fraction
    return starting_space(section, data.labels, data.fields, name=slug(path.stem) or "data", origin=str(path),
                          median_words=median_words)
