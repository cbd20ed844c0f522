"""The generator registry: a space's ``generators`` section is read from the registered config
dataclasses, and adding a generator takes one module (config + ``propose``) and one registration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoprompt_search import spaces
from autoprompt_search.candidates.generators import REGISTRY, GenerationRounds, Generators, config_dict, section_schema
from autoprompt_search.candidates.generators.base import Generated, GenerationContext, Generator, add_words
from autoprompt_search.errors import UserError
from autoprompt_search.space_checks import need_bool, need_int
from autoprompt_search.spaces import SearchSpace, load_space
from autoprompt_search.templates import Template
from autoprompt_search.testing import write_tiny_dataset

BASE_SPACE = """\
name: small
dataset: {{path: tiny.csv, text_fields: [text], label_field: label, labels: [negative, positive], test_fraction: 0.3}}
model: {model}
few_shot: {{k: 4, seeds: [13]}}
templates: {{seeds: ["{{text}} It was {{mask}}", "{{text}} Overall it was {{mask}}"]}}
verbalizers: {{seeds: [{{negative: [bad], positive: [good]}}, {{negative: [terrible], positive: [great]}}]}}
calibration: [none, prior]
"""


# -- a generator made for the tests: one config dataclass, one propose -------------------------------


@dataclass(frozen=True)
class EchoConfig:
    """Proposes the best seed template with another ending, and a word per label."""

    enabled: bool = False
    ending: str = "Honestly it was {mask}"
    words: int = 1

    def __post_init__(self) -> None:
        need_bool("generators.echo.enabled", self.enabled)
        need_int("generators.echo.words", self.words, 1)


class EchoGenerator(Generator[EchoConfig]):
    name = "echo"
    config = EchoConfig

    def __init__(self) -> None:
        self.contexts: list[GenerationContext] = []

    def propose(self, config: EchoConfig, context: GenerationContext) -> Generated:
        self.contexts.append(context)
        best = context.ranked[0]
        template = Template.parse("{text} " + config.ending, fields=context.train.fields)
        add_words(context.options, {"negative": ["awful"], "positive": ["wonderful"]}, context.labels)
        return Generated({"from": best.template.source, "ending": config.ending}, [(template, best.verbalizer)], (0,))


def source(template: Template | str) -> str:
    """A template's text (pools hold parsed templates)."""
    return template if isinstance(template, str) else template.source


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> EchoGenerator:
    """The echo generator, registered (last, so it runs after the built-in ones) for one test."""
    generator = EchoGenerator()
    monkeypatch.setitem(REGISTRY, generator.name, generator)
    return generator


@pytest.fixture
def space_file(tmp_path: Path, tiny_causal_lm: Path) -> Path:
    write_tiny_dataset(tmp_path / "tiny.csv", copies=2)
    path = tmp_path / "small.yaml"
    path.write_text(BASE_SPACE.format(model=tiny_causal_lm), encoding="utf-8")
    return path


def with_generators(space_file: Path, section: dict[str, Any]) -> Path:
    """The space file with ``section`` as its ``generators`` section."""
    path = space_file.with_name("with_generators.yaml")
    path.write_text(space_file.read_text() + yaml.safe_dump({"generators": section}), encoding="utf-8")
    return path


# -- the schema ---------------------------------------------------------------------------------------


def expected_schema() -> dict[str, Any]:
    schema: dict[str, Any] = {name: {f.name: None for f in dataclasses.fields(g.config)} for name, g in REGISTRY.items()}
    schema["rounds"] = {f.name: None for f in dataclasses.fields(GenerationRounds)}
    return schema


def test_the_generators_section_is_exactly_the_config_fields() -> None:
    assert spaces.SCHEMA["generators"] == section_schema() == expected_schema()
    assert set(REGISTRY) == {"label_words", "label_probe", "triggers", "demonstrations"}
    for name, generator in REGISTRY.items():
        assert generator.name == name
        assert "enabled" in {f.name for f in dataclasses.fields(generator.config)}, name
        assert set(config_dict(generator.config())) == set(expected_schema()[name])


def test_every_config_field_is_read_from_a_space(space_file: Path) -> None:
    """Each registered config, written out in full with its defaults, reads back as the default."""
    section = {name: config_dict(generator.config()) for name, generator in REGISTRY.items()}
    section["rounds"] = dataclasses.asdict(GenerationRounds())
    space = load_space(with_generators(space_file, section))
    assert space.generators == Generators()
    assert space.generators.to_dict() == section


def test_an_unknown_generator_key_is_refused(space_file: Path) -> None:
    with pytest.raises(UserError, match=r"generators\.triggers\.stepz: unknown key \(did you mean 'steps'\?"):
        load_space(with_generators(space_file, {"triggers": {"stepz": 3}}))
    with pytest.raises(UserError, match=r"generators\.nonsense: unknown key"):
        load_space(with_generators(space_file, {"nonsense": {"enabled": True}}))


