"""Label-word candidates read from the model's own slot distribution.

Two classic recipes are combined:

- LM-BFF (Gao et al., 2021): for each class, shortlist the vocabulary by the mean
  log-probability at the slot over the class's training examples;
- PETAL (Schick et al., 2020): order words by a likelihood ratio, how much more likely the
  word is under the class's examples than under the other classes' examples.

Only tokens that are a whole real word at the slot are considered (:func:`vocabulary.whole_word_tokens`),
so every candidate is a one-token verbalizer word whose score needs no extra forward pass.

With 16 examples per class both recipes mostly pick words the slot favours whatever the input
(``The``, ``for``, ``about``): a log-mean-exp ratio is decided by the one or two examples where a
word is likeliest. The ``held_out_auc`` ordering guards against both, with the model's own
measures and no stop-word list:

- *input dependence*: a word at least as likely under content-free inputs (``N/A``, the empty text)
  as under the class's examples is dropped: the slot prefers it without any input;
- *held-out separation*: the train examples are split into stratified folds; on each fold the
  shortlist is chosen from the other folds, and each shortlisted word is scored by how well its
  log-probability separates the class from the rest *on the fold it was not chosen on* (one-vs-rest
  ROC AUC, a rank statistic, so one outlying example cannot carry it). A word must be shortlisted
  from every fold's complement; its score is its mean held-out AUC, and words at or below chance
  (0.5) are dropped. LM-BFF re-ranks its pairs on held-out
  zero-shot accuracy for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.special import logsumexp
from scipy.stats import rankdata

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
    held_out_auc: float | None = None  # mean one-vs-rest AUC on the folds the word was not shortlisted on
    content_free_lift: float | None = None  # log mean_{x in c} p - log mean over content-free inputs of p


ORDERINGS = ("likelihood_ratio", "held_out_auc")
HELD_OUT_FOLDS = 2


def rank_label_words(
    log_probs: np.ndarray,
    gold: np.ndarray,
    labels: Sequence[str],
    allowed: Mapping[int, str],
    *,
    words_per_class: int,
    shortlist: int = 100,
    exclude: Iterable[str] = (),
    ordering: str = "likelihood_ratio",
    content_free: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, list[WordCandidate]]:
    """Rank candidate words per class from a ``[n, vocab]`` slot log-probability matrix.

    ``gold`` holds label indices into ``labels``; ``allowed`` maps token id -> word (see
    :func:`whole_word_tokens`). Per class: the ``shortlist`` allowed tokens with the highest
    mean log-probability over the class's examples, ordered by ``ordering``: the log-likelihood
    ratio over all examples, or the held-out AUC (see the module's docstring; the folds are drawn
    with ``seed``). ``content_free``, a ``[vocab]`` log-probability at the slot under content-free
    inputs, drops the words no likelier under the class's examples than without input. First
    ``words_per_class`` kept. A word (case-insensitively) goes to one class only, the one where it
    scores highest (ties: the earlier class), and only its best casing is kept; words in
    ``exclude`` (case-insensitive) are dropped before shortlisting. Ties go to the lower token id.
    """
    log_probs = np.asarray(log_probs)
    gold = np.asarray(gold, dtype=np.int64)
    if log_probs.ndim != 2 or len(log_probs) != len(gold):
        raise ValueError(f"log_probs must be [n, vocab] with n = len(gold) = {len(gold)}; got shape {log_probs.shape}")
    if words_per_class < 1 or shortlist < 1:
        raise ValueError("words_per_class and shortlist must be at least 1")
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
    if len(labels) < 2:
        raise UserError(f"label words: need at least 2 labels, got {len(labels)}")
    if len(gold) and (gold.min() < 0 or gold.max() >= len(labels)):
        raise ValueError(f"gold label indices must lie in [0, {len(labels)})")
    least = HELD_OUT_FOLDS if ordering == "held_out_auc" else 1
    for index, label in enumerate(labels):
        if (gold == index).sum() < least:
            raise UserError(f"label words: label {label!r} has {int((gold == index).sum())} training examples; "
                            f"choosing its words needs at least {least}")

    excluded = {word.strip().lower() for word in exclude}
    ids = np.array(sorted(i for i, w in allowed.items() if 0 <= i < log_probs.shape[1] and w.lower() not in excluded), dtype=np.int64)
    if not ids.size:
        return {label: [] for label in labels}
    selected = log_probs[:, ids].astype(np.float64)
    floor = None if content_free is None else np.asarray(content_free, dtype=np.float64)[ids]

    def shortlisted(rows: np.ndarray, index: int) -> np.ndarray:
        """Positions (into ``ids``) of the class's shortlist chosen on ``rows`` only."""
        inside = rows[gold[rows] == index]
        eligible = np.arange(len(ids))
        if floor is not None:
            eligible = eligible[_log_mean_exp(selected[inside][:, eligible]) > floor[eligible]]
        mean = selected[inside][:, eligible].mean(axis=0)
        return eligible[np.lexsort((ids[eligible], -mean))[:shortlist]]  # lexsort sorts by its last key first

    everyone = np.arange(len(gold))
    held_out = _held_out_auc(selected, gold, len(labels), shortlisted, seed) if ordering == "held_out_auc" else None
    ranked: list[list[tuple[float, WordCandidate]]] = []
    for index, label in enumerate(labels):
        inside = gold == index
        mean = selected[inside].mean(axis=0)
        ratio = _log_mean_exp(selected[inside]) - _log_mean_exp(selected[~inside])
        lift = None if floor is None else _log_mean_exp(selected[inside]) - floor
        if held_out is None:
            positions, scores = shortlisted(everyone, index), ratio
        else:
            scores = held_out[index]
            positions = np.flatnonzero(scores > 0.5)
        order = positions[np.lexsort((ids[positions], -scores[positions]))]
        ranked.append([(float(scores[j]), WordCandidate(
            allowed[int(ids[j])], int(ids[j]), label, float(mean[j]), float(ratio[j]),
            None if held_out is None else float(scores[j]), None if lift is None else float(lift[j]))) for j in order])

    # Each lowercased word goes to its best (class, token): highest score, then earlier class, then lower id.
    owner: dict[str, tuple[float, int, int]] = {}
    for index, candidates in enumerate(ranked):
        for score, c in candidates:
            key = (score, -index, -c.token_id)
            if c.word.lower() not in owner or key > owner[c.word.lower()]:
                owner[c.word.lower()] = key
    result: dict[str, list[WordCandidate]] = {}
    for index, (label, candidates) in enumerate(zip(labels, ranked)):
        kept = [c for score, c in candidates if owner[c.word.lower()] == (score, -index, -c.token_id)]
        result[label] = kept[:words_per_class]
    return result


