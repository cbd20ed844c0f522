"""Which vocabulary tokens qualify as label words or trigger tokens.

Filters: special tokens (always out); tokens that are not alphabetic; sub-word fragments (a
token that, decoded and tokenized again where it sits, does not come back as itself alone);
label words. The round trip asks the tokenizer itself, so it holds for WordPiece, byte-level BPE
and SentencePiece alike, with no rule per tokenizer family. A token that survives it can be
written into a template or a verbalizer as plain text and read back as the same id.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from autoprompt_search.candidates.generators.triggers import TRIGGER_FILTERS
from autoprompt_search.tokenization import encode_in_context, encode_plain


def whole_word_tokens(tokenizer: PreTrainedTokenizerBase, *, leading_space: bool) -> dict[int, str]:
    """Token id -> word, for the tokens that are a whole real word at the slot.

    A token qualifies when it is not special, its decoded text (stripped) is alphabetic and at
    least 2 characters long, and it survives the round trip (after a space:
    ``encode_in_context(" " + word)``; otherwise plain). Memoised; the returned dict is a copy.
    """
    kept = _round_trip_ids(tokenizer, leading_space)
    return {i: text.strip() for i, text in _token_texts(tokenizer)
            if i in kept and len(text.strip()) >= 2 and text.strip().isalpha()}


def allowed_trigger_tokens(tokenizer: PreTrainedTokenizerBase, *, vocab_size: int, leading_space: bool,
                           filters: Iterable[str] = TRIGGER_FILTERS, label_words: Iterable[str] = ()) -> torch.Tensor:
    """A ``[vocab_size]`` bool mask of the tokens a trigger slot may take.

    ``leading_space``: whether the trigger follows whitespace in the template, which decides how a
    token must tokenize back. ``label_words`` are left out (case-insensitively) with that filter.
    """
    filters = set(filters)
    unknown = filters - set(TRIGGER_FILTERS)
    if unknown:
        raise ValueError(f"unknown trigger filters: {sorted(unknown)}")
    excluded = {word.strip().lower() for word in label_words} if "label_words" in filters else set()
    kept = _round_trip_ids(tokenizer, leading_space) if "subwords" in filters else None
    allowed = torch.zeros(vocab_size, dtype=torch.bool)
    for token_id, text in _token_texts(tokenizer):
        word = text.strip()
        if token_id >= vocab_size or not word or word.lower() in excluded:
            continue
        if ("non_alphabetic" in filters and not word.isalpha()) or (kept is not None and token_id not in kept):
            continue
        allowed[token_id] = True
    return allowed


@lru_cache(maxsize=8)
def _token_texts(tokenizer: PreTrainedTokenizerBase) -> tuple[tuple[int, str], ...]:
    """Every non-special token id with its text decoded alone."""
    special = set(tokenizer.all_special_ids)
    special.update(i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    return tuple(zip(ids, decode_each(tokenizer, ids)))


@lru_cache(maxsize=16)
def _round_trip_ids(tokenizer: PreTrainedTokenizerBase, leading_space: bool) -> frozenset[int]:
    """The ids whose stripped text tokenizes back (in context or plain) to exactly that one id."""
    texts = [(token_id, text.strip()) for token_id, text in _token_texts(tokenizer) if text.strip()]
    words = list(dict.fromkeys(word for _, word in texts))
    encoded = encode_in_context(tokenizer, [" " + w for w in words]) if leading_space else encode_plain(tokenizer, words)
    single = {word: ids[0] for word, ids in zip(words, encoded) if len(ids) == 1}
    return frozenset(token_id for token_id, word in texts if single.get(word) == token_id)


def continuation_tokens(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> torch.Tensor:
    """A ``[vocab_size]`` bool mask of the tokens that, written right after a letter, continue its
    word: a letter or digit follows it directly, with no space or punctuation between (GPT-2's
    "ing", WordPiece's "##ing", SentencePiece's pieces without "▁"). Asked of the tokenizer's own
    decoder, so no rule per tokenizer family."""
    mask = torch.zeros(max(vocab_size, len(tokenizer)), dtype=torch.bool)
    mask[list(_continuations(tokenizer))] = True
    return mask[:vocab_size]


@lru_cache(maxsize=8)
def _continuations(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    anchor = encode_plain(tokenizer, ["a"])[0][-1]
    start = _decode_batch(tokenizer, [[anchor]])[0]
    ids = [i for i, _ in _token_texts(tokenizer)]
    return frozenset(token_id for token_id, text in zip(ids, _decode_batch(tokenizer, [[anchor, i] for i in ids]))
                     if text.startswith(start) and len(text) > len(start) and text[len(start)].isalnum())


def decode_each(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[str]:
    """Each id decoded alone."""
    return _decode_batch(tokenizer, [[i] for i in ids])


def _decode_batch(tokenizer: PreTrainedTokenizerBase, sequences: list[list[int]]) -> list[str]:
    """One Rust call for fast tokenizers, a Python loop otherwise."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if tokenizer.is_fast else None
    if backend is not None:
        return backend.decode_batch(sequences, skip_special_tokens=False)
    return tokenizer.batch_decode(sequences, skip_special_tokens=False, clean_up_tokenization_spaces=False)
