"""Templates with demonstrations: labelled train examples shown before the query, as LM-BFF does.

A demonstration is the template itself filled with a train example and its label's word; a
demonstration template is ``demo + separator + ... + demo + separator + template``, plain
template text that any tool can use. The shown examples are drawn once per run (seeded by the
few-shot sample), the same number per label, in a seeded order, and they are held out of the
search's scoring: a prompt that shows an example would otherwise be judged on its own answer.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from autoprompt_search.data import Dataset
from autoprompt_search.logs import Log
from autoprompt_search.scoring import MAX_WORD_TOKENS, PromptScorer
from autoprompt_search.templates import TRIGGER, Template, escape
from autoprompt_search.tokenization import encode_plain
from autoprompt_search.verbalizers import Verbalizer

QUERY_SHARE = 0.5  # demonstrations may take at most this share of the model's prompt length


def demonstration(template: Template, fields: Mapping[str, str], word: str) -> str:
    """The template's text for one labelled example: its fields filled in, the slot holding ``word``."""
    parts = []
    for segment in template.segments:
        if segment.kind == "literal":
            parts.append(escape(segment.value))
        elif segment.kind == "field":
            parts.append(escape(fields[segment.value]))
        elif segment.kind == "slot":
            parts.append(escape(word))
        else:
            raise ValueError("a template with trigger slots cannot show demonstrations")
    return "".join(parts).rstrip()


def choose_sets(train: Dataset, per_class: int, sets: int, seed: int, eligible: Callable[[int], bool]) -> list[list[int]] | None:
    """``sets`` disjoint lists of train rows, ``per_class`` of each label in a seeded order; None
    when some label has too few eligible examples."""
    rng = np.random.default_rng(seed)
    by_label = []
    for label in train.labels:
        rows = [i for i, example in enumerate(train.examples) if example.label == label and eligible(i)]
        if len(rows) < per_class * sets:
            return None
        by_label.append([rows[int(i)] for i in rng.permutation(len(rows))[: per_class * sets]])
    chosen = []
    for s in range(sets):
        rows = [row for label_rows in by_label for row in label_rows[s * per_class : (s + 1) * per_class]]
        chosen.append([rows[int(i)] for i in rng.permutation(len(rows))])
    return chosen


def demonstration_templates(generator, scorer: PromptScorer, bases: Sequence[tuple[Template, Verbalizer]], train: Dataset,
                            seed: int, log: Log) -> tuple[list[tuple[Template, Verbalizer]], dict[str, Any]]:
    """Each base template (with the verbalizer whose first words the demonstrations show) with
    each demonstration set; returns (template, the verbalizer it shows) pairs and the record."""
    tokenizer = scorer.backend.tokenizer
    labels = list(train.labels)
    budget = int(scorer.backend.max_prompt_tokens(MAX_WORD_TOKENS) * QUERY_SHARE) // (generator.per_class * len(labels))
    lengths = [sum(len(ids) for ids in encode_plain(tokenizer, list(example.fields.values()))) for example in train.examples]

    def eligible(row: int) -> bool:  # short enough, and no text that the template language would read as a slot
        return lengths[row] <= budget and not any(TRIGGER in value for value in train.examples[row].fields.values())

    record: dict[str, Any] = {"per_class": generator.per_class, "sets": [], "templates": [], "bases": [], "shown_train_rows": []}
    chosen = choose_sets(train, generator.per_class, generator.sets, seed, eligible)
    if chosen is None:
        record["skipped"] = (f"fewer than {generator.per_class * generator.sets} train examples of some label are at most "
                             f"{budget} tokens long")
        log(f"demonstrations: none ({record['skipped']})")
        return [], record
    found = []
    for template, verbalizer in bases:
        first_words = [words[0] for words in verbalizer.words]
        for number, rows in enumerate(chosen, 1):
            shown = [demonstration(template, train.examples[row].fields, first_words[labels.index(train.examples[row].label)])
                     for row in rows]
            found.append((Template.parse(generator.separator.join([*shown, template.source]), fields=train.fields), verbalizer))
            record["templates"].append(found[-1][0].source)
            record["bases"].append({"base": template.source, "set": number, "shown": len(rows)})  # for outline()
    record["sets"] = [[{"train_row": row, "label": train.examples[row].label} for row in rows] for rows in chosen]
    record["shown_train_rows"] = sorted(row for rows in chosen for row in rows)
    log(f"demonstrations: {len(found)} templates, {generator.per_class} example(s) per label shown in each of "
        f"{len(chosen)} sets; those {len(record['shown_train_rows'])} train examples are not scored")
    return found, record
