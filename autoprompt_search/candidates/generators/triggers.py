"""Templates with gradient-searched trigger tokens (AutoPrompt with HotFlip, optionally fluent);
see :mod:`autoprompt_search.candidates.triggers`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from autoprompt_search.candidates.generators.base import Generated, GenerationContext, Generator
from autoprompt_search.errors import UserError
from autoprompt_search.space_checks import Invalid, need_bool, need_choice, need_int
from autoprompt_search.templates import Template

if TYPE_CHECKING:
    from autoprompt_search.scoring import PromptScorer
    from autoprompt_search.verbalizers import Verbalizer

TRIGGER_POSITIONS = ("after", "before", "slot")  # right after the text, right before it, right before {mask}
TRIGGER_FILTERS = ("non_alphabetic", "subwords", "label_words")
TRIGGER_LOSSES = ("cross_entropy", "label_likelihood")


@dataclass(frozen=True)
class TriggersConfig:
    """Gradient-guided trigger search (AutoPrompt with HotFlip); see :mod:`candidates.triggers`."""

    enabled: bool = False
    templates: tuple[Template, ...] = ()  # templates with [T] slots; none: insert them into the best seeds
    count: int = 3
    position: str = "after"
    base_templates: int = 1
    candidates: int = 50
    steps: int = 20
    restarts: int = 2
    batch_size: int = 16
    patience: int | None = 8
    init: str = "the"
    filters: tuple[str, ...] = TRIGGER_FILTERS
    loss: str = "cross_entropy"
    fluency: int | None = None  # causal models: HotFlip picks among the N tokens the model finds likeliest there

    def __post_init__(self) -> None:
        key = "generators.triggers"
        need_bool(f"{key}.enabled", self.enabled)
        for name in ("count", "base_templates", "candidates", "steps", "restarts", "batch_size"):
            need_int(f"{key}.{name}", getattr(self, name), 1)
        for name in ("patience", "fluency"):
            if getattr(self, name) is not None:
                need_int(f"{key}.{name}", getattr(self, name), 1)
        need_choice(f"{key}.position", self.position, TRIGGER_POSITIONS)
        need_choice(f"{key}.loss", self.loss, TRIGGER_LOSSES)
        for i, name in enumerate(self.filters):
            need_choice(f"{key}.filters[{i}]", name, TRIGGER_FILTERS)
        if not isinstance(self.init, str) or not self.init.strip():
            raise Invalid(f"{key}.init", f"must be a word, got {self.init!r}")
        for i, template in enumerate(self.templates):
            if not template.n_triggers:
                raise Invalid(f"{key}.templates[{i}]", f"{template.source!r} has no trigger slot [T]")


class TriggersGenerator(Generator[TriggersConfig]):
    name = "triggers"
    config = TriggersConfig

    def check_space(self, config: TriggersConfig, space: Any) -> None:
        """Causal models score the slot as the continuation, so nothing may follow ``{mask}``."""
        if space.model_kind != "causal":
            return
        for i, template in enumerate(config.templates):
            if template.continues_after_slot():
                raise Invalid(f"generators.triggers.templates[{i}]", f"continues after the slot {{mask}} in {template.source!r}; "
                                                                    f"the model {space.model} is causal, so {{mask}} must come last")

    def check_model(self, config: TriggersConfig, scorer: PromptScorer, source: str) -> None:
        if not config.enabled:
            return
        _single_token(scorer.backend.tokenizer, config.init, True)
        if config.fluency is not None and scorer.backend.kind != "causal":
            raise UserError(f"{source}: generators.triggers.fluency reads a causal model's next-token distribution; "
                            f"this model is {scorer.backend.kind}: remove the key")

    def propose(self, config: TriggersConfig, context: GenerationContext) -> Generated:
        """Search triggers for each base template; proposes the written templates, each with the
        verbalizer its triggers were searched for."""
        from tqdm import tqdm

        from autoprompt_search.candidates.triggers import TriggerObjective, insert_triggers, search_triggers
        from autoprompt_search.candidates.vocabulary import allowed_trigger_tokens

        scorer, ranked, labels = context.scorer, context.ranked, context.labels
        train, dev = context.train, context.dev
        backend = scorer.backend
        # (template with trigger slots, its verbalizer, the template the slots went into: None when written with them)
        if config.templates:
            bases = [(template, ranked[0].verbalizer, None) for template in config.templates]
        else:
            bases = [(Template.parse(insert_triggers(r.template, config.count, config.position)), r.verbalizer, r.template.source)
                     for r in ranked[: config.base_templates]]
        vocabulary = backend.model.get_input_embeddings().weight.shape[0]
        label_words = context.pooled_words
        train_texts = [e.fields for e in train.examples]
        dev_texts = [e.fields for e in dev.examples]
        train_gold = [labels.index(e.label) for e in train.examples]
        dev_gold = [labels.index(e.label) for e in dev.examples]
        found: list[tuple[Template, Verbalizer]] = []
        record: dict[str, Any] = {"settings": {name: getattr(config, name) for name in
                                               ("count", "position", "candidates", "steps", "restarts", "batch_size", "patience",
                                                "init", "filters", "loss", "fluency")}, "searches": []}
        began = time.perf_counter()
        for number, (template, verbalizer, base) in enumerate(bases):
            token_ids = [[word[0] for word in words] for words in scorer.word_ids(template, verbalizer)]
            objective = TriggerObjective(backend, template, token_ids, loss=config.loss)
            spacing = [bool(template.whitespace_before(i)) for i, s in enumerate(template.segments) if s.kind == "trigger"]
            masks = {space: allowed_trigger_tokens(backend.tokenizer, vocab_size=vocabulary, leading_space=space,
                                                   filters=config.filters, label_words=label_words) for space in set(spacing)}
            allowed = [masks[space] for space in spacing]
            if not all(bool(mask.any()) for mask in allowed):
                raise UserError(f"generators.triggers: no token of this model's vocabulary passes the filters "
                                f"{', '.join(config.filters)} for the trigger slots of {template.source!r}")
            init = [_single_token(backend.tokenizer, config.init, space) for space in spacing]
            bar = tqdm(total=config.steps * config.restarts, desc=f"triggers {number + 1}/{len(bases)}", unit="step", leave=False)

            def on_step(step: Mapping[str, float]) -> None:
                bar.set_postfix(loss=f"{step['train_loss']:.3f}", dev=f"{step['dev_accuracy']:.3f}")
                bar.update(1)

            searched_at = time.perf_counter()
            runs = search_triggers(objective, train_texts, train_gold, dev_texts, dev_gold, init_ids=init, allowed=allowed,
                                   steps=config.steps, candidates=config.candidates, restarts=config.restarts,
                                   batch_size=config.batch_size, patience=config.patience, seed=context.seed + number,
                                   fluency=config.fluency, on_step=on_step)
            bar.close()
            for run in runs:
                if run.template is not None and run.changed:  # a restart whose best is where it started hands over nothing
                    found.append((Template.parse(run.template, fields=dev.fields), verbalizer))
            record["searches"].append({
                "template": template.source, "base": base, "verbalizer": verbalizer.to_dict(),
                "seconds": time.perf_counter() - searched_at, "forward_passes": objective.forward_passes,
                "backward_passes": objective.counter.backward, "rows": objective.counter.rows,
                "runs": [{"restart": r.restart, "tokens": r.tokens, "token_ids": r.trigger_ids, "template": r.template,
                          "dev_loss": r.dev_loss, "dev_accuracy": r.dev_accuracy, "steps": r.steps, "improvements": r.improvements,
                          "changed": r.changed, "history": r.history} for r in runs],
            })
            context.log(f"triggers for {template.source!r}: " + "; ".join(
                f"{r.template or '(dropped: ' + ' '.join(r.tokens) + ' does not survive as text)'} (dev {r.dev_accuracy:.2f})"
                for r in runs))
        record["seconds"] = time.perf_counter() - began
        return Generated(record, found)


def _single_token(tokenizer, word: str, leading_space: bool) -> int:
    from autoprompt_search.tokenization import encode_in_context, encode_plain

    ids = encode_in_context(tokenizer, [" " + word.strip()])[0] if leading_space else encode_plain(tokenizer, [word.strip()])[0]
    if len(ids) != 1:
        raise UserError(
            f"generators.triggers.init: {word!r} is {len(ids)} tokens for this model's tokenizer; give a word that is one token"
        )
    return ids[0]
