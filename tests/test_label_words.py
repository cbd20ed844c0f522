"""Label-word candidates: ranking on known matrices, reading the cache."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from autoprompt_search.backends import load_backend
from autoprompt_search.candidates.label_words import generate_label_words, rank_label_words
from autoprompt_search.candidates.vocabulary import whole_word_tokens
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.testing import TINY_CORPUS

LABELS = ["negative", "positive"]
WORDS = {0: "great", 1: "terrible", 2: "good", 3: "bad", 4: "movie", 5: "Great", 6: "fine", 8: "nice"}
# Per class, the probability of each token: "movie" is the likeliest word under every class;
# token 7 is not an allowed word; "nice" (8) has the same column as "fine" (6).
PROBABILITIES = {
    "negative": [0.01, 0.2, 0.01, 0.1, 0.4, 0.02, 0.02, 0.22, 0.02],
    "positive": [0.2, 0.01, 0.1, 0.01, 0.4, 0.05, 0.02, 0.19, 0.02],
}


def _synthetic() -> tuple[np.ndarray, np.ndarray]:
    rows, gold = [], []
    for index, label in enumerate(LABELS):
        for jitter in (0.9, 1.0, 1.1):
            rows.append(np.log(np.array(PROBABILITIES[label]) * jitter))
            gold.append(index)
    return np.array(rows, dtype=np.float32), np.array(gold)


def _words(result) -> dict[str, list[str]]:
    return {label: [c.word for c in candidates] for label, candidates in result.items()}


def test_class_specific_words_beat_a_word_likely_under_every_class() -> None:
    log_probs, gold = _synthetic()
    result = rank_label_words(log_probs, gold, LABELS, WORDS, words_per_class=2, shortlist=5)
    assert _words(result) == {"negative": ["terrible", "bad"], "positive": ["great", "good"]}
    great = result["positive"][0]
    assert great.token_id == 0 and great.label == "positive"
    assert great.log_likelihood_ratio == pytest.approx(np.log(20), rel=1e-5)
    assert great.mean_log_prob == pytest.approx(np.mean(np.log(0.2 * np.array([0.9, 1.0, 1.1]))), rel=1e-5)


def test_shortlist_is_by_mean_log_prob_then_ordered_by_ratio() -> None:
    log_probs, gold = _synthetic()
    result = rank_label_words(log_probs, gold, LABELS, WORDS, words_per_class=5, shortlist=3)
    # Positive's three likeliest words are movie, great, good; movie (ratio 0) goes last.
    assert _words(result)["positive"] == ["great", "good"]
    # "movie" ties at ratio 0 in both classes: it goes to the earlier class only.
    assert _words(result)["negative"] == ["terrible", "bad", "movie"]


def test_a_word_goes_to_one_class_only_case_insensitively() -> None:
    log_probs, gold = _synthetic()
    result = rank_label_words(log_probs, gold, LABELS, WORDS, words_per_class=10, shortlist=10)
    words = [c.word.lower() for candidates in result.values() for c in candidates]
    assert len(words) == len(set(words))
    assert "Great" not in _words(result)["positive"]  # "great" has the higher ratio
    assert all(c.log_likelihood_ratio >= 0 for c in result["positive"] if c.word in ("great", "good"))


def test_exclude_and_words_per_class() -> None:
    log_probs, gold = _synthetic()
    result = rank_label_words(log_probs, gold, LABELS, WORDS, words_per_class=1, shortlist=10, exclude=[" GREAT", "terrible"])
    assert _words(result) == {"negative": ["bad"], "positive": ["good"]}
    for k in (1, 2, 3):
        result = rank_label_words(log_probs, gold, LABELS, WORDS, words_per_class=k, shortlist=10)
        assert all(len(candidates) <= k for candidates in result.values())


def test_ranking_is_deterministic_with_ties_broken_by_token_id() -> None:
    log_probs, gold = _synthetic()
    first = rank_label_words(log_probs, gold, LABELS, WORDS, words_per_class=10, shortlist=10)
    again = rank_label_words(log_probs.copy(), gold, LABELS, dict(reversed(WORDS.items())), words_per_class=10, shortlist=10)
    assert first == again
    owner = [label for label, candidates in first.items() if any(c.word == "fine" for c in candidates)]
    order = [c.word for c in first[owner[0]]]
    assert order.index("fine") < order.index("nice")  # same scores: lower token id first


def test_rank_rejects_a_class_without_examples() -> None:
    log_probs, _ = _synthetic()
    with pytest.raises(Exception, match="'positive' has 0 training examples"):
        rank_label_words(log_probs, np.zeros(len(log_probs), dtype=int), LABELS, WORDS, words_per_class=1)
    with pytest.raises(Exception, match="'negative' has 1 training examples; choosing its words needs at least 2"):
        rank_label_words(log_probs, np.array([0, 1, 1, 1, 1, 1]), LABELS, WORDS, words_per_class=1, ordering="held_out_auc")


# -- held-out ordering and the content-free filter ---------------------------------------------------
OUTLIER_WORDS = {0: "fluke", 1: "steady", 2: "filler", 3: "upbeat"}


def _outlier_matrix(per_class: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """"fluke" is huge under one negative example and slightly likelier under positives otherwise;
    "steady" is a little likelier under every negative example; "upbeat" under every positive one;
    "filler" is likely everywhere (and under content-free inputs too)."""
    rng = np.random.default_rng(0)
    rows, gold = [], []
    for index in (0, 1):
        for i in range(per_class):
            noise = rng.normal(0, 0.01, 4)
            fluke = -2.0 if (index == 0 and i == 0) else (-9.0 if index == 0 else -8.8)
            steady = -5.0 if index == 0 else -5.5
            upbeat = -6.0 if index == 1 else -6.6
            rows.append(np.array([fluke, steady, -1.0, upbeat]) + noise)
            gold.append(index)
    return np.array(rows), np.array(gold)


def test_likelihood_ratio_is_carried_by_one_outlier_and_held_out_auc_is_not() -> None:
    log_probs, gold = _outlier_matrix()
    by_ratio = rank_label_words(log_probs, gold, LABELS, OUTLIER_WORDS, words_per_class=3, shortlist=4)
    assert _words(by_ratio)["negative"][0] == "fluke"
    held_out = rank_label_words(log_probs, gold, LABELS, OUTLIER_WORDS, words_per_class=3, shortlist=4, ordering="held_out_auc")
    assert _words(held_out)["negative"][0] == "steady" and "fluke" not in _words(held_out)["negative"]
    assert _words(held_out)["positive"][0] == "upbeat"
    steady = held_out["negative"][0]
    assert steady.held_out_auc == pytest.approx(1.0) and steady.content_free_lift is None
    assert all(c.held_out_auc > 0.5 for candidates in held_out.values() for c in candidates)
    again = rank_label_words(log_probs, gold, LABELS, OUTLIER_WORDS, words_per_class=3, shortlist=4, ordering="held_out_auc")
    assert again == held_out


def test_a_word_the_slot_prefers_without_input_is_dropped() -> None:
    log_probs, gold = _outlier_matrix()
    # gives "filler" a small edge under positives, so that it would be a positive word
    log_probs[gold == 1, 2] += 0.3
    kept = rank_label_words(log_probs, gold, LABELS, OUTLIER_WORDS, words_per_class=4, shortlist=4, ordering="held_out_auc")
    assert "filler" in _words(kept)["positive"]
    content_free = np.array([-9.0, -9.0, -0.5, -9.0])  # the slot wants "filler" most with no input at all
    dropped = rank_label_words(log_probs, gold, LABELS, OUTLIER_WORDS, words_per_class=4, shortlist=4, ordering="held_out_auc",
                               content_free=content_free)
    assert "filler" not in _words(dropped)["positive"] and _words(dropped)["positive"][0] == "upbeat"
    assert dropped["positive"][0].content_free_lift == pytest.approx(-6.0 + 9.0, abs=0.05)


def test_a_word_must_be_shortlisted_on_both_halves() -> None:
    gold = np.repeat([0, 1], 4)
    negative = gold == 0
    # columns: fluke, steady, plain, dull. "fluke" separates the classes but makes the negative
    # shortlist of 3 only on the half of train that holds its one huge example.
    log_probs = np.stack([np.where(negative, -9.0, -9.2), np.where(negative, -6.0, -6.5),
                          np.full(8, -5.0), np.full(8, -8.0)], axis=1)
    log_probs[0, 0] = 0.0
    words = {0: "fluke", 1: "steady", 2: "plain", 3: "dull"}
    result = rank_label_words(log_probs, gold, LABELS, words, words_per_class=4, shortlist=3, ordering="held_out_auc")
    assert _words(result)["negative"] == ["steady"]  # plain and dull do not separate: AUC 0.5
    wider = rank_label_words(log_probs, gold, LABELS, words, words_per_class=4, shortlist=4, ordering="held_out_auc")
    assert set(_words(wider)["negative"]) == {"fluke", "steady"}


# -- generation from the model through the cache ------------------------------------------------------
TEXTS = [{"text": sentence} for sentence in TINY_CORPUS[:16]]
GOLD = [i % 2 for i in range(len(TEXTS))]
TEMPLATES = [Template.parse("{text} All in all it was {mask}"), Template.parse("{text} Overall it was {mask}")]


@pytest.fixture(scope="module")
def causal_backend(tiny_causal_lm):
    return load_backend(tiny_causal_lm, batch_size=4)


def test_generated_words_are_whole_and_distinct_and_reuse_the_cache(causal_backend) -> None:
    scorer = PromptScorer(causal_backend, chunk_size=5)
    result = generate_label_words(scorer, TEMPLATES, TEXTS, GOLD, LABELS, words_per_class=4, shortlist=30)
    allowed = whole_word_tokens(causal_backend.tokenizer, leading_space=True)
    assert set(result) == set(LABELS)
    assert all(1 <= len(candidates) <= 4 for candidates in result.values())
    words = [c.word.lower() for candidates in result.values() for c in candidates]
    assert len(words) == len(set(words))
    assert all(allowed[c.token_id] == c.word for candidates in result.values() for c in candidates)

    passes = causal_backend.forward_passes
    again = generate_label_words(scorer, TEMPLATES, TEXTS, GOLD, LABELS, words_per_class=4, shortlist=30)
    assert causal_backend.forward_passes == passes
    assert again == result


def test_generation_feeds_a_progress_bar_with_every_prompt_it_reads(causal_backend, monkeypatch) -> None:
    """Label-word generation can take minutes: its bar counts every templated text once, chunk by chunk."""
    bars = []
    opened = PromptScorer.progress_bar

    @contextmanager
    def recorded(self, total, desc):
        with opened(self, total, desc) as bar:
            bars.append(bar)
            yield bar
            bars[-1] = (desc, total, bar.n)

    monkeypatch.setattr(PromptScorer, "progress_bar", recorded)
    generate_label_words(PromptScorer(causal_backend, chunk_size=5), TEMPLATES, TEXTS, GOLD, LABELS, words_per_class=2)
    assert bars == [("label words", len(TEMPLATES) * len(TEXTS), len(TEMPLATES) * len(TEXTS))]


def test_generated_scores_average_probabilities_over_templates(causal_backend) -> None:
    scorer = PromptScorer(causal_backend, chunk_size=5)
    result = generate_label_words(scorer, TEMPLATES, TEXTS, GOLD, LABELS, words_per_class=2)
    per_template = []
    for template in TEMPLATES:
        prompts = scorer.prepare(template, TEXTS).prompts
        per_template.append(np.concatenate([scorer.slot_log_probs(chunk) for _, chunk in scorer.chunks(prompts)]))
    mixture = np.log(np.mean(np.exp(np.array(per_template, dtype=np.float64)), axis=0))
    gold = np.array(GOLD)
    for index, label in enumerate(LABELS):
        for candidate in result[label]:
            column = mixture[:, candidate.token_id]
            inside = np.log(np.exp(column[gold == index]).mean())
            outside = np.log(np.exp(column[gold != index]).mean())
            assert candidate.mean_log_prob == pytest.approx(column[gold == index].mean(), abs=1e-4)
            assert candidate.log_likelihood_ratio == pytest.approx(inside - outside, abs=1e-4)


def test_held_out_generation_reads_content_free_inputs_through_the_cache(causal_backend) -> None:
    scorer = PromptScorer(causal_backend, chunk_size=5)
    options = dict(words_per_class=4, shortlist=200, ordering="held_out_auc", drop_input_independent=True, seed=3)
    result = generate_label_words(scorer, TEMPLATES, TEXTS, GOLD, LABELS, **options)
    candidates = [c for words in result.values() for c in words]
    assert candidates and all(c.held_out_auc > 0.5 and c.content_free_lift > 0 for c in candidates)
    passes = causal_backend.forward_passes
    assert generate_label_words(scorer, TEMPLATES, TEXTS, GOLD, LABELS, **options) == result
    assert causal_backend.forward_passes == passes


def test_generation_works_for_a_masked_model(tiny_masked_lm) -> None:
    scorer = PromptScorer(load_backend(tiny_masked_lm, batch_size=8))
    result = generate_label_words(scorer, [Template.parse("{text} It was {mask}.")], TEXTS, GOLD, LABELS, words_per_class=3)
    allowed = set(whole_word_tokens(scorer.backend.tokenizer, leading_space=True))
    assert all(len(candidates) == 3 for candidates in result.values())
    assert all(c.token_id in allowed for candidates in result.values() for c in candidates)
