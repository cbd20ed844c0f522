"""The frozen choices of a study (:class:`Pools`): what the candidate generators hand to the search,
and the Optuna parameter names that pick from them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from autoprompt_search.data import Dataset
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

POOLS_FORMAT = 1


@dataclass(frozen=True)
class Pools:
    """The frozen choices of a study. ``words[c]`` lists the word options (each a list of
    words) for the c-th label; ``manual`` lists the enqueued baseline parameter sets.

    Word options only ever grow, round by round (``generators.rounds``): ``round_sizes[r][c]`` is
    how many options label c has in round r, and each round names its word parameters anew
    (:func:`word_param`), because an Optuna parameter keeps its choices for the whole study.
    Option i is the same words in every round that has it."""

    labels: tuple[str, ...]
    templates: tuple[Template, ...]
    words: tuple[tuple[tuple[str, ...], ...], ...]
    calibrations: tuple[str, ...]
    manual: tuple[dict[str, Any], ...] = ()
    origins: dict[str, Any] = field(default_factory=dict)  # where each option came from
    round_sizes: tuple[tuple[int, ...], ...] = ()  # empty: one round with every option
    proposals: tuple[dict[str, Any], ...] = ()  # generated prompts enqueued after the manual ones
    held_out_train_rows: tuple[int, ...] = ()  # train rows a template shows (demonstrations): never scored

    @property
    def enqueued(self) -> int:
        """How many trials are enqueued before the sampler's: the manual baselines and the proposals."""
        return len(self.manual) + len(self.proposals)

    @property
    def rounds(self) -> int:
        return max(1, len(self.round_sizes))

    def options_in_round(self, round_index: int) -> tuple[int, ...]:
        return self.round_sizes[round_index] if self.round_sizes else tuple(len(options) for options in self.words)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": POOLS_FORMAT, "labels": list(self.labels), "templates": [t.source for t in self.templates],
                "words": [[list(option) for option in options] for options in self.words],
                "calibrations": list(self.calibrations), "manual": list(self.manual), "origins": self.origins,
                "round_sizes": [list(sizes) for sizes in self.round_sizes], "proposals": list(self.proposals),
                "held_out_train_rows": list(self.held_out_train_rows)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pools:
        origins = data.get("origins", {})
        # Pools written before the field existed kept the rows in the demonstrations' record.
        held_out = data.get("held_out_train_rows", origins.get("demonstrations", {}).get("shown_train_rows", ()))
        return cls(tuple(data["labels"]), tuple(Template.parse(source) for source in data["templates"]),
                   tuple(tuple(tuple(option) for option in options) for options in data["words"]),
                   tuple(data["calibrations"]), tuple(data.get("manual", ())), origins,
                   tuple(tuple(sizes) for sizes in data.get("round_sizes", ())), tuple(data.get("proposals", ())),
                   tuple(held_out))

    def scored_train(self, train: Dataset) -> Dataset:
        """The train examples a search scores: all but the rows some template shows."""
        held_out = set(self.held_out_train_rows)
        return train.subset(i for i in range(len(train)) if i not in held_out) if held_out else train

    def with_round(self, words: Sequence[Sequence[tuple[str, ...]]], record: dict[str, Any]) -> "Pools":
        """These pools plus one generation round: ``words`` extends each label's options."""
        for c, options in enumerate(words):
            if tuple(options[: len(self.words[c])]) != self.words[c]:
                raise ValueError("a new round may only append word options")
        sizes = self.round_sizes or (self.options_in_round(0),)
        return replace(self, words=tuple(tuple(options) for options in words),
                       round_sizes=sizes + (tuple(len(options) for options in words),),
                       origins={**self.origins, "rounds": [*self.origins.get("rounds", []), record]})

    def word_choice(self, params: dict[str, Any], label_index: int) -> int:
        """The option index a parameter set picks for a label, whichever round named it."""
        for round_index in range(self.rounds):
            if word_param(label_index, round_index) in params:
                return params[word_param(label_index, round_index)]
        raise KeyError(f"no word parameter for label {self.labels[label_index]!r} in {params}")

    def verbalizer(self, params: dict[str, Any]) -> Verbalizer:
        return Verbalizer.parse(
            {label: list(self.words[c][self.word_choice(params, c)]) for c, label in enumerate(self.labels)}, self.labels
        )

    def choice_key(self, params: dict[str, Any]) -> str:
        """The same prompt gives the same key, whichever round's parameter names chose it."""
        return json.dumps([params["template"], [self.word_choice(params, c) for c in range(len(self.labels))], params["calibration"]])

    def params_for(self, template: Template, verbalizer: Verbalizer, calibration: str) -> dict[str, Any]:
        """The first round's parameter set that selects exactly these choices (they must be in its pools)."""
        params: dict[str, Any] = {"template": self.templates.index(template)}
        for c, words in enumerate(verbalizer.words):
            params[word_param(c)] = self.words[c].index(tuple(words))
        params["calibration"] = calibration
        return params


def word_param(label_index: int, round_index: int = 0) -> str:
    return f"words_{label_index}" if round_index == 0 else f"words_{label_index}_round{round_index}"