def test_generation_rounds_are_checked(space_file: Path) -> None:
    with pytest.raises(UserError, match=r"generators\.rounds\.count must be at least 1"):
        load_space(with_generators(space_file, {"rounds": {"count": 0}}))
    with pytest.raises(UserError, match=r"generators\.rounds\.count"):  # later rounds need a word generator
        load_space(with_generators(space_file, {"label_words": {"enabled": False}, "rounds": {"count": 2}}))
    space = load_space(with_generators(space_file, {"rounds": {"count": 3, "trials": 5}}))
    assert space.generators.rounds == GenerationRounds(3, 5)


# -- adding a generator ----------------------------------------------------------------------------------


def test_a_registered_generator_is_a_key_of_the_space(echo: EchoGenerator, space_file: Path) -> None:
    """Registering the generator is all it takes for ``generators.echo`` to be read from a YAML space."""
    space = load_space(with_generators(space_file, {"echo": {"enabled": True, "ending": "So it was {mask}"}}))
    assert space.generators.echo == EchoConfig(enabled=True, ending="So it was {mask}")
    assert space.generators.enabled[-1] == "echo"
    with pytest.raises(UserError, match=r"generators\.echo\.words must be at least 1"):
        load_space(with_generators(space_file, {"echo": {"enabled": True, "words": 0}}))


def test_a_space_built_in_python_without_generators_knows_a_registered_generator(echo: EchoGenerator) -> None:
    """The default ``generators`` of a space includes every registered generator, off by default."""
    from autoprompt_search.verbalizers import Verbalizer

    records = tuple({"text": f"text {i}", "label": label} for i in range(4) for label in ("negative", "positive"))
    space = SearchSpace(name="python", dataset=spaces.DatasetSpec("python", records=records, labels=("negative", "positive")),
                        templates=spaces.TemplateSpace((Template.parse("{text} It was {mask}"),)),
                        verbalizers=spaces.VerbalizerSpace((Verbalizer.parse({"negative": ["bad"], "positive": ["good"]},
                                                                             ("negative", "positive")),)))
    assert space.generators.echo == EchoConfig() and "echo" not in space.generators.enabled


def test_build_pools_runs_a_registered_generator(echo: EchoGenerator, space_file: Path, tiny_causal_lm: Path,
                                                 isolated_cache: Path) -> None:
    from autoprompt_search.backends import load_backend
    from autoprompt_search.cache import SlotCache
    from autoprompt_search.candidates.build import build_pools
    from autoprompt_search.scoring import PromptScorer
    from autoprompt_search.splits import make_splits

    loaded = load_space(with_generators(space_file, {"label_words": {"enabled": False}}))
    # Built in Python, so that this test does not depend on the YAML reader seeing the registration.
    space = dataclasses.replace(loaded, generators=Generators({**loaded.generators.configs, "echo": EchoConfig(enabled=True)}))
    assert isinstance(space, SearchSpace) and space.generators.enabled == ("echo",)
    splits = make_splits(space.dataset, space.few_shot.k, 13)
    scorer = PromptScorer(load_backend(tiny_causal_lm, batch_size=8), SlotCache())
    pools = build_pools(space, scorer, splits.train, splits.dev, log=lambda message: None)

    (context,) = echo.contexts
    assert context.train is splits.train and context.dev is splits.dev and context.scorer is scorer
    assert {r.template.source for r in context.ranked} == {t.source for t in space.templates.seeds}
    assert pools.origins["echo"] == {"from": context.ranked[0].template.source, "ending": "Honestly it was {mask}"}
    (made,) = [template for template in pools.templates if source(template) == "{text} Honestly it was {mask}"]
    assert ("awful",) in pools.words[0] and ("wonderful",) in pools.words[1]
    expected = [pools.params_for(made, context.ranked[0].verbalizer, calibration) for calibration in space.calibration]
    assert list(pools.proposals) == expected
    assert pools.held_out_train_rows == (0,)
    assert len(pools.manual) == 2 * 2 * 2  # seed templates x seed verbalizers x calibrations, unchanged


# -- identity ----------------------------------------------------------------------------------------------


def test_identity_leaves_out_generators_that_are_off_by_default_and_off() -> None:
    defaults = {name: generator.config() for name, generator in REGISTRY.items()}
    on_by_default = {name for name, config in defaults.items() if config.enabled}
    assert on_by_default == {"label_words"}
    assert set(Generators().identity()) == on_by_default  # and a single round is left out too
    off = Generators({"label_words": dataclasses.replace(defaults["label_words"], enabled=False)})
    assert set(off.identity()) == {"label_words"} and off.identity()["label_words"]["enabled"] is False
    on = Generators({"triggers": dataclasses.replace(defaults["triggers"], enabled=True)}, GenerationRounds(2, 10))
    assert set(on.identity()) == {"label_words", "triggers", "rounds"}
    assert on.identity()["triggers"] == config_dict(on.triggers)


def test_a_new_generator_that_is_off_does_not_change_the_identity(echo: EchoGenerator) -> None:
    """Runs made before a generator existed keep their identity, so they can still be resumed."""
    assert "echo" in Generators().configs and "echo" not in Generators().identity()
    assert Generators({"echo": EchoConfig(enabled=True)}).identity()["echo"] == config_dict(EchoConfig(enabled=True))
