"""The scorer and its cache: reuse without forward passes, calibration, metrics, chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autoprompt_search.backends import load_backend
from autoprompt_search.cache import SlotCache
from autoprompt_search.calibration import Calibration
from autoprompt_search.errors import UserError
from autoprompt_search.scoring import PromptScorer, evaluate_scores
from autoprompt_search.templates import Template
from autoprompt_search.testing import TINY_CORPUS
from autoprompt_search.verbalizers import Verbalizer

LABELS = ["negative", "positive"]
TEXTS = [{"text": sentence} for sentence in TINY_CORPUS[:12]]
GOLD = [i % 2 for i in range(len(TEXTS))]
TEMPLATE = Template.parse("{text} All in all it was {mask}")


@pytest.fixture(scope="module")
def backend(tiny_causal_lm):
    return load_backend(tiny_causal_lm, batch_size=4)


def _verbalizer(negative: str, positive: str) -> Verbalizer:
    return Verbalizer.parse({"negative": [negative], "positive": [positive]}, LABELS)


def test_cached_template_scores_new_verbalizers_without_forward_passes(backend) -> None:
    scorer = PromptScorer(backend, SlotCache())
    prepared = scorer.prepare(TEMPLATE, TEXTS)
    scorer.score(prepared, _verbalizer("bad", "good"), GOLD)
    passes = backend.forward_passes
    for negative, positive in [("terrible", "great"), ("awful", "wonderful"), ("bad", "great")]:
        scorer.score(prepared, _verbalizer(negative, positive), GOLD, calibration="prior")
    assert backend.forward_passes == passes
    assert scorer.cache.hits >= 3


def test_disk_cache_is_reused_across_scorers(backend, tmp_path) -> None:
    first = PromptScorer(backend, SlotCache(tmp_path)).prepare(TEMPLATE, TEXTS)
    reference = PromptScorer(backend, SlotCache(tmp_path)).score(first, _verbalizer("bad", "good"), GOLD)
    passes = backend.forward_passes
    scorer = PromptScorer(backend, SlotCache(tmp_path))
    again = scorer.score(scorer.prepare(TEMPLATE, TEXTS), _verbalizer("bad", "good"), GOLD)
    assert backend.forward_passes == passes
    assert np.array_equal(again.log_scores, reference.log_scores)
    # Another template misses.
    other = scorer.prepare(Template.parse("{text} Overall it was {mask}"), TEXTS)
    assert scorer.cached(first.prompts) and not scorer.cached(other.prompts)
    scorer.score(other, _verbalizer("bad", "good"), GOLD)
    assert backend.forward_passes > passes and scorer.cached(other.prompts)


def test_damaged_cache_file_is_recomputed(backend, tmp_path) -> None:
    scorer = PromptScorer(backend, SlotCache(tmp_path))
    prepared = scorer.prepare(TEMPLATE, TEXTS)
    reference = scorer.score(prepared, _verbalizer("bad", "good"), GOLD)
    for path in tmp_path.rglob("*.npy"):
        path.write_bytes(b"garbage")
    fresh = PromptScorer(backend, SlotCache(tmp_path))
    assert np.allclose(fresh.score(prepared, _verbalizer("bad", "good"), GOLD).log_scores, reference.log_scores)


def test_variants_of_one_template_read_one_pass_whatever_the_cache_holds(backend) -> None:
    """Several verbalizers and calibrations on one template: the same scores as one at a time,
    from one pass over the chunks, even with a cache that keeps nothing."""
    variants = [(_verbalizer("bad", "good"), "none"), (_verbalizer("terrible", "great"), "prior"),
                (_verbalizer("bad", "great"), "contextual"), (_verbalizer("bad", "good"), "prior")]
    reference = PromptScorer(backend, SlotCache(), chunk_size=5)
    expected = [reference.score(reference.prepare(TEMPLATE, TEXTS), v, GOLD, calibration=c) for v, c in variants]
    forgetful = PromptScorer(backend, SlotCache(memory_bytes=0), chunk_size=5)
    prepared = forgetful.prepare(TEMPLATE, TEXTS)
    passes = backend.forward_passes
    forgetful.score(prepared, *variants[0][:1], GOLD)
    one_verbalizer = backend.forward_passes - passes
    passes = backend.forward_passes
    scores = forgetful.score_variants(prepared, variants[:2] + variants[3:], GOLD)
    assert backend.forward_passes - passes < 3 * one_verbalizer  # one at a time would be three passes
    scores.insert(2, forgetful.score_variants(prepared, variants[2:3], GOLD)[0])
    for score, reference_score in zip(scores, expected):
        assert np.array_equal(score.log_scores, reference_score.log_scores)
        assert score.calibration == reference_score.calibration
    passes = backend.forward_passes
    forgetful.score_variants(prepared, [(variants[0][0], c) for c in ("none", "prior", "none")], GOLD)
    assert backend.forward_passes - passes == one_verbalizer


def test_chunking_does_not_change_scores(backend) -> None:
    whole = PromptScorer(backend, SlotCache(), chunk_size=256)
    chunked = PromptScorer(backend, SlotCache(), chunk_size=5)
    a = whole.score(whole.prepare(TEMPLATE, TEXTS), _verbalizer("bad", "good"), GOLD)
    b = chunked.score(chunked.prepare(TEMPLATE, TEXTS), _verbalizer("bad", "good"), GOLD)
    assert np.allclose(a.log_scores, b.log_scores, atol=1e-6)


def test_prior_calibration_subtracts_each_class_mean(backend) -> None:
    scorer = PromptScorer(backend)
    prepared = scorer.prepare(TEMPLATE, TEXTS)
    verbalizer = _verbalizer("bad", "good")
    raw = scorer.class_scores(prepared.prompts, scorer.word_ids(TEMPLATE, verbalizer))
    calibrated = scorer.score(prepared, verbalizer, GOLD, calibration="prior")
    assert np.allclose(calibrated.log_scores, (raw - raw.mean(0)).numpy())
    assert np.allclose(calibrated.log_scores.mean(0), 0, atol=1e-9)


def test_contextual_calibration_uses_content_free_inputs(backend) -> None:
    scorer = PromptScorer(backend)
    prepared = scorer.prepare(TEMPLATE, TEXTS)
    verbalizer = _verbalizer("bad", "good")
    score = scorer.score(prepared, verbalizer, GOLD, calibration="contextual")
    content_free = scorer.prepare(TEMPLATE, [{"text": "N/A"}, {"text": ""}])  # no mask token: "" once
    raw = scorer.class_scores(content_free.prompts, scorer.word_ids(TEMPLATE, verbalizer))
    expected_bias = torch.log(torch.softmax(raw, 1).mean(0))
    assert np.allclose(score.calibration.bias, expected_bias.numpy())
    probabilities = score.probabilities
    assert np.allclose(probabilities.sum(1), 1)


def test_metrics_and_margins() -> None:
    scores = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]]))
    result = evaluate_scores(scores, [0, 0, 1, 1], Calibration())
    assert result.accuracy == 0.5
    assert result.macro_f1 == pytest.approx(0.5)
    assert result.margins[0] == pytest.approx(math.log(9))
    assert result.margins[1] == pytest.approx(math.log(0.4 / 0.6))
    assert list(result.predictions) == [0, 1, 1, 0]


def test_a_distribution_with_nan_is_refused_not_stored(backend, monkeypatch) -> None:
    scorer = PromptScorer(backend, SlotCache())
    nan = torch.full((len(TEXTS), backend.vocab_size), float("nan"))
    monkeypatch.setattr(backend, "templates_next_token_log_probs", lambda prompt_sets, query: [nan for _ in prompt_sets])
    with pytest.raises(UserError, match="holds NaN"):
        scorer.score(scorer.prepare(TEMPLATE, TEXTS), _verbalizer("bad", "good"), GOLD)
    assert scorer.cache._memory == {}


def test_memory_cache_is_bounded() -> None:
    cache = SlotCache(memory_bytes=3 * 400)
    for index in range(5):
        cache.put(f"k{index}", np.zeros((10, 20), dtype=np.uint16))
    assert cache.get("k0") is None and cache.get("k4") is not None
    assert cache._memory_used <= 3 * 400


def test_progress_is_reported_once_per_chunk_and_only_inside_the_block(backend) -> None:
    scorer = PromptScorer(backend, SlotCache(), chunk_size=3)
    prepared = scorer.prepare(TEMPLATE, TEXTS)
    reported: list[int] = []
    with scorer.reporting(reported.append):
        scorer.score_variants(prepared, [(_verbalizer("bad", "good"), "none"), (_verbalizer("terrible", "great"), "none")], GOLD)
    chunks = [len(chunk) for _, chunk in scorer.chunks(prepared.prompts)]
    assert reported == chunks and sum(reported) == len(TEXTS) and len(chunks) > 1
    scorer.score(prepared, _verbalizer("bad", "good"), GOLD)
    assert sum(reported) == len(TEXTS) and scorer.progress is None


def test_templates_scored_together_score_as_they_do_alone(backend) -> None:
    """The test pass scores every template in one pass over the examples (a causal model shares
    their opening): each prompt's scores are the ones it gets alone, and the cache holds the same entries."""
    from autoprompt_search.testing import MULTI_TOKEN_WORDS

    multi = Verbalizer.parse({"negative": [MULTI_TOKEN_WORDS[0]], "positive": ["good", MULTI_TOKEN_WORDS[1]]}, LABELS)
    templates = [TEMPLATE, Template.parse("{text}\nIn short, it was {mask}"), Template.parse("{text} {mask}")]
    variants = [(_verbalizer("bad", "good"), "prior"), (multi, "none"), (_verbalizer("terrible", "great"), "contextual")]
    together_scorer = PromptScorer(backend, SlotCache(), chunk_size=5)
    items = [(together_scorer.prepare(template, TEXTS), variants) for template in templates]
    reported: list[int] = []
    with together_scorer.reporting(reported.append):
        together = together_scorer.score_templates(items, GOLD)
    assert reported[:3] == [5, 5, 2]  # the examples' chunks, once for all templates (then the content-free inputs of contextual)
    alone_scorer = PromptScorer(backend, SlotCache(), chunk_size=5)
    for template, scores in zip(templates, together):
        alone = alone_scorer.score_variants(alone_scorer.prepare(template, TEXTS), variants, GOLD)
        for shared, single in zip(scores, alone):
            assert shared.predictions.tolist() == single.predictions.tolist()
            assert np.allclose(shared.log_scores, single.log_scores, atol=1e-4)
    passes = backend.forward_passes
    for template in templates:  # what the joint pass cached serves the template alone
        together_scorer.score_variants(together_scorer.prepare(template, TEXTS), variants[:2], GOLD)
    assert backend.forward_passes == passes
