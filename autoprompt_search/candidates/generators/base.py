"""What every candidate generator is: a config dataclass (its keys under ``generators.<name>`` in a
search space) and one ``propose`` method that reads a :class:`GenerationContext` and returns what it
made (:class:`Generated`). Shared helpers for the word generators live here too."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Mapping, Sequence, TypeVar

from autoprompt_search.logs import Log

if TYPE_CHECKING:
    from autoprompt_search.data import Dataset
    from autoprompt_search.scoring import PromptScorer
    from autoprompt_search.templates import Template
    from autoprompt_search.verbalizers import Verbalizer

FRAGMENT_SPARES = 2  # each word generator proposes this many times its words, so that dropping fragments leaves enough

Config = TypeVar("Config")


@dataclass(frozen=True)
class RankedSeed:
    """A template with the verbalizer that does best with it on train, and how well."""

    template: Template
    verbalizer: Verbalizer
    accuracy: float
    margin: float


@dataclass
class GenerationContext:
    """What a generator may read. ``options[c]`` are label c's word options so far: a word generator
    extends them in place (:func:`add_words`), so later generators see every word already pooled."""

    scorer: PromptScorer
    train: Dataset
    dev: Dataset
    ranked: Sequence[RankedSeed]  # the best templates so far, best first
    options: list[list[tuple[str, ...]]]
    seed: int
    log: Log

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.train.labels)

    @property
    def texts(self) -> list[Mapping[str, str]]:
        return [example.fields for example in self.train.examples]

    @property
    def gold(self) -> list[int]:
        return [self.labels.index(example.label) for example in self.train.examples]

    @property
    def pooled_words(self) -> set[str]:
        """Every word of every label's options so far."""
        return pool_words(self.options)


@dataclass
class Generated:
    """A generator's output: its record (kept in the run's manifest), templates to try first, each
    with the verbalizer it was made for, and train rows that must not be scored (those a template shows)."""

    record: dict[str, Any]
    proposals: list[tuple[Template, Verbalizer]] = field(default_factory=list)
    held_out_train_rows: tuple[int, ...] = ()


class Generator(ABC, Generic[Config]):
    """One candidate generator. ``name`` is its key under ``generators``; ``config`` its dataclass,
    which must have an ``enabled`` field; ``in_rounds`` says whether it runs again in later rounds."""

    name: ClassVar[str]
    config: ClassVar[type]
    in_rounds: ClassVar[bool] = False

    def check_space(self, config: Config, space: Any) -> None:
        """Checks that need the rest of the space (raise ``Invalid``); none by default."""

    def check_model(self, config: Config, scorer: PromptScorer, source: str) -> None:
        """Checks that need the loaded model, run before any generator does; none by default."""

    @abstractmethod
    def propose(self, config: Config, context: GenerationContext) -> Generated:
        """Generate candidates from ``context``."""


class WordGenerator(Generator[Config]):
    """A generator of label words: it runs again in later rounds, proposes spare words, and pools
    only those the model does not read as pieces of longer ones."""

    in_rounds = True

    @staticmethod
    def proposals_per_class(words_per_class: int) -> int:
        return FRAGMENT_SPARES * words_per_class

    @staticmethod
    def pool_whole_words(context: GenerationContext, template: Template, words: Mapping[str, Sequence[str]],
                         words_per_class: int) -> tuple[dict[str, list[str]], dict[str, float]]:
        """The first ``words_per_class`` whole words of each label (:func:`candidates.fragments.whole_words`),
        added to the pools; returns them and the dropped fragments."""
        from autoprompt_search.candidates.fragments import whole_words

        kept, fragments = whole_words(context.scorer, template, context.texts, words, words_per_class)
        add_words(context.options, kept, context.labels)
        return kept, fragments


def pool_words(options: Sequence[Sequence[tuple[str, ...]]]) -> set[str]:
    return {word for label_options in options for option in label_options for word in option}


def add_words(options: list[list[tuple[str, ...]]], words_by_label: Mapping[str, Sequence[str]], labels: Sequence[str]) -> None:
    """Each new word as an option of its own, and the first three together as one more option."""
    for c, label in enumerate(labels):
        words = list(words_by_label.get(label, []))
        options[c].extend((word,) for word in words if (word,) not in options[c])
        if len(words) >= 3 and tuple(words[:3]) not in options[c]:
            options[c].append(tuple(words[:3]))


def same_slot_spacing(ranked: Sequence[RankedSeed], count: int) -> list[Template]:
    """The ``count`` best templates whose slot follows whitespace as the best one's does (one
    tokenization mode for the word filter)."""
    leading = [r.template for r in ranked[:count]]
    return [t for t in leading if t.slot_follows_space() == leading[0].slot_follows_space()]


def dropped(fragments: Mapping[str, float]) -> str:
    return f" (dropped as word pieces: {', '.join(fragments)})" if fragments else ""
