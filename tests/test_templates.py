"""The template language: parsing, validation errors, and rendering with truncation."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from autoprompt_search.errors import UserError
from autoprompt_search.templates import Template, TemplateRenderer, escape


def test_parse_segments_fields_and_triggers() -> None:
    template = Template.parse("Review: {text} [T] [T] It was {mask}. {{literal}}")
    kinds = [segment.kind for segment in template.segments]
    assert kinds == ["literal", "field", "literal", "trigger", "literal", "trigger", "literal", "slot", "literal"]
    assert template.fields_used == ("text",)
    assert template.n_triggers == 2
    assert template.text_after_slot() == ". {literal}"
    assert template.slot_follows_space()


def test_slot_without_space_before() -> None:
    assert not Template.parse("{text} It was{mask}").slot_follows_space()
    assert not Template.parse("{mask}: {text}").slot_follows_space()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{text} It was great.", "no label slot {mask}"),
        ("{text} {mask} or {mask}", "2 label slots"),
        ("{sentence} It was {mask}", "unknown field {sentence}"),
        ("{text} It was {mask", "unmatched '{'"),
        ("{text} It was } {mask}", "unmatched '}'"),
        ("{text} {my field} {mask}", "not a valid slot name"),
        ("   ", "empty"),
        ("It was {mask}", "uses no field"),
    ],
)
def test_parse_errors_name_the_problem(source: str, message: str) -> None:
    with pytest.raises(UserError, match="spaces.yaml: templates"):
        Template.parse(source, fields=["text"], origin="spaces.yaml: templates")
    with pytest.raises(UserError) as error:
        Template.parse(source, fields=["text"])
    assert message in str(error.value)


def test_causal_models_need_the_slot_last() -> None:
    template = Template.parse("{text} It was {mask}.")
    template.check_for_model("masked")
    with pytest.raises(UserError, match="must be last"):
        template.check_for_model("causal")
    Template.parse("{text} It was {mask}  ").check_for_model("causal")
    for source in ("{mask} is the verdict on {text}", "{text} It was {mask} [T]"):
        with pytest.raises(UserError, match="must be last"):
            Template.parse(source).check_for_model("causal")


def test_whitespace_before_a_field_or_the_slot_is_kept(bpe_tokenizer) -> None:
    template = Template.parse("Review:\n{text}\nSentiment:\n{mask}")
    assert template.whitespace_before_slot() == "\n"
    [prompt] = TemplateRenderer(template, bpe_tokenizer).render([{"text": "good movie"}], max_tokens=50)
    whole = bpe_tokenizer("Review:\ngood movie\nSentiment:", add_special_tokens=False)["input_ids"]
    assert list(prompt.before) == list(whole)


@pytest.fixture(scope="module")
def bpe_tokenizer(tiny_causal_lm):
    return AutoTokenizer.from_pretrained(tiny_causal_lm)


def test_render_matches_tokenizing_the_whole_text(bpe_tokenizer) -> None:
    template = Template.parse("{text} All in all it was {mask}")
    renderer = TemplateRenderer(template, bpe_tokenizer)
    [prompt] = renderer.render([{"text": "the movie was great"}], max_tokens=100)
    whole = bpe_tokenizer("the movie was great All in all it was", add_special_tokens=False)["input_ids"]
    assert list(prompt.before) == list(whole)
    assert prompt.after == ()


def test_truncation_cuts_the_field_never_the_template(bpe_tokenizer) -> None:
    template = Template.parse("Review: {text} All in all it was {mask}")
    renderer = TemplateRenderer(template, bpe_tokenizer)
    long_text = " ".join(["the plot was good and the acting was bad"] * 20)
    short, long = renderer.render([{"text": "good"}, {"text": long_text}], max_tokens=30)
    assert len(long.before) == 30
    own_words = bpe_tokenizer(" All in all it was", add_special_tokens=False)["input_ids"]
    assert list(long.before[-len(own_words):]) == own_words
    assert list(short.before[-len(own_words):]) == own_words
    assert list(long.before[:2]) == list(short.before[:2])  # "Review:" kept at the front


def test_truncation_shortens_the_longest_field_first(bpe_tokenizer) -> None:
    template = Template.parse("{premise} ? {mask} , {hypothesis}")
    renderer = TemplateRenderer(template, bpe_tokenizer)
    premise = " ".join(["the movie was good"] * 10)
    [prompt] = renderer.render([{"premise": premise, "hypothesis": "it was bad"}], max_tokens=20)
    hypothesis_ids = bpe_tokenizer(" it was bad", add_special_tokens=False)["input_ids"]
    assert len(prompt.before) + len(prompt.after) == 20
    assert list(prompt.after[-len(hypothesis_ids):]) == hypothesis_ids


def test_triggers_are_placed_as_token_ids(bpe_tokenizer) -> None:
    template = Template.parse("{text} [T] [T] it was {mask}")
    renderer = TemplateRenderer(template, bpe_tokenizer, trigger_ids=[7, 9])
    [prompt] = renderer.render([{"text": "good"}], max_tokens=50)
    assert 7 in prompt.before and 9 in prompt.before
    assert prompt.before.index(7) < prompt.before.index(9)
    with pytest.raises(UserError, match="2 trigger slots"):
        TemplateRenderer(template, bpe_tokenizer)


def test_template_too_long_for_the_model(bpe_tokenizer) -> None:
    template = Template.parse("{text} " + "it was good and " * 20 + "{mask}")
    with pytest.raises(UserError, match="tokens of its own"):
        TemplateRenderer(template, bpe_tokenizer).render([{"text": "good"}], max_tokens=10)


def test_missing_field_in_example(bpe_tokenizer) -> None:
    renderer = TemplateRenderer(Template.parse("{text} {mask}"), bpe_tokenizer)
    with pytest.raises(UserError, match="no field 'text'"):
        renderer.render([{"sentence": "good"}], max_tokens=10)


def test_text_is_written_right_before_the_slot() -> None:
    template = Template.parse("Review: {text} [T] It was {mask}. {{x}}")
    written = template.with_text_before_slot("Dis{")
    assert written.source == "Review: {text} [T] It was Dis{{{mask}. {{x}}"
    assert written.fields_used == ("text",) and written.n_triggers == 1
    assert not written.slot_follows_space() and template.slot_follows_space()


def test_a_literal_trigger_marker_is_written_with_a_literal_bracket() -> None:
    """``{[}`` is a literal "[": ``{[}T]`` is the text [T]; a plain [T] stays a trigger slot."""
    template = Template.parse("{text} {[}T] [T] {{[T]}} {mask}")
    assert [(s.kind, s.value) for s in template.segments] == [
        ("field", "text"), ("literal", " [T] "), ("trigger", ""), ("literal", " {"), ("trigger", ""), ("literal", "} "), ("slot", ""),
    ]  # fmt: skip
    assert escape("{[T]}") == "{{{[}T]}}"
    escaped = Template.parse("{text}" + escape("{[T]} [[T]]") + "{mask}")
    assert [(s.kind, s.value) for s in escaped.segments] == [("field", "text"), ("literal", "{[T]} [[T]]"), ("slot", "")]


def test_text_written_before_the_slot_never_makes_a_trigger() -> None:
    assert [s.kind for s in Template.parse("{text}{mask}").with_text_before_slot("[T]").segments] == ["field", "literal", "slot"]
    joined = Template.parse("{text} [{mask}").with_text_before_slot("T]")  # "[" before the slot and "T]" make no [T]
    assert [(s.kind, s.value) for s in joined.segments] == [("field", "text"), ("literal", " [T]"), ("slot", "")]
