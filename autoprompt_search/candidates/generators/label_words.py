"""Label words read from the model's own slot distribution on the train examples (LM-BFF's
shortlist, then PETAL's likelihood ratio or the held-out AUC); see
:mod:`autoprompt_search.candidates.label_words`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from autoprompt_search.candidates.generators.base import Generated, GenerationContext, WordGenerator, dropped, same_slot_spacing
from autoprompt_search.space_checks import Invalid, need_bool, need_choice, need_int

LABEL_WORD_SCORING = ("mean_log_prob", "likelihood_ratio", "held_out_auc")


@dataclass(frozen=True)
class LabelWordsConfig:
    """Proposes label words from the model's slot distribution over the train examples."""

    enabled: bool = True
    words_per_class: int = 12
    # mean_log_prob: LM-BFF's shortlist; then the order: likelihood_ratio (PETAL) or held_out_auc
    scoring: tuple[str, ...] = ("mean_log_prob", "held_out_auc")
    templates: int = 3  # how many of the best templates the words are proposed with
    shortlist: int = 400  # words per class shortlisted by mean_log_prob (with held_out_auc; 50 with likelihood_ratio)
    drop_input_independent: bool = True  # drop words no likelier under the class's inputs than under content-free ones

    def __post_init__(self) -> None:
        key = "generators.label_words"
        need_bool(f"{key}.enabled", self.enabled)
        need_int(f"{key}.words_per_class", self.words_per_class, 1)
        need_int(f"{key}.templates", self.templates, 1)
        need_int(f"{key}.shortlist", self.shortlist, 1)
        need_bool(f"{key}.drop_input_independent", self.drop_input_independent)
        if not self.scoring:
            raise Invalid(f"{key}.scoring", f"must list at least one of {', '.join(LABEL_WORD_SCORING)}")
        for i, name in enumerate(self.scoring):
            need_choice(f"{key}.scoring[{i}]", name, LABEL_WORD_SCORING)
        if {"likelihood_ratio", "held_out_auc"} <= set(self.scoring):
            raise Invalid(f"{key}.scoring", "lists likelihood_ratio and held_out_auc, two orders: choose one")

    @property
    def ordering(self) -> str:
        return "held_out_auc" if "held_out_auc" in self.scoring else "likelihood_ratio"

    @property
    def shortlist_size(self) -> int:
        """Words per class shortlisted by mean log-probability before the ordering (none without mean_log_prob)."""
        if "mean_log_prob" not in self.scoring:
            return 10_000
        if len(self.scoring) == 1:  # mean log-probability alone decides
            return self.words_per_class
        return self.shortlist if self.ordering == "held_out_auc" else 50


class LabelWordsGenerator(WordGenerator[LabelWordsConfig]):
    name = "label_words"
    config = LabelWordsConfig

    def propose(self, config: LabelWordsConfig, context: GenerationContext) -> Generated:
        from autoprompt_search.candidates.label_words import generate_label_words

        labels, texts = context.labels, context.texts
        chosen = same_slot_spacing(context.ranked, config.templates)
        shortlist = config.shortlist_size
        began = time.perf_counter()
        generated = generate_label_words(context.scorer, chosen, texts, context.gold, labels,
                                         words_per_class=self.proposals_per_class(config.words_per_class), shortlist=shortlist,
                                         exclude=context.pooled_words, ordering=config.ordering,
                                         drop_input_independent=config.drop_input_independent, seed=context.seed)
        kept, fragments = self.pool_whole_words(context, chosen[0], {label: [c.word for c in generated.get(label, [])] for label in labels},
                                                config.words_per_class)
        context.log("label words: " + "; ".join(f"{label}: {', '.join(kept[label][:8])}" for label in labels) + dropped(fragments))
        return Generated(
            {
                "templates": [t.source for t in chosen],
                "seconds": time.perf_counter() - began,
                "shortlist": shortlist,
                "ordering": config.ordering,
                "drop_input_independent": config.drop_input_independent,
                "words": {
                    label: [
                        {
                            "word": w.word,
                            "token_id": w.token_id,
                            "mean_log_prob": w.mean_log_prob,
                            "log_likelihood_ratio": w.log_likelihood_ratio,
                            "held_out_auc": w.held_out_auc,
                            "content_free_lift": w.content_free_lift,
                        }
                        for w in generated.get(label, [])
                        if w.word in kept[label]
                    ]
                    for label in labels
                },
                "fragments": fragments,
            }
        )
