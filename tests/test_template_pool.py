"""Tests for autoprompt_search.candidates.template_pool: seeds first, combinations, de-dup, cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoprompt_search.candidates import block_combinations, build_template_pool, normalize_template
from autoprompt_search.errors import UserError
from autoprompt_search.spaces import TemplateBlocks, load_space

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


def _space(tmp_path: Path, templates: str, dataset: str = "mr", model: str = "smollm2-135m"):
    path = tmp_path / "space.yaml"
    path.write_text(f"dataset: {dataset}\nmodel: {model}\ntemplates:\n{templates}\n"
                    "verbalizers:\n  seeds: [{negative: [bad], positive: [good]}]\n", encoding="utf-8")
    return load_space(path)


def test_normalize_template_collapses_whitespace_but_keeps_newlines_apart():
    assert normalize_template("  Review:   {text}  It was {mask} ") == "Review: {text} It was {mask}"
    assert normalize_template("{text} \n\t Sentiment: {mask}") == "{text}\nSentiment: {mask}"
    assert normalize_template("{text}\nIt was {mask}") != normalize_template("{text} It was {mask}")


def test_block_combinations_cover_the_product_once_in_a_diverse_order():
    blocks = TemplateBlocks(prefixes=("", "P: "), connectors=(" ", "\n"), endings=("A {mask}", "B {mask}", "C {mask}"))
    combos = list(block_combinations(blocks, ("text",)))
    assert len(combos) == len(set(combos)) == blocks.n_combinations == 12
    first_round = combos[:3]
    assert [c.split("{text}")[1][1:] for c in first_round] == ["A {mask}", "B {mask}", "C {mask}"]  # every ending first
    assert len({c.split("{text}")[0] for c in first_round}) == 2  # ... with varied prefixes
    assert combos[0] == "{text} A {mask}"


def test_several_text_fields_are_joined_by_a_space():
    blocks = TemplateBlocks(endings=("Answer: {mask}",))
    assert list(block_combinations(blocks, ("premise", "hypothesis"))) == ["{premise} {hypothesis} Answer: {mask}"]


def test_seeds_first_in_order_then_combinations(tmp_path):
    space = _space(tmp_path, """\
  seeds: ["Review: {text}\\nSentiment: {mask}", "{text} It was {mask}"]
  blocks: {prefixes: ["", "Review: "], connectors: [" ", "\\n"], endings: ["It was {mask}", "Sentiment: {mask}"]}
""")
    pool = [t.source for t in build_template_pool(space)]
    assert pool[:2] == ["Review: {text}\nSentiment: {mask}", "{text} It was {mask}"]
    # 8 combinations, two of them equal to the seeds
    assert len(pool) == 2 + 6 and len({normalize_template(s) for s in pool}) == len(pool)
    assert all(s.endswith("{mask}") for s in pool)


def test_duplicates_up_to_whitespace_are_dropped(tmp_path):
    space = _space(tmp_path, """\
  seeds: ["{text} It was {mask}", "{text}  It was {mask} "]
  blocks: {prefixes: ["", " "], connectors: [" ", "  "], endings: ["It was {mask}", "It was  {mask}"]}
""")
    assert [t.source for t in build_template_pool(space)] == ["{text} It was {mask}"]


def test_cap_keeps_every_seed(tmp_path):
    seeds = ", ".join(f'"{{text}} Seed {i}: {{mask}}"' for i in range(5))
    blocks = '{prefixes: ["", "A: ", "B: "], connectors: [" ", "\\n"], endings: ["X {mask}", "Y {mask}", "Z {mask}"]}'
    space = _space(tmp_path, f"  seeds: [{seeds}]\n  blocks: {blocks}\n  max_candidates: 8")
    pool = build_template_pool(space)
    assert len(pool) == 8 and [t.source for t in pool[:5]] == [f"{{text}} Seed {i}: {{mask}}" for i in range(5)]
    assert {t.source.rsplit(" ", 1)[0][-1] for t in pool[5:]} == {"X", "Y", "Z"}  # round-robin over endings
    few = _space(tmp_path, f"  seeds: [{seeds}]\n  blocks: {blocks}\n  max_candidates: 2")
    assert len(build_template_pool(few)) == 5  # seeds are never cut


def test_pool_is_deterministic_and_valid_for_bundled_spaces():
    for path in sorted(SPACES.glob("*.yaml")):
        if path.name == "base.yaml":
            continue
        space = load_space(path)
        pool = build_template_pool(space)
        assert [t.source for t in pool] == [t.source for t in build_template_pool(load_space(path))]
        assert pool[: len(space.templates.seeds)] == list(space.templates.seeds)
        assert 30 <= len(pool) <= space.templates.max_candidates
        assert all(t.fields_used == ("text",) and t.text_after_slot() == "" for t in pool)


def test_masked_model_keeps_text_after_the_slot_and_causal_drops_it(tmp_path):
    space = _space(tmp_path, '  seeds: ["{text} It was {mask}."]\n  blocks: {endings: ["It was {mask}.", "It was {mask}"]}',
                   model="splade-tiny")
    assert [t.source for t in build_template_pool(space)] == ["{text} It was {mask}.", "{text} It was {mask}"]
    with pytest.raises(UserError, match=r"space\.yaml: templates\.seeds\[0\]: for a causal model"):
        build_template_pool(space, model_kind="causal")
    no_seed = _space(tmp_path, '  blocks: {endings: ["It was {mask}.", "It was {mask}"]}', model="splade-tiny")
    assert [t.source for t in build_template_pool(no_seed, model_kind="causal")] == ["{text} It was {mask}"]
