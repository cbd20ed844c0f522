"""Which tokens qualify as label words and trigger tokens, for every tokenizer family."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from autoprompt_search.candidates.vocabulary import allowed_trigger_tokens, continuation_tokens, decode_each, whole_word_tokens
from autoprompt_search.testing import MULTI_TOKEN_WORDS
from autoprompt_search.tokenization import encode_in_context, encode_plain

FAMILIES = ["wordpiece", "byte_bpe", "sentencepiece", "sentencepiece_bos"]


@pytest.fixture(scope="module")
def tokenizers(tiny_masked_lm, tiny_causal_lm, tiny_seq2seq, tiny_causal_sp):
    folders = {"wordpiece": tiny_masked_lm, "byte_bpe": tiny_causal_lm, "sentencepiece": tiny_seq2seq, "sentencepiece_bos": tiny_causal_sp}
    return {name: AutoTokenizer.from_pretrained(folder) for name, folder in folders.items()}


@pytest.mark.parametrize("family", ["wordpiece", "byte_bpe", "sentencepiece", "sentencepiece_bos"])
def test_whole_word_tokens_keep_words_and_reject_fragments(tokenizers, family: str) -> None:
    tokenizer = tokenizers[family]
    words = whole_word_tokens(tokenizer, leading_space=True)
    assert {"great", "terrible", "good", "bad"} <= set(words.values())
    for word in ("great", "terrible"):
        assert words[encode_in_context(tokenizer, [" " + word])[0][0]] == word
    assert all(w.isalpha() and len(w) >= 2 for w in words.values())
    assert not set(words) & set(tokenizer.all_special_ids)
    for punctuation in (".", ",", "!"):
        assert not set(words) & set(encode_in_context(tokenizer, [punctuation])[0])
    for word in MULTI_TOKEN_WORDS:
        assert word not in words.values()
        pieces = encode_in_context(tokenizer, [" " + word])[0]
        assert len(pieces) > 1
        assert not set(words) & set(pieces[1:]), f"a continuation piece of {word!r} was kept"


def test_wordpiece_continuation_pieces_are_rejected(tokenizers) -> None:
    tokenizer = tokenizers["wordpiece"]
    words = whole_word_tokens(tokenizer, leading_space=True)
    for piece in ("##tas", "##tic", "##watch", "##piece"):
        assert tokenizer.convert_tokens_to_ids(piece) not in words


def test_byte_bpe_modes_follow_the_space(tokenizers) -> None:
    tokenizer = tokenizers["byte_bpe"]
    spaced = whole_word_tokens(tokenizer, leading_space=True)
    plain = whole_word_tokens(tokenizer, leading_space=False)
    (with_space,) = encode_in_context(tokenizer, [" great"])[0]
    (without,) = encode_plain(tokenizer, ["Great"])[0]
    assert with_space in spaced and with_space not in plain
    assert plain[without] == "Great" and without not in spaced


def test_whole_word_tokens_are_memoised_and_copied(tokenizers) -> None:
    tokenizer = tokenizers["byte_bpe"]
    first = whole_word_tokens(tokenizer, leading_space=True)
    first.clear()
    assert whole_word_tokens(tokenizer, leading_space=True)



# -- trigger filters ------------------------------------------------------------------------------------
def _allowed(tokenizer, **kwargs) -> set[int]:
    return set(torch.nonzero(allowed_trigger_tokens(tokenizer, vocab_size=len(tokenizer), **kwargs)).flatten().tolist())


@pytest.mark.parametrize("family", FAMILIES)
def test_trigger_filters_exclude_what_they_promise(tokenizers, family: str) -> None:
    tokenizer = tokenizers[family]
    allowed = _allowed(tokenizer, leading_space=True, label_words=["Great", "terrible"])
    texts = {i: t for i, t in zip(sorted(allowed), decode_each(tokenizer, sorted(allowed)))}
    assert allowed and not allowed & set(tokenizer.all_special_ids)
    assert all(text.strip().isalpha() for text in texts.values())
    assert not {t.strip().lower() for t in texts.values()} & {"great", "terrible"}
    words = [text.strip() for text in texts.values()]
    for token_id, ids in zip(texts, encode_in_context(tokenizer, [" " + w for w in words])):
        assert ids == [token_id], f"{texts[token_id]!r} does not tokenize back to itself"


@pytest.mark.parametrize("family", FAMILIES)
def test_each_trigger_filter_can_be_turned_off(tokenizers, family: str) -> None:
    tokenizer = tokenizers[family]
    everything = _allowed(tokenizer, leading_space=True, filters=())
    assert not everything & set(tokenizer.all_special_ids)  # special tokens are always out
    alphabetic = _allowed(tokenizer, leading_space=True, filters=("non_alphabetic",))
    assert alphabetic < everything
    (great,) = [i for i in alphabetic if tokenizer.decode([i]).strip() == "great"][:1] or [None]
    assert great is not None
    assert great not in _allowed(tokenizer, leading_space=True, filters=("label_words",), label_words=["GREAT"])
    for word in MULTI_TOKEN_WORDS:
        pieces = encode_in_context(tokenizer, [" " + word])[0]
        assert not set(pieces[1:]) & _allowed(tokenizer, leading_space=True)
    assert _allowed(tokenizer, leading_space=True, filters=("subwords",)) < everything


def test_unknown_trigger_filter_is_rejected(tokenizers) -> None:
    with pytest.raises(ValueError, match="unknown trigger filters"):
        allowed_trigger_tokens(tokenizers["byte_bpe"], vocab_size=10, leading_space=True, filters=("digits",))


@pytest.mark.parametrize("family", FAMILIES)
def test_continuation_tokens_are_the_pieces_inside_a_word(tokenizers, family: str) -> None:
    tokenizer = tokenizers[family]
    mask = continuation_tokens(tokenizer, len(tokenizer))
    for word in MULTI_TOKEN_WORDS:
        pieces = encode_in_context(tokenizer, [" " + word])[0]
        assert mask[pieces[1:]].all(), f"a piece inside {word!r} is not marked as continuing it"
    for word in ("great", "terrible", "good", "bad"):
        (token,) = encode_in_context(tokenizer, [" " + word])[0]
        assert not mask[token], f"{word!r} after a space starts a new word"
    for text in (".", ",", "!"):
        assert not mask[encode_in_context(tokenizer, [text])[0]].any()
    assert not mask[list(tokenizer.all_special_ids)].any()


def test_continuation_tokens_fit_the_model_vocabulary(tokenizers) -> None:
    tokenizer = tokenizers["byte_bpe"]
    full = continuation_tokens(tokenizer, len(tokenizer))
    padded = continuation_tokens(tokenizer, len(tokenizer) + 5)
    assert padded.shape == (len(tokenizer) + 5,) and not padded[len(tokenizer):].any()
    assert torch.equal(padded[: len(tokenizer)], full)
    assert torch.equal(continuation_tokens(tokenizer, 100), full[:100])