def _held_out_auc(selected: np.ndarray, gold: np.ndarray, classes: int, shortlisted, seed: int) -> np.ndarray:
    """``[classes, words]``: each word's mean one-vs-rest AUC over the folds, each fold scoring the
    word as shortlisted on the other folds; NaN unless every fold's complement shortlisted it (a
    word that one half of the examples does not even shortlist is a chance pick)."""
    folds = np.empty(len(gold), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for index in range(classes):  # stratified: each class dealt round-robin over the folds, in a seeded order
        members = rng.permutation(np.flatnonzero(gold == index))
        folds[members] = np.arange(len(members)) % HELD_OUT_FOLDS
    total = np.zeros((classes, selected.shape[1]))
    count = np.zeros((classes, selected.shape[1]))
    for fold in range(HELD_OUT_FOLDS):
        chosen_on, scored_on = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        ranks = rankdata(selected[scored_on], axis=0)  # average ranks: ties count a half
        for index in range(classes):
            positions = shortlisted(chosen_on, index)
            inside = gold[scored_on] == index
            n_in, n_out = int(inside.sum()), int((~inside).sum())
            auc = (ranks[inside][:, positions].sum(axis=0) - n_in * (n_in + 1) / 2) / (n_in * n_out)
            total[index, positions] += auc
            count[index, positions] += 1
    return np.where(count == HELD_OUT_FOLDS, total / HELD_OUT_FOLDS, np.nan)


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
    ordering: str = "likelihood_ratio",
    drop_input_independent: bool = False,
    seed: int = 0,
) -> dict[str, list[WordCandidate]]:
    """Candidate label words from the slot distributions of ``templates`` on the train ``texts``.

    Distributions are read through the scorer's chunks and cache (at most one computation per
    template, none when cached) and averaged over templates as the log of the mean probability;
    only the running average, ``[n, vocab]`` float32, is kept. ``drop_input_independent`` also
    reads each template's slot under the content-free inputs calibration uses (a few prompts per
    template). Then :func:`rank_label_words`.

    The whole-word filter needs one tokenization mode: templates whose slot follows a space
    and templates whose slot does not should not be mixed; if they are, the first template's
    ``slot_follows_space()`` decides the mode for all of them.
    """
    if not templates:
        raise UserError("label words: at least one template is needed")
    if len(texts) != len(gold):
        raise ValueError(f"{len(texts)} texts but {len(gold)} gold labels")
    if not texts:
        raise UserError("label words: no training texts to choose words from")
    average = _mixture(scorer, [(template, texts) for template in templates])
    content_free = None
    if drop_input_independent:
        rows = _mixture(scorer, [(template, scorer.content_free_texts(template)) for template in templates])
        content_free = _log_mean_exp(rows.astype(np.float64))
    allowed = whole_word_tokens(scorer.backend.tokenizer, leading_space=templates[0].slot_follows_space())
    return rank_label_words(average, np.asarray(gold), labels, allowed, words_per_class=words_per_class, shortlist=shortlist,
                            exclude=exclude, ordering=ordering, content_free=content_free, seed=seed)


def _mixture(scorer, renderings: Sequence[tuple[Template, Sequence[Mapping[str, str]]]]) -> np.ndarray:
    """``[n, vocab]`` float32: per example, the log of the slot probability averaged over the
    templates (each rendered on its own texts, all of the same length)."""
    average: np.ndarray | None = None
    with scorer.progress_bar(sum(len(texts) for _, texts in renderings), "label words") as bar:
        for number, (template, texts) in enumerate(renderings):
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
                bar.update(len(chunk))
    average -= np.float32(np.log(len(renderings)))
    return average
