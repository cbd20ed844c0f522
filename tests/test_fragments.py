"""Generated label words the model reads as the first piece of a longer word are dropped."""

from __future__ import annotations

import pytest
import torch

from autoprompt_search.backends import load_backend
from autoprompt_search.candidates.fragments import CHECK_EXAMPLES, FRAGMENT_SHARE, continuation_shares, whole_words
from autoprompt_search.candidates.vocabulary import continuation_tokens
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.testing import TINY_CORPUS
from autoprompt_search.tokenization import encode_in_context

TEMPLATE = Template.parse("{text} It was {mask}")
TEXTS = [{"text": sentence} for sentence in TINY_CORPUS[:8]]


@pytest.fixture
def scripted(tiny_causal_lm, monkeypatch):
    """A tiny causal backend whose next token after " great" is mostly a piece continuing it
    (share 0.9); after any other word, mostly a full stop."""
    backend = load_backend(tiny_causal_lm, batch_size=4)
    tokenizer = backend.tokenizer
    (great,) = encode_in_context(tokenizer, [" great"])[0]
    mask = continuation_tokens(tokenizer, backend.vocab_size)
    continuing = int(mask.nonzero()[0])
    rest = 0.1 / (backend.vocab_size - 1)  # the probability of every other token
    (stop,) = encode_in_context(tokenizer, ["."])[0]
    seen: list[int] = []

    def next_token_log_probs(prompts, query=None):
        seen.append(len(prompts))
        probabilities = torch.full((len(prompts), backend.vocab_size), rest, dtype=torch.float64)
        for row, prompt in enumerate(prompts):
            probabilities[row, continuing if prompt.before[-1] == great else stop] = 0.9
        return probabilities.log()

    monkeypatch.setattr(backend, "next_token_log_probs", next_token_log_probs)
    expected = {"great": 0.9 + rest * (int(mask.sum()) - 1), "other": rest * int(mask.sum())}
    return PromptScorer(backend), seen, expected


def test_the_share_is_the_probability_of_continuing_the_word(scripted) -> None:
    scorer, seen, expected = scripted
    shares = continuation_shares(scorer, TEMPLATE, TEXTS, ["great", "bad", "great"])
    assert set(shares) == {"great", "bad"}
    assert shares["great"] == pytest.approx(expected["great"], rel=1e-5)
    assert shares["bad"] == pytest.approx(expected["other"], rel=1e-5)
    assert seen == [2 * CHECK_EXAMPLES]  # one batched call: the shortest examples, each word once


def test_fragments_are_dropped_and_the_next_words_fill_their_place(scripted) -> None:
    scorer, seen, _ = scripted
    kept, dropped = whole_words(scorer, TEMPLATE, TEXTS, {"positive": ["great", "good", "nice"], "negative": ["bad", "awful", "dull"]}, 2)
    assert kept == {"positive": ["good", "nice"], "negative": ["bad", "awful"]}
    assert list(dropped) == ["great"] and dropped["great"] > FRAGMENT_SHARE
    assert seen == [4 * CHECK_EXAMPLES, 1 * CHECK_EXAMPLES]  # the spare word is checked only once "great" is out


def test_a_label_that_runs_out_of_words_keeps_what_it_has(scripted) -> None:
    scorer, seen, _ = scripted
    kept, dropped = whole_words(scorer, TEMPLATE, TEXTS, {"positive": ["great"], "negative": ["bad", "awful"]}, 2)
    assert kept == {"positive": [], "negative": ["bad", "awful"]} and list(dropped) == ["great"]
    assert seen == [3 * CHECK_EXAMPLES]


def test_long_texts_are_cut_for_the_check(scripted, monkeypatch) -> None:
    scorer, _, _ = scripted
    long = [{"text": "word " * 400}]
    prompts = []
    real = scorer.backend.next_token_log_probs
    monkeypatch.setattr(scorer.backend, "next_token_log_probs", lambda batch, query=None: (prompts.extend(batch), real(batch))[1])
    continuation_shares(scorer, TEMPLATE, long, ["bad"])
    assert len(prompts) == 1 and len(prompts[0].before) < 100


def test_no_words_cost_no_pass(scripted) -> None:
    scorer, seen, _ = scripted
    assert continuation_shares(scorer, TEMPLATE, TEXTS, []) == {}
    assert seen == []


@pytest.mark.parametrize("model", ["tiny_masked_lm", "tiny_seq2seq", "tiny_causal_sp"])
def test_shares_are_probabilities_for_every_model_kind(model, request) -> None:
    scorer = PromptScorer(load_backend(request.getfixturevalue(model)))
    template = Template.parse("{text} It was {mask}." if model != "tiny_causal_sp" else "{text} It was {mask}")
    shares = continuation_shares(scorer, template, TEXTS, ["great", "bad"])
    assert set(shares) == {"great", "bad"} and all(0.0 <= share <= 1.0 for share in shares.values())
