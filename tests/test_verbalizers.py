"""Verbalizers: parsing, tokenization across tokenizer families, combining words."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer

from autoprompt_search.errors import UserError
from autoprompt_search.testing import MULTI_TOKEN_WORDS
from autoprompt_search.verbalizers import Verbalizer, combine_word_log_probs

LABELS = ["negative", "positive"]


def test_parse_json_and_order_follows_labels() -> None:
    verbalizer = Verbalizer.parse('{"positive": ["great", "good"], "negative": "terrible"}', LABELS)
    assert verbalizer.labels == ("negative", "positive")
    assert verbalizer.words == (("terrible",), ("great", "good"))
    assert Verbalizer.parse(verbalizer.to_dict(), LABELS) == verbalizer


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('{"negative": ["bad"], "positive": ["good"]', "not valid JSON"),
        ('["bad", "good"]', "mapping from each label"),
        ('{"negative": ["bad"], "positive": ["good"], "neutral": ["ok"]}', "unknown label 'neutral'"),
        ('{"negative": ["bad"]}', "no words for label 'positive'"),
        ('{"negative": [], "positive": ["good"]}', "non-empty word"),
        ('{"negative": ["good"], "positive": ["Good"]}', "both 'negative' and 'positive'"),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(UserError, match="--verbalizer") as error:
        Verbalizer.parse(spec, LABELS, origin="--verbalizer")
    assert message in str(error.value)


@pytest.fixture(scope="module")
def tokenizers(tiny_masked_lm, tiny_causal_lm, tiny_seq2seq):
    return {name: AutoTokenizer.from_pretrained(folder) for name, folder in
            {"wordpiece": tiny_masked_lm, "byte_bpe": tiny_causal_lm, "sentencepiece": tiny_seq2seq}.items()}


@pytest.mark.parametrize("family", ["wordpiece", "byte_bpe", "sentencepiece"])
def test_leading_space_ids_match_the_word_in_context(tokenizers, family: str) -> None:
    tokenizer = tokenizers[family]
    verbalizer = Verbalizer.parse({"negative": ["terrible"], "positive": ["great"]}, LABELS)
    ((terrible,), (great,)) = verbalizer.token_ids(tokenizer, leading_space=True)
    in_sentence = tokenizer("it was great", add_special_tokens=False)["input_ids"]
    assert list(in_sentence[-len(great):]) == list(great)
    assert tokenizer.decode(list(terrible)).strip() == "terrible"


def test_byte_bpe_distinguishes_the_leading_space(tokenizers) -> None:
    tokenizer = tokenizers["byte_bpe"]
    verbalizer = Verbalizer.parse({"negative": ["bad"], "positive": ["great"]}, LABELS)
    with_space = verbalizer.token_ids(tokenizer, leading_space=True)
    without = verbalizer.token_ids(tokenizer, leading_space=False)
    assert with_space != without
    assert with_space[1][0] == tuple(tokenizer(" great", add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("family", ["wordpiece", "byte_bpe", "sentencepiece"])
def test_multi_token_words_keep_every_token(tokenizers, family: str) -> None:
    tokenizer = tokenizers[family]
    word = MULTI_TOKEN_WORDS[0]
    verbalizer = Verbalizer.parse({"negative": ["bad"], "positive": [word]}, LABELS)
    ids = verbalizer.token_ids(tokenizer, leading_space=True)[1][0]
    assert len(ids) > 1
    assert tokenizer.decode(list(ids)).replace(" ", "") == word


def test_unknown_word_is_a_user_error(tokenizers) -> None:
    verbalizer = Verbalizer.parse({"negative": ["bad"], "positive": ["qqqzzz"]}, LABELS)
    with pytest.raises(UserError, match="unknown to this model's tokenizer"):
        verbalizer.token_ids(tokenizers["wordpiece"], leading_space=True)


def test_combine_is_the_log_of_the_mean_probability() -> None:
    word_log_probs = torch.log(torch.tensor([[0.2, 0.4, 0.1], [0.05, 0.05, 0.6]], dtype=torch.float64))
    scores = combine_word_log_probs(word_log_probs, [0, 0, 1], 2)
    assert math.isclose(scores[0, 0].item(), math.log(0.3))
    assert math.isclose(scores[1, 0].item(), math.log(0.05))
    assert math.isclose(scores[1, 1].item(), math.log(0.6))
