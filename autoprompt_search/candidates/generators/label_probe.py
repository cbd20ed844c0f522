"""Label words aligned with a linear probe of the slot's hidden state (AutoPrompt's label search);
see :mod:`autoprompt_search.candidates.label_probe`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from autoprompt_search.candidates.generators.base import Generated, GenerationContext, WordGenerator, dropped, same_slot_spacing
from autoprompt_search.space_checks import Invalid, need_bool, need_int


@dataclass(frozen=True)
class LabelProbeConfig:
    """Proposes label words aligned with a linear probe of the slot's hidden state (AutoPrompt)."""

    enabled: bool = False
    words_per_class: int = 6
    templates: int = 1  # a probe is fitted on each of the best templates
    shortlist: int = 1000  # only the tokens likeliest at the slot on train compete

    def __post_init__(self) -> None:
        key = "generators.label_probe"
        need_bool(f"{key}.enabled", self.enabled)
        for name in ("words_per_class", "templates", "shortlist"):
            need_int(f"{key}.{name}", getattr(self, name), 1)


class LabelProbeGenerator(WordGenerator[LabelProbeConfig]):
    name = "label_probe"
    config = LabelProbeConfig

    def check_space(self, config: LabelProbeConfig, space: Any) -> None:
        if config.enabled and space.few_shot.k < 2:
            raise Invalid(
                "generators.label_probe", f"needs few_shot.k of at least 2 (the probe is cross-validated), got {space.few_shot.k}"
            )

    def propose(self, config: LabelProbeConfig, context: GenerationContext) -> Generated:
        from autoprompt_search.candidates.label_probe import probe_label_words

        scorer, labels, texts = context.scorer, context.labels, context.texts
        began, passes = time.perf_counter(), scorer.backend.forward_passes
        record: dict[str, Any] = {"probes": []}
        for template in same_slot_spacing(context.ranked, config.templates):
            result = probe_label_words(
                scorer,
                template,
                texts,
                context.gold,
                labels,
                words_per_class=self.proposals_per_class(config.words_per_class),
                exclude=sorted(context.pooled_words),
                shortlist=config.shortlist,
            )
            proposed = {label: [w.word for w in words] for label, words in result.words.items()}
            kept, fragments = self.pool_whole_words(context, template, proposed, config.words_per_class)
            record["probes"].append(
                {
                    "template": template.source,
                    "C": result.regularization,
                    "cv_accuracy": result.cv_accuracy,
                    "words": {
                        label: [
                            {"word": w.word, "token_id": w.token_id, "specificity": w.specificity} for w in words if w.word in kept[label]
                        ]
                        for label, words in result.words.items()
                    },
                    "fragments": fragments,
                }
            )
            context.log(
                f"probe words ({template.source!r}, probe CV accuracy {result.cv_accuracy:.2f}): "
                + "; ".join(f"{label}: {', '.join(words[:8])}" for label, words in kept.items())
                + dropped(fragments)
            )
        record.update(seconds=time.perf_counter() - began, forward_passes=scorer.backend.forward_passes - passes)
        return Generated(record)
