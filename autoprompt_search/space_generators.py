"""The ``generators`` section of a search space: which candidate generators run, with what budget."""

from __future__ import annotations

from dataclasses import dataclass, fields

from autoprompt_search.space_checks import Invalid, need_bool, need_choice, need_int
from autoprompt_search.templates import Template

LABEL_WORD_SCORING = ("mean_log_prob", "likelihood_ratio")
TRIGGER_POSITIONS = ("after", "before", "slot")  # right after the text, right before it, right before {mask}
TRIGGER_FILTERS = ("non_alphabetic", "subwords", "label_words")  # as candidates.vocabulary.TRIGGER_FILTERS
TRIGGER_LOSSES = ("cross_entropy", "label_likelihood")  # as candidates.triggers.TRIGGER_LOSSES


@dataclass(frozen=True)
class LabelWordsGenerator:
    """Proposes label words from the model's slot distribution over the train examples."""

    enabled: bool = True
    words_per_class: int = 12
    scoring: tuple[str, ...] = LABEL_WORD_SCORING
    templates: int = 3  # how many of the best templates the words are proposed with

    def __post_init__(self) -> None:
        key = "generators.label_words"
        need_bool(f"{key}.enabled", self.enabled)
        need_int(f"{key}.words_per_class", self.words_per_class, 1)
        need_int(f"{key}.templates", self.templates, 1)
        if not self.scoring:
            raise Invalid(f"{key}.scoring", f"must list at least one of {', '.join(LABEL_WORD_SCORING)}")
        for i, name in enumerate(self.scoring):
            need_choice(f"{key}.scoring[{i}]", name, LABEL_WORD_SCORING)


@dataclass(frozen=True)
class LabelProbeGenerator:
    """Proposes label words aligned with a linear probe of the slot's hidden state (AutoPrompt)."""

    enabled: bool = False
    words_per_class: int = 6
    templates: int = 1  # a probe is fitted on each of the best templates
    shortlist: int = 1000  # only the tokens likeliest at the slot on train compete

    def __post_init__(self) -> None:
        key = "generators.label_probe"
        need_bool(f"{key}.enabled", self.enabled)
        for name in ("words_per_class", "templates", "shortlist"):
            need_int(f"{key}.{name}", getattr(self, name), 1)


@dataclass(frozen=True)
class TriggersGenerator:
    """Gradient-guided trigger search (AutoPrompt with HotFlip); see :mod:`candidates.triggers`."""

    enabled: bool = False
    templates: tuple[Template, ...] = ()  # templates with [T] slots; none: insert them into the best seeds
    count: int = 3
    position: str = "after"
    base_templates: int = 1
    candidates: int = 50
    steps: int = 20
    restarts: int = 2
    batch_size: int = 16
    patience: int | None = 8
    init: str = "the"
    filters: tuple[str, ...] = TRIGGER_FILTERS
    loss: str = "cross_entropy"
    fluency: int | None = None  # causal models: HotFlip picks among the N tokens the model finds likeliest there

    def __post_init__(self) -> None:
        key = "generators.triggers"
        need_bool(f"{key}.enabled", self.enabled)
        for name in ("count", "base_templates", "candidates", "steps", "restarts", "batch_size"):
            need_int(f"{key}.{name}", getattr(self, name), 1)
        for name in ("patience", "fluency"):
            if getattr(self, name) is not None:
                need_int(f"{key}.{name}", getattr(self, name), 1)
        need_choice(f"{key}.position", self.position, TRIGGER_POSITIONS)
        need_choice(f"{key}.loss", self.loss, TRIGGER_LOSSES)
        for i, name in enumerate(self.filters):
            need_choice(f"{key}.filters[{i}]", name, TRIGGER_FILTERS)
        if not isinstance(self.init, str) or not self.init.strip():
            raise Invalid(f"{key}.init", f"must be a word, got {self.init!r}")
        for i, template in enumerate(self.templates):
            if not template.n_triggers:
                raise Invalid(f"{key}.templates[{i}]", f"{template.source!r} has no trigger slot [T]")


@dataclass(frozen=True)
class DemonstrationsGenerator:
    """Templates that show labelled train examples before the query (LM-BFF's demonstrations,
    fixed per template): the best seed templates, each with ``sets`` different demonstration sets
    of ``per_class`` examples per label. The shown examples are held out of the search's scoring,
    so no prompt is judged on an example it contains."""

    enabled: bool = False
    per_class: int = 1
    sets: int = 4
    templates: int = 2  # how many of the best seed templates get demonstrations
    separator: str = "\n\n"

    def __post_init__(self) -> None:
        key = "generators.demonstrations"
        need_bool(f"{key}.enabled", self.enabled)
        for name in ("per_class", "sets", "templates"):
            need_int(f"{key}.{name}", getattr(self, name), 1)
        if not isinstance(self.separator, str) or "{" in self.separator or "}" in self.separator or "[T]" in self.separator:
            raise Invalid(f"{key}.separator", f"must be plain text (no slot, brace or [T]), got {self.separator!r}")


@dataclass(frozen=True)
class GenerationRounds:
    """Word generation in rounds: the first before the trials (from the best seed templates on
    train), each later one after ``trials`` more search trials, from the templates the study ranks
    best so far. Each round's word pools get Optuna parameter names of their own."""

    count: int = 1
    trials: int = 30

    def __post_init__(self) -> None:
        need_int("generators.rounds.count", self.count, 1)
        need_int("generators.rounds.trials", self.trials, 1)


@dataclass(frozen=True)
class Generators:
    label_words: LabelWordsGenerator = LabelWordsGenerator()
    label_probe: LabelProbeGenerator = LabelProbeGenerator()
    triggers: TriggersGenerator = TriggersGenerator()
    rounds: GenerationRounds = GenerationRounds()
    demonstrations: DemonstrationsGenerator = DemonstrationsGenerator()

    @property
    def enabled(self) -> tuple[str, ...]:
        """The names of the generators switched on, in this order."""
        return tuple(f.name for f in fields(self) if getattr(getattr(self, f.name), "enabled", False))
