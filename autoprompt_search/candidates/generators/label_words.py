"""Label words read from the model's own slot distribution on the train examples (LM-BFF's
shortlist, PETAL's likelihood ratio); see :mod:`autoprompt_search.candidates.label_words`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from autoprompt_search.candidates.generators.base import Generated, GenerationContext, WordGenerator, dropped, same_slot_spacing
from autoprompt_search.space_checks import Invalid, need_bool, need_choice, need_int

LABEL_WORD_SCORING = ("mean_log_prob", "likelihood_ratio")


@dataclass(frozen=True)
class LabelWordsConfig:
    """Proposes label words from the model's slot distribution over the train examples."""

    enabled: bool = True
    words_per_class: int = 12
    scoring: tuple[str, ...] = LABEL_WORD_SCORING
    templates: int = 3  # how many of the best templates the words are proposed with

    def __post_init__(self) -> None:
        key = "generators.label_words"
        need_bool(f"{key}.enabled", self.enabled)
        need_int(f"{key}.words_per_class", self.words_per_class, 1)
        need_int(f"{key}.templates", self.templates, 1)
        if not self.scoring:
            raise Invalid(f"{key}.scoring", f"must list at least one of {', '.join(LABEL_WORD_SCORING)}")
        for i, name in enumerate(self.scoring):
            need_choice(f"{key}.scoring[{i}]", name, LABEL_WORD_SCORING)


class LabelWordsGenerator(WordGenerator[LabelWordsConfig]):
    name = "label_words"
    config = LabelWordsConfig

    def propose(self, config: LabelWordsConfig, context: GenerationContext) -> Generated:
        from autoprompt_search.candidates.label_words import generate_label_words

        labels, texts = context.labels, context.texts
        chosen = same_slot_spacing(context.ranked, config.templates)
        shortlist = {("mean_log_prob",): config.words_per_class, ("likelihood_ratio",): 10_000}.get(tuple(config.scoring), 50)
        began = time.perf_counter()
        generated = generate_label_words(context.scorer, chosen, texts, context.gold, labels,
                                         words_per_class=self.proposals_per_class(config.words_per_class), shortlist=shortlist,
                                         exclude=context.pooled_words)
        kept, fragments = self.pool_whole_words(context, chosen[0], {label: [c.word for c in generated.get(label, [])] for label in labels},
                                                config.words_per_class)
        context.log("label words: " + "; ".join(f"{label}: {', '.join(kept[label][:8])}" for label in labels) + dropped(fragments))
        return Generated(
            {
                "templates": [t.source for t in chosen],
                "seconds": time.perf_counter() - began,
                "shortlist": shortlist,
                "words": {
                    label: [
                        {
                            "word": w.word,
                            "token_id": w.token_id,
                            "mean_log_prob": w.mean_log_prob,
                            "log_likelihood_ratio": w.log_likelihood_ratio,
                        }
                        for w in generated.get(label, [])
                        if w.word in kept[label]
                    ]
                    for label in labels
                },
                "fragments": fragments,
            }
        )
