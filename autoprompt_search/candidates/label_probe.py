"""Label tokens from a linear probe, in the manner of AutoPrompt's label search.

A logistic regression (scikit-learn, L2, its strength chosen by stratified cross-validated log-loss) is
fitted from the slot's hidden state to the classes on the train examples. The hidden state is the
vector the output embedding projects (``logits = h . e_token``), so a probe weight vector ``w_c``
lives in the same space as the output embeddings, and ``w_c . e_token`` says how strongly the
token points the way class ``c`` does. Each token is scored for a class by that alignment minus
its best alignment with another class, and the top whole words per class go to the verbalizer
pool. Alignment alone favours tokens with long embeddings that never fit the slot (code words,
names), so only the ``shortlist`` tokens the model finds likeliest at the slot on the train texts
(LM-BFF's shortlist, read from the cached slot distributions) compete. One forward pass over
train per template, for the hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from autoprompt_search.candidates.vocabulary import whole_word_tokens
from autoprompt_search.errors import UserError
from autoprompt_search.templates import Template


@dataclass(frozen=True)
class ProbeWord:
    word: str
    token_id: int
    label: str
    specificity: float  # w_label . e - max over other labels of w_other . e


@dataclass(frozen=True)
class ProbeResult:
    words: dict[str, list[ProbeWord]]
    regularization: float  # the chosen inverse strength C
    cv_accuracy: float  # cross-validated accuracy of the probe at that C


def probe_label_words(scorer, template: Template, texts: Sequence[Mapping[str, str]], gold: Sequence[int],
                      labels: Sequence[str], *, words_per_class: int, exclude: Sequence[str] = (), shortlist: int = 1000,
                      seed: int = 0) -> ProbeResult:
    """The top ``words_per_class`` probe-aligned whole words per label (a word goes to one label)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    gold_array = np.asarray(gold, dtype=np.int64)
    smallest = min(int((gold_array == c).sum()) for c in range(len(labels)))
    if smallest < 2:
        raise UserError(f"label probe: every label needs at least 2 train examples (one has {smallest})")
    backend = scorer.backend
    prompts = scorer.render(template, texts)
    features = backend.slot_hidden_states(prompts).double().numpy()
    mean_log_probs = np.concatenate([scorer.slot_log_probs(chunk) for _, chunk in scorer.chunks(prompts)]).mean(axis=0)
    folds = StratifiedKFold(n_splits=min(5, smallest), shuffle=True, random_state=seed)
    probe = LogisticRegressionCV(Cs=np.logspace(-4, 2, 13).tolist(), cv=folds, max_iter=5000, l1_ratios=(0.0,),
                                 scoring="neg_log_loss", use_legacy_attributes=False).fit(features, gold_array)
    best_c = float(probe.C_)
    cv_accuracy = float(cross_val_score(LogisticRegression(C=best_c, max_iter=5000), features, gold_array, cv=folds).mean())
    weights = probe.coef_ if len(labels) > 2 else np.vstack([-probe.coef_[0] / 2, probe.coef_[0] / 2])
    output = backend.model.get_output_embeddings().weight.detach().double().cpu().numpy()
    alignment = torch.from_numpy(weights @ output.T)  # [classes, vocab]

    allowed = whole_word_tokens(backend.tokenizer, leading_space=template.slot_follows_space())
    excluded = {word.strip().lower() for word in exclude}
    likely = set(np.argsort(-mean_log_probs, kind="stable")[:shortlist].tolist())
    ids = torch.tensor(sorted(i for i, w in allowed.items() if i in likely and w.lower() not in excluded), dtype=torch.long)
    words: dict[str, list[ProbeWord]] = {}
    taken: set[str] = set()
    for c, label in enumerate(labels):
        others = torch.cat([alignment[:c], alignment[c + 1 :]])
        specificity = alignment[c, ids] - others[:, ids].max(dim=0).values
        order = torch.argsort(-specificity, stable=True)
        chosen: list[ProbeWord] = []
        for position in order.tolist():
            if len(chosen) == words_per_class or specificity[position] <= 0:
                break
            token = int(ids[position])
            word = allowed[token]
            if word.lower() not in taken:
                taken.add(word.lower())
                chosen.append(ProbeWord(word, token, label, float(specificity[position])))
        words[label] = chosen
    return ProbeResult(words, best_c, cv_accuracy)
