"""Tokenizer-agnostic helpers: how a piece of text is tokenized where it sits in a prompt.

Tokenizers disagree on whitespace: byte-level BPE folds a leading space into the next token
(" great" -> "Ġgreat"), SentencePiece marks word starts with "▁", WordPiece drops spaces. Rather
than special-casing families, we ask the tokenizer itself: a piece that follows other text is
tokenized after a short anchor, and the anchor's tokens are removed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from transformers import PreTrainedTokenizerBase

# Anchors tried in order; one that the tokenizer does not merge with the piece is kept.
_ANCHORS = ("\n", ".", "a", "|")


def encode_plain(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of texts that start a sequence, without special tokens."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def encode_in_context(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of texts as they are tokenized when other text comes before them.

    Keeps a leading space's effect (" great" -> "Ġgreat" / "▁great") without knowing the
    tokenizer family. Falls back to plain encoding where no anchor separates cleanly.
    """
    if not texts:
        return []
    result: list[list[int] | None] = [None] * len(texts)
    pending = list(range(len(texts)))
    for anchor in _ANCHORS:
        anchor_ids = _anchor_ids(tokenizer, anchor)
        if not anchor_ids or not pending:
            continue
        encoded = tokenizer([anchor + texts[i] for i in pending], add_special_tokens=False)["input_ids"]
        still_pending = []
        for index, ids in zip(pending, encoded):
            ids = list(ids)
            if ids[: len(anchor_ids)] == anchor_ids and _decodes_back(tokenizer, ids[len(anchor_ids):], texts[index]):
                result[index] = ids[len(anchor_ids):]
            else:
                still_pending.append(index)
        pending = still_pending
    if pending:
        for index, ids in zip(pending, encode_plain(tokenizer, [texts[i] for i in pending])):
            result[index] = ids
    return [ids if ids is not None else [] for ids in result]


def _anchor_ids(tokenizer: PreTrainedTokenizerBase, anchor: str) -> list[int]:
    return list(tokenizer(anchor, add_special_tokens=False)["input_ids"])


def _decodes_back(tokenizer: PreTrainedTokenizerBase, ids: list[int], text: str) -> bool:
    """True when the ids spell the text (modulo whitespace and case), i.e. no anchor merged in."""
    decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return "".join(decoded.split()).lower() == "".join(text.split()).lower()


@dataclass(frozen=True)
class SpecialTokens:
    """The special token ids a tokenizer adds before and after one sequence."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]


def special_tokens_around(tokenizer: PreTrainedTokenizerBase) -> SpecialTokens:
    return _special_tokens_cached(tokenizer)


@lru_cache(maxsize=32)
def _special_tokens_cached(tokenizer: PreTrainedTokenizerBase) -> SpecialTokens:
    probe = "hello world"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return SpecialTokens(tuple(full[:start]), tuple(full[start + len(bare):]))
    return SpecialTokens((), ())


def decode_token(tokenizer: PreTrainedTokenizerBase, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
