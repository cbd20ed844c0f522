"""Label-word candidates read from the model's own slot distribution.

Two classic recipes are combined:

- LM-BFF (Gao et al., 2021): for each class, shortlist the vocabulary by the mean
  log-probability at the slot over the class's training examples;
- PETAL (Schick et al., 2020): order words by a likelihood ratio, how much more likely the
  word is under the class's examples than under the other classes' examples.

Only tokens that are a whole real word at the slot are considered (:func:`vocabulary.whole_word_tokens`),
so every candidate is a one-token verbalizer word whose score needs no extra forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.special import logsumexp

from autoprompt_search.candidates.vocabulary import whole_word_tokens
from autoprompt_search.errors import UserError
from autoprompt_search.templates import Template


@dataclass(frozen=True)
class WordCandidate:
    """One candidate word for one label, with the scores it was ranked by."""

    word: str
    token_id: int
    label: str
    mean_log_prob: float  # LM-BFF: mean over the class's examples of log p(token | x)
    log_likelihood_ratio: float  # PETAL-style: log mean_{x in c} p - log mean_{x not in c} p


def rank_label_words(
    log_probs: np.ndarray,
    gold: np.ndarray,
    labels: Sequence[str],
    allowed: Mapping[int, str],
    *,
    words_per_class: int,
    shortlist: int = 100,
    exclude: Iterable[str] = (),
) -> dict[str, list[WordCandidate]]:
    """Rank candidate words per class from a ``[n, vocab]`` slot log-probability matrix.

    ``gold`` holds label indices into ``labels``; ``allowed`` maps token id -> word (see
    :func:`whole_word_tokens`). Per class: the ``shortlist`` allowed tokens with the highest
    mean log-probability over the class's examples, ordered by log-likelihood ratio (ties by
    token id), first ``words_per_class`` kept. A word (case-insensitively) goes to one class
    only, the one where its ratio is highest (ties: the earlier class), and only its best casing
    is kept; words in ``exclude`` (case-insensitive) are dropped before shortlisting.
    """
    log_probs = np.asarray(log_probs)
    gold = np.asarray(gold, dtype=np.int64)
    if log_probs.ndim != 2 or len(log_probs) != len(gold):
        raise ValueError(f"log_probs must be [n, vocab] with n = len(gold) = {len(gold)}; got shape {log_probs.shape}")
    if words_per_class < 1 or shortlist < 1:
        raise ValueError("words_per_class and shortlist must be at least 1")
    if len(labels) < 2:
        raise UserError(f"label words: need at least 2 labels, got {len(labels)}")
    if len(gold) and (gold.min() < 0 or gold.max() >= len(labels)):
        raise ValueError(f"gold label indices must lie in [0, {len(labels)})")
    for index, label in enumerate(labels):
        if not (gold == index).any():
            raise UserError(f"label words: label {label!r} has no training example to choose its words from")

    excluded = {word.strip().lower() for word in exclude}
    ids = np.array(sorted(i for i, w in allowed.items() if 0 <= i < log_probs.shape[1] and w.lower() not in excluded), dtype=np.int64)
    if not ids.size:
        return {label: [] for label in labels}
    selected = log_probs[:, ids].astype(np.float64)

    ranked: list[list[WordCandidate]] = []
    for index, label in enumerate(labels):
        inside = gold == index
        mean = selected[inside].mean(axis=0)
        ratio = _log_mean_exp(selected[inside]) - _log_mean_exp(selected[~inside])
        top = np.lexsort((ids, -mean))[:shortlist]  # lexsort sorts by its last key first
        order = top[np.lexsort((ids[top], -ratio[top]))]
        ranked.append([WordCandidate(allowed[int(ids[j])], int(ids[j]), label, float(mean[j]), float(ratio[j])) for j in order])

    # Each lowercased word goes to its best (class, token): highest ratio, then earlier class, then lower id.
    owner: dict[str, tuple[float, int, int]] = {}
    for index, candidates in enumerate(ranked):
        for c in candidates:
            key = (c.log_likelihood_ratio, -index, -c.token_id)
            if c.word.lower() not in owner or key > owner[c.word.lower()]:
                owner[c.word.lower()] = key
    result: dict[str, list[WordCandidate]] = {}
    for index, (label, candidates) in enumerate(zip(labels, ranked)):
        kept = [c for c in candidates if owner[c.word.lower()] == (c.log_likelihood_ratio, -index, -c.token_id)]
        result[label] = kept[:words_per_class]
    return result


def _log_mean_exp(values: np.ndarray) -> np.ndarray:
    """``log(mean(exp(values), axis=0))``, computed stably."""
    return logsumexp(values, axis=0) - np.log(len(values))


def generate_label_words(
    scorer,  # PromptScorer; not imported to keep this module free of the scorer's dependencies
    templates: Sequence[Template],
    texts: Sequence[Mapping[str, str]],
    gold: Sequence[int],
    labels: Sequence[str],
    *,
    words_per_class: int,
    shortlist: int = 100,
    exclude: Iterable[str] = (),
) -> dict[str, list[WordCandidate]]:
    """Candidate label words from the slot distributions of ``templates`` on the train ``texts``.

    Distributions are read through the scorer's chunks and cache (at most one computation per
    template, none when cached) and averaged over templates as the log of the mean probability;
    only the running average, ``[n, vocab]`` float32, is kept. Then :func:`rank_label_words`.

    The whole-word filter needs one tokenization mode: templates whose slot follows a space
    and templates whose slot does not should not be mixed; if they are, the first template's
    ``slot_follows_space()`` decides the mode for all of them.
    """
    if not templates:
        raise UserError("label words: at least one template is needed")
    if len(texts) != len(gold):
        raise ValueError(f"{len(texts)} texts but {len(gold)} gold labels")
    average: np.ndarray | None = None
    for number, template in enumerate(templates):
        prompts = scorer.prepare(template, texts).prompts
        for start, chunk in scorer.chunks(prompts):
            block = scorer.slot_log_probs(chunk)
            if average is None:
                average = np.empty((len(prompts), block.shape[1]), dtype=np.float32)
            rows = average[start : start + len(chunk)]
            if number == 0:
                rows[...] = block
            else:
                np.logaddexp(rows, block, out=rows)
    if average is None:
        raise UserError("label words: no training texts to choose words from")
    average -= np.float32(np.log(len(templates)))
    allowed = whole_word_tokens(scorer.backend.tokenizer, leading_space=templates[0].slot_follows_space())
    return rank_label_words(average, np.asarray(gold), labels, allowed,
                            words_per_class=words_per_class, shortlist=shortlist, exclude=exclude)
