"""Templates that show labelled train examples before the query (LM-BFF's demonstrations);
see :mod:`autoprompt_search.candidates.demonstrations`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autoprompt_search.candidates.generators.base import Generated, GenerationContext, Generator
from autoprompt_search.space_checks import Invalid, need_bool, need_int


@dataclass(frozen=True)
class DemonstrationsConfig:
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


class DemonstrationsGenerator(Generator[DemonstrationsConfig]):
    name = "demonstrations"
    config = DemonstrationsConfig

    def check_space(self, config: DemonstrationsConfig, space: Any) -> None:
        if config.enabled and config.per_class * config.sets >= space.few_shot.k:
            raise Invalid("generators.demonstrations", f"shows per_class x sets = {config.per_class * config.sets} train examples "
                                                      f"per label, which must stay below few_shot.k ({space.few_shot.k}): "
                                                      "the shown examples are not scored")

    def propose(self, config: DemonstrationsConfig, context: GenerationContext) -> Generated:
        from autoprompt_search.candidates.demonstrations import demonstration_templates

        bases = [(r.template, r.verbalizer) for r in context.ranked[: config.templates]]
        shown, record = demonstration_templates(config, context.scorer, bases, context.train, context.seed, context.log)
        return Generated(record, shown, tuple(record["shown_train_rows"]))
