"""Generated label words that the model reads as the first piece of a longer word.

The tokenizer's round trip (:mod:`vocabulary`) keeps " Dis", " un" or " sarc": each encodes back
as one token. At the slot, though, the model mostly goes on with them ("Disappointing",
"unfunny", "sarcastic"), so the token's probability stands for many words, and a verbalizer that
names it is a fragment to whoever reads or reuses the prompt. The model tells them apart: with the
word written at the slot, how much of the next token's probability goes to tokens that continue
the word (:func:`vocabulary.continuation_tokens`)? A word whose share is over
``FRAGMENT_SHARE`` is a fragment. The check is about the word at this slot: a real word that the
model reads there as the stem of a longer one (" forget" after "this film is", read as
"forgettable") goes too, and its probability did stand for the longer word. One batched pass
over a few short train examples per round of words; no word list and no rule per tokenizer.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from autoprompt_search.candidates.vocabulary import continuation_tokens
from autoprompt_search.templates import Template

FRAGMENT_SHARE = 0.5
CHECK_EXAMPLES = 4  # the shortest train examples: the share is a property of the word, not of the text
CHECK_CHARACTERS = 200  # and each field cut to this many characters (a BBC article would cost a pass of its own)


def continuation_shares(scorer, template: Template, texts: Sequence[Mapping[str, str]], words: Sequence[str]) -> dict[str, float]:
    """Each word's mean share of next-token probability on continuing tokens, written at the slot
    of ``template`` for the ``CHECK_EXAMPLES`` shortest ``texts`` (fields cut to ``CHECK_CHARACTERS``)."""
    words = list(dict.fromkeys(words))
    if not words:
        return {}
    shortest = [{name: value[:CHECK_CHARACTERS] for name, value in fields.items()}
                for fields in sorted(texts, key=lambda fields: sum(len(value) for value in fields.values()))[:CHECK_EXAMPLES]]
    prompts = [prompt for word in words for prompt in scorer.render(template.with_text_before_slot(word), shortest)]
    log_probs = scorer.backend.next_token_log_probs(prompts)
    continuing = continuation_tokens(scorer.backend.tokenizer, log_probs.shape[1])
    shares = torch.logsumexp(log_probs[:, continuing], dim=1).exp().view(len(words), len(shortest)).mean(dim=1)
    return {word: float(share) for word, share in zip(words, shares)}


def whole_words(scorer, template: Template, texts: Sequence[Mapping[str, str]], words_by_label: Mapping[str, Sequence[str]],
                per_label: int) -> tuple[dict[str, list[str]], dict[str, float]]:
    """The first ``per_label`` words of each label that are not fragments, and the fragments
    dropped on the way, with their shares. Words are checked in rounds, each round only as many
    as still missing, so a list without fragments costs one pass."""
    kept: dict[str, list[str]] = {label: [] for label in words_by_label}
    checked = {label: 0 for label in words_by_label}
    dropped: dict[str, float] = {}
    while True:
        due = {label: list(words[checked[label] : checked[label] + per_label - len(kept[label])])
               for label, words in words_by_label.items()}
        if not any(due.values()):
            return kept, dropped
        shares = continuation_shares(scorer, template, texts, [w for words in due.values() for w in words])
        for label, words in due.items():
            checked[label] += len(words)
            kept[label] += [w for w in words if shares[w] <= FRAGMENT_SHARE]
            dropped.update({w: round(shares[w], 4) for w in words if shares[w] > FRAGMENT_SHARE})
