"""The candidate generators, registered once: each is one module with its config dataclass and
one ``propose`` method (:class:`~autoprompt_search.candidates.generators.base.Generator`). A search
space's ``generators`` section is read from these config dataclasses; adding a generator means
writing its module and adding it to :data:`REGISTRY`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from autoprompt_search.candidates.generators.base import Generator
from autoprompt_search.candidates.generators.demonstrations import DemonstrationsGenerator
from autoprompt_search.candidates.generators.label_probe import LabelProbeGenerator
from autoprompt_search.candidates.generators.label_words import LabelWordsGenerator
from autoprompt_search.candidates.generators.triggers import TriggersGenerator
from autoprompt_search.space_checks import need_int
from autoprompt_search.templates import Template

# In the order they run: word generators first (later ones see the words pooled so far), then
# the template generators.
REGISTRY: dict[str, Generator] = {g.name: g for g in (LabelWordsGenerator(), LabelProbeGenerator(), TriggersGenerator(),
                                                      DemonstrationsGenerator())}


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


def _default_configs() -> dict[str, Any]:
    return {name: generator.config() for name, generator in REGISTRY.items()}


@dataclass(frozen=True)
class Generators:
    """The ``generators`` section of a search space: one config per registered generator (each
    reachable as an attribute: ``generators.triggers``) and the rounds."""

    configs: Mapping[str, Any] = field(default_factory=_default_configs)
    rounds: GenerationRounds = GenerationRounds()

    def __post_init__(self) -> None:
        object.__setattr__(self, "configs", {**_default_configs(), **self.configs})

    def __getattr__(self, name: str) -> Any:
        configs = self.__dict__.get("configs", {})
        if name in configs:
            return configs[name]
        raise AttributeError(name)

    @property
    def enabled(self) -> tuple[str, ...]:
        """The names of the generators switched on, in the order they run."""
        return tuple(name for name, config in self.configs.items() if config.enabled)

    def to_dict(self) -> dict[str, Any]:
        return {**{name: config_dict(config) for name, config in self.configs.items()}, "rounds": dataclasses.asdict(self.rounds)}

    def identity(self) -> dict[str, Any]:
        """What a resumed run must match. A generator that is off and off by default is left out, and
        so is a single round: runs made before such a generator (or rounds) existed keep their identity."""
        data = self.to_dict()
        for name, config in self.configs.items():
            if not config.enabled and not REGISTRY[name].config().enabled:
                del data[name]
        if self.rounds.count == 1:
            del data["rounds"]
        return data


def config_dict(config: Any) -> dict[str, Any]:
    """A config as JSON-able data: templates as their text."""
    data = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, tuple):
            value = [v.source if isinstance(v, Template) else v for v in value]
        data[item.name] = value
    return data


def section_schema() -> dict[str, Any]:
    """The keys a space's ``generators`` section may hold (None marks a leaf)."""
    schema: dict[str, Any] = {name: dict.fromkeys(f.name for f in dataclasses.fields(g.config)) for name, g in REGISTRY.items()}
    schema["rounds"] = dict.fromkeys(f.name for f in dataclasses.fields(GenerationRounds))
    return schema
