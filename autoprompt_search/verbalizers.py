"""Verbalizers: each label maps to one or more words, turned into token ids for a tokenizer.

A word may span several tokens; it is scored whole by the backend (never cut to its first
token). Several words for one label are combined by the mean of their probabilities.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from autoprompt_search.errors import UserError
from autoprompt_search.tokenization import encode_in_context, encode_plain

WordIds = tuple[int, ...]


@dataclass(frozen=True)
class Verbalizer:
    """Label -> words, in the label order of the dataset."""

    labels: tuple[str, ...]
    words: tuple[tuple[str, ...], ...]

    @classmethod
    def parse(cls, spec: str | Mapping[str, object], labels: Sequence[str] | None = None, *, origin: str = "verbalizer") -> "Verbalizer":
        """Read ``{"label": ["word", ...]}`` (a dict or its JSON text) and check it against ``labels``."""
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as error:
                raise UserError(
                    f"{origin}: not valid JSON ({error.msg} at character {error.pos + 1}); "
                    'expected e.g. {"negative": ["terrible"], "positive": ["great"]}'
                ) from None
        if not isinstance(spec, Mapping) or not spec:
            raise UserError(f"{origin}: expected a mapping from each label to its words")
        mapping: dict[str, tuple[str, ...]] = {}
        for label, words in spec.items():
            if isinstance(words, str):
                words = [words]
            if not isinstance(words, (list, tuple)) or not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise UserError(f"{origin}: label {label!r} needs a non-empty word or list of non-empty words")
            mapping[str(label)] = tuple(dict.fromkeys(w.strip() for w in words))
        if labels is not None:
            unknown = [label for label in mapping if label not in labels]
            if unknown:
                raise UserError(f"{origin}: unknown label {unknown[0]!r}; the data's labels are: {', '.join(labels)}")
            missing = [label for label in labels if label not in mapping]
            if missing:
                raise UserError(f"{origin}: no words for label {missing[0]!r}; every label needs at least one word")
            order = list(labels)
        else:
            order = list(mapping)
        seen: dict[str, str] = {}
        for label in order:
            for word in mapping[label]:
                if word.lower() in seen and seen[word.lower()] != label:
                    raise UserError(f"{origin}: word {word!r} is given for both {seen[word.lower()]!r} and {label!r}")
                seen[word.lower()] = label
        return cls(tuple(order), tuple(mapping[label] for label in order))

    def to_dict(self) -> dict[str, list[str]]:
        return {label: list(words) for label, words in zip(self.labels, self.words)}

    def token_ids(self, tokenizer: PreTrainedTokenizerBase, *, leading_space: bool | str,
                  origin: str = "verbalizer") -> tuple[tuple[WordIds, ...], ...]:
        """Each label's words as token-id tuples, as they are tokenized at the slot.

        ``leading_space`` is the whitespace before the slot (True means one space): a word after
        a newline is the newline's token(s) followed by the word, scored as one continuation.
        ``origin`` names the verbalizer in errors (a space file's ``verbalizers.seeds[0]``, ...).
        """
        flat = [word for words in self.words for word in words]
        prefix = " " if leading_space is True else (leading_space or "")
        encoded = encode_in_context(tokenizer, [prefix + w for w in flat]) if prefix else encode_plain(tokenizer, flat)
        unk = tokenizer.unk_token_id
        result: list[tuple[WordIds, ...]] = []
        position = 0
        for label, words in zip(self.labels, self.words):
            label_ids = []
            for word in words:
                ids = tuple(encoded[position])
                position += 1
                if not ids:
                    raise UserError(f"{origin}: word {word!r} of label {label!r} gives no tokens with this model's tokenizer")
                if unk is not None and unk in ids:
                    raise UserError(f"{origin}: word {word!r} of label {label!r} is unknown to this model's tokenizer")
                label_ids.append(ids)
            result.append(tuple(label_ids))
        return tuple(result)

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def combine_word_log_probs(word_log_probs: torch.Tensor, word_to_label: Sequence[int], n_labels: int) -> torch.Tensor:
    """Class log-scores from word log-probs ``[n, W]``: log of the mean probability per label."""
    columns = []
    index = torch.as_tensor(word_to_label)
    for label in range(n_labels):
        selected = word_log_probs[:, index == label]
        columns.append(torch.logsumexp(selected, dim=1) - math.log(selected.shape[1]))
    return torch.stack(columns, dim=1)
