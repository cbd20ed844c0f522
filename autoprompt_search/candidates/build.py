"""Generate and freeze every candidate of a search before its first trial.

In order: the template pool (seeds, block combinations); the seed verbalizers' words; then each
registered generator that the space turns on (:mod:`candidates.generators`), in registry order:
words read from the model's slot distribution, words aligned with a linear probe of the slot,
templates with gradient-searched triggers, templates with demonstrations. Each starts from the
seed templates that do best on train and records what it did under ``Pools.origins``, which the
run's manifest keeps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from autoprompt_search.candidates.generators import REGISTRY
from autoprompt_search.candidates.generators.base import GenerationContext, RankedSeed
from autoprompt_search.candidates.pools import Pools
from autoprompt_search.candidates.template_pool import build_template_pool, normalize_template
from autoprompt_search.data import Dataset
from autoprompt_search.errors import UserError
from autoprompt_search.logs import Log
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer


def build_pools(space, scorer: PromptScorer, train: Dataset, dev: Dataset, log: Log = print) -> Pools:
    """The frozen pools of a search: templates, label-word options per class, calibrations, the
    manual baselines (seed templates x seed verbalizers x calibrations) and the generators' proposals."""
    labels = tuple(train.labels)
    for i, template in enumerate(space.templates.seeds):
        if template.n_triggers:
            raise UserError(f"{space.origin}: templates.seeds[{i}]: a seed cannot hold trigger slots [T]; "
                            "put the template under generators.triggers.templates")
    templates = build_template_pool(space, model_kind=scorer.backend.kind)
    n_seeds = len({normalize_template(t.source) for t in space.templates.seeds})
    seeds = [Verbalizer.parse(verbalizer.to_dict(), labels) for verbalizer in space.verbalizers.seeds]
    for template in templates[:n_seeds]:
        for i, verbalizer in enumerate(seeds):  # a seed word the tokenizer cannot spell fails here, early
            scorer.word_ids(template, verbalizer, origin=f"{space.origin}: verbalizers.seeds[{i}]")
    options = _seed_options(space, seeds, labels)
    enabled = {name: space.generators.configs[name] for name in space.generators.enabled}
    for name, config in enabled.items():  # a bad setting fails now, not after the other generators
        REGISTRY[name].check_model(config, scorer, space.origin)
    origins: dict[str, Any] = {"templates": {"seeds": n_seeds, "combinations": len(templates) - n_seeds}}
    train_texts = [example.fields for example in train.examples]
    train_gold = [labels.index(example.label) for example in train.examples]
    ranked: list[RankedSeed] = []
    if enabled:  # every generator starts from the seed templates ranked on train
        ranked = rank_seed_templates(scorer, templates[:n_seeds] or templates, seeds, train_texts, train_gold)
    context = GenerationContext(scorer, train, dev, ranked, options, seed_of(train), log)
    proposals: list[tuple[Template, Verbalizer]] = []
    held_out: set[int] = set()
    for name, config in enabled.items():
        generated = REGISTRY[name].propose(config, context)
        origins[name] = generated.record
        proposals += generated.proposals
        held_out.update(generated.held_out_train_rows)
    _append_new(templates, [template for template, _ in proposals])
    for c, label in enumerate(labels):
        if not options[c]:
            raise UserError(f"{space.origin}: the word pool of label {label!r} is empty after filtering")
    pools = Pools(labels, tuple(templates), tuple(tuple(o) for o in options), tuple(space.calibration),
                  origins=origins, held_out_train_rows=tuple(sorted(held_out)))
    manual = tuple(pools.params_for(template, verbalizer, calibration)
                   for template in templates[:n_seeds] for verbalizer in seeds for calibration in space.calibration)
    # Each generated template is tried first, under every calibration, with the words it was made
    # for (the words a trigger search optimised, the words a demonstration template shows).
    pooled = {normalize_template(t.source): t for t in pools.templates}  # the pool holds one of each reading
    proposed: list[dict[str, Any]] = []
    for template, verbalizer in proposals:
        pooled_template = pooled[normalize_template(template.source)]  # a template that reads as one already pooled is that one
        for calibration in space.calibration:
            params = pools.params_for(pooled_template, verbalizer, calibration)
            if params not in proposed:
                proposed.append(params)
    return replace(pools, manual=manual, proposals=tuple(proposed))


def _append_new(templates: list[Template], found: Sequence[Template]) -> None:
    known = {normalize_template(t.source) for t in templates}
    for template in found:
        if normalize_template(template.source) not in known:
            known.add(normalize_template(template.source))
            templates.append(template)


def next_round(space, scorer: PromptScorer, train: Dataset, pools: Pools, board: Sequence, log: Log = print) -> Pools:
    """One more generation round: the word generators run again from the templates the study ranks
    best so far (``board``, best first, each with its best verbalizer), instead of the seed
    ranking, and their new words extend the pools under the next round's parameter names."""
    labels = pools.labels
    ranked: list[RankedSeed] = []
    for result in board:
        if all(r.template != result.template for r in ranked):
            ranked.append(RankedSeed(result.template,
                                     Verbalizer.parse(result.verbalizer, labels), result.accuracy, result.mean_margin))
    options = [list(words) for words in pools.words]
    record: dict[str, Any] = {"round": pools.rounds, "completed_trials": len(board), "templates": [r.template.source for r in ranked[:3]]}
    log(f"generation round {pools.rounds + 1}/{space.generators.rounds.count}: words from the study's best templates")
    context = GenerationContext(scorer, train, train, ranked, options, seed_of(train), log)
    for name in space.generators.enabled:
        if REGISTRY[name].in_rounds:
            record[name] = REGISTRY[name].propose(space.generators.configs[name], context).record
    record["new_options"] = [len(options[c]) - len(pools.words[c]) for c in range(len(labels))]
    return pools.with_round(options, record)


def seed_of(train: Dataset) -> int:
    """A generator seed that depends on the few-shot sample (so on the run's seed), not on the clock."""
    return int(train.content_hash()[:8], 16)


def _seed_options(space, seeds: Sequence[Verbalizer], labels: tuple[str, ...]) -> list[list[tuple[str, ...]]]:
    options: list[list[tuple[str, ...]]] = [[] for _ in labels]
    for verbalizer in seeds:
        for c, words in enumerate(verbalizer.words):
            if tuple(words) not in options[c]:
                options[c].append(tuple(words))
    owner: dict[str, str] = {}
    for c, label in enumerate(labels):
        for word in (w for option in options[c] for w in option):
            if owner.setdefault(word.lower(), label) != label:
                raise UserError(
                    f"{space.origin}: verbalizers.seeds: the word {word!r} is given for both {owner[word.lower()]!r} and {label!r}"
                )
    return options


def rank_seed_templates(
    scorer: PromptScorer, templates: Sequence[Template], verbalizers: Sequence[Verbalizer], texts: list, gold: list[int]
) -> list[RankedSeed]:
    """Seed templates, best first, each with its best seed verbalizer on train (prior-calibrated)."""
    ranked = []
    for template in templates:
        prepared = scorer.prepare(template, texts)
        scored = list(zip(scorer.score_variants(prepared, [(v, "prior") for v in verbalizers], gold), verbalizers))
        best, verbalizer = max(scored, key=lambda item: (item[0].accuracy, item[0].mean_margin))
        ranked.append(RankedSeed(template, verbalizer, best.accuracy, best.mean_margin))
    ranked.sort(key=lambda r: (-r.accuracy, -r.margin))
    return ranked
