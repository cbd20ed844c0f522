"""Generate and freeze every candidate of a search before its first trial.

In order: the template pool (seeds, block combinations); the seed verbalizers' words; words read
from the model's slot distribution (:mod:`label_words`); words aligned with a linear probe of the
slot's hidden state (:mod:`label_probe`), both without the words the model reads as pieces of longer
ones (:mod:`fragments`); templates with gradient-searched triggers
(:mod:`triggers`). Each generator starts from the seed templates that do best on train and
records what it did under ``Pools.origins``, which the run's manifest keeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence


from autoprompt_search.candidates.fragments import whole_words
from autoprompt_search.candidates.template_pool import build_template_pool, normalize_template
from autoprompt_search.data import Dataset
from autoprompt_search.errors import UserError
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.search import Pools
from autoprompt_search.templates import Template
from autoprompt_search.tokenization import encode_in_context, encode_plain
from autoprompt_search.verbalizers import Verbalizer


FRAGMENT_SPARES = 2  # each word generator proposes this many times its words, so that dropping fragments leaves enough


@dataclass(frozen=True)
class RankedSeed:
    """A seed template with the seed verbalizer that does best with it on train (prior-calibrated)."""

    template: Template
    verbalizer: Verbalizer
    accuracy: float
    margin: float


def build_pools(space, scorer: PromptScorer, train: Dataset, dev: Dataset, log: Callable[[str], None] = print) -> Pools:
    """The frozen pools of a search: templates, label-word options per class, calibrations, and
    the manual baselines (seed templates x seed verbalizers x calibrations)."""
    labels = tuple(train.labels)
    for i, template in enumerate(space.templates.seeds):
        if template.n_triggers:
            raise UserError(f"{space.source}: templates.seeds[{i}]: a seed cannot hold trigger slots [T]; "
                            "put the template under generators.triggers.templates")
    templates = build_template_pool(space, model_kind=scorer.backend.kind)
    n_seeds = len({normalize_template(t.source) for t in space.templates.seeds})
    seeds = [Verbalizer.parse(verbalizer.to_dict(), labels) for verbalizer in space.verbalizers.seeds]
    for template in templates[:n_seeds]:
        for verbalizer in seeds:
            scorer.word_ids(template, verbalizer)  # a seed word the tokenizer cannot spell fails here, early
    options = _seed_options(space, seeds, labels)
    if space.generators.triggers.enabled:  # a bad setting fails now, not after the other generators
        _single_token(scorer.backend.tokenizer, space.generators.triggers.init, True)
        if space.generators.triggers.fluency is not None and scorer.backend.kind != "causal":
            raise UserError(f"{space.source}: generators.triggers.fluency reads a causal model's next-token distribution; "
                            f"this model is {scorer.backend.kind}: remove the key")
    origins: dict[str, Any] = {"templates": {"seeds": n_seeds, "combinations": len(templates) - n_seeds}}
    generators = space.generators
    train_texts = [example.fields for example in train.examples]
    train_gold = [labels.index(example.label) for example in train.examples]
    ranked: list[RankedSeed] = []
    if generators.enabled:  # every generator starts from the seed templates ranked on train
        ranked = rank_seed_templates(scorer, templates[:n_seeds] or templates, seeds, train_texts, train_gold)
    if generators.label_words.enabled:
        origins["label_words"] = _distribution_words(generators.label_words, scorer, ranked, train_texts, train_gold, labels, options, log)
    if generators.label_probe.enabled:
        origins["label_probe"] = _probe_words(generators.label_probe, scorer, ranked, train_texts, train_gold, labels, options, log)
    proposals: list[tuple[Template, Verbalizer]] = []
    if generators.triggers.enabled:
        found, origins["triggers"] = _trigger_templates(generators.triggers, scorer, ranked, train, dev, labels, options, seed_of(train), log)
        proposals += found
    if generators.demonstrations.enabled:
        from autoprompt_search.candidates.demonstrations import demonstration_templates

        bases = [(r.template, r.verbalizer) for r in ranked[: generators.demonstrations.templates]]
        shown, origins["demonstrations"] = demonstration_templates(generators.demonstrations, scorer, bases, train, seed_of(train), log)
        proposals += shown
    _append_new(templates, [template for template, _ in proposals])
    for c, label in enumerate(labels):
        if not options[c]:
            raise UserError(f"{space.source}: the word pool of label {label!r} is empty after filtering")
    pools = Pools(labels, tuple(t.source for t in templates), tuple(tuple(o) for o in options), tuple(space.calibration), origins=origins)
    manual = tuple(pools.params_for(template.source, verbalizer, calibration)
                   for template in templates[:n_seeds] for verbalizer in seeds for calibration in space.calibration)
    # Each generated template is tried first, under every calibration, with the words it was made
    # for (the words a trigger search optimised, the words a demonstration template shows).
    pooled = {normalize_template(source): source for source in pools.templates}  # the pool holds one of each reading
    proposed: list[dict[str, Any]] = []
    for template, verbalizer in proposals:
        source = pooled[normalize_template(template.source)]  # a template that reads as one already pooled is that one
        for calibration in space.calibration:
            params = pools.params_for(source, verbalizer, calibration)
            if params not in proposed:
                proposed.append(params)
    return replace(pools, manual=manual, proposals=tuple(proposed))


def _append_new(templates: list[Template], found: Sequence[Template]) -> None:
    known = {normalize_template(t.source) for t in templates}
    for template in found:
        if normalize_template(template.source) not in known:
            known.add(normalize_template(template.source))
            templates.append(template)


def next_round(space, scorer: PromptScorer, train: Dataset, pools: Pools, board: Sequence, log: Callable[[str], None] = print) -> Pools:
    """One more generation round: the word generators run again from the templates the study
    ranks best so far (``board``, best first, each with its best verbalizer), instead of the seed
    ranking, and their new words extend the pools under the next round's parameter names."""
    labels = pools.labels
    ranked: list[RankedSeed] = []
    for result in board:
        if all(r.template.source != result.template for r in ranked):
            ranked.append(RankedSeed(Template.parse(result.template, fields=train.fields),
                                     Verbalizer.parse(result.verbalizer, labels), result.accuracy, result.mean_margin))
    texts = [example.fields for example in train.examples]
    gold = [labels.index(example.label) for example in train.examples]
    options = [list(words) for words in pools.words]
    generators = space.generators
    record: dict[str, Any] = {"round": pools.rounds, "completed_trials": len(board), "templates": [r.template.source for r in ranked[:3]]}
    log(f"generation round {pools.rounds + 1}/{generators.rounds.count}: words from the study's best templates")
    if generators.label_words.enabled:
        record["label_words"] = _distribution_words(generators.label_words, scorer, ranked, texts, gold, labels, options, log)
    if generators.label_probe.enabled:
        record["label_probe"] = _probe_words(generators.label_probe, scorer, ranked, texts, gold, labels, options, log)
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
                raise UserError(f"{space.source}: verbalizers.seeds: the word {word!r} is given for both {owner[word.lower()]!r} and {label!r}")
    return options


def _pool_words(options: Sequence[Sequence[tuple[str, ...]]]) -> set[str]:
    return {word for label_options in options for option in label_options for word in option}


def _add_words(options: list[list[tuple[str, ...]]], words_by_label: Mapping[str, Sequence[str]], labels: Sequence[str]) -> None:
    """Each new word as an option of its own, and the first three together as one more option."""
    for c, label in enumerate(labels):
        words = list(words_by_label.get(label, []))
        options[c].extend((word,) for word in words if (word,) not in options[c])
        if len(words) >= 3 and tuple(words[:3]) not in options[c]:
            options[c].append(tuple(words[:3]))


def rank_seed_templates(scorer: PromptScorer, templates: Sequence[Template], verbalizers: Sequence[Verbalizer],
                        texts: list, gold: list[int]) -> list[RankedSeed]:
    """Seed templates, best first, each with its best seed verbalizer on train (prior-calibrated)."""
    ranked = []
    for template in templates:
        prepared = scorer.prepare(template, texts)
        scored = list(zip(scorer.score_variants(prepared, [(v, "prior") for v in verbalizers], gold), verbalizers))
        best, verbalizer = max(scored, key=lambda item: (item[0].accuracy, item[0].mean_margin))
        ranked.append(RankedSeed(template, verbalizer, best.accuracy, best.mean_margin))
    ranked.sort(key=lambda r: (-r.accuracy, -r.margin))
    return ranked


def _same_slot_spacing(ranked: Sequence[RankedSeed], count: int) -> list[Template]:
    """The ``count`` best templates whose slot follows whitespace as the best one's does (one
    tokenization mode for the word filter)."""
    leading = [r.template for r in ranked[:count]]
    return [t for t in leading if t.slot_follows_space() == leading[0].slot_follows_space()]


def _distribution_words(generator, scorer, ranked, texts, gold, labels, options, log) -> dict[str, Any]:
    from autoprompt_search.candidates.label_words import generate_label_words

    chosen = _same_slot_spacing(ranked, generator.templates)
    shortlist = {("mean_log_prob",): generator.words_per_class, ("likelihood_ratio",): 10_000}.get(tuple(generator.scoring), 50)
    began = time.perf_counter()
    generated = generate_label_words(scorer, chosen, texts, gold, labels, words_per_class=FRAGMENT_SPARES * generator.words_per_class,
                                     shortlist=shortlist, exclude=_pool_words(options))
    kept, fragments = whole_words(scorer, chosen[0], texts, {label: [c.word for c in generated.get(label, [])] for label in labels},
                                  generator.words_per_class)
    _add_words(options, kept, labels)
    log("label words: " + "; ".join(f"{label}: {', '.join(kept[label][:8])}" for label in labels) + _dropped(fragments))
    return {"templates": [t.source for t in chosen], "seconds": time.perf_counter() - began, "shortlist": shortlist,
            "words": {label: [{"word": w.word, "token_id": w.token_id, "mean_log_prob": w.mean_log_prob,
                               "log_likelihood_ratio": w.log_likelihood_ratio} for w in generated.get(label, []) if w.word in kept[label]]
                      for label in labels},
            "fragments": fragments}


def _probe_words(generator, scorer, ranked, texts, gold, labels, options, log) -> dict[str, Any]:
    from autoprompt_search.candidates.label_probe import probe_label_words

    began, passes = time.perf_counter(), scorer.backend.forward_passes
    record: dict[str, Any] = {"probes": []}
    for template in _same_slot_spacing(ranked, generator.templates):
        result = probe_label_words(scorer, template, texts, gold, labels, words_per_class=FRAGMENT_SPARES * generator.words_per_class,
                                   exclude=sorted(_pool_words(options)), shortlist=generator.shortlist)
        kept, fragments = whole_words(scorer, template, texts, {label: [w.word for w in words] for label, words in result.words.items()},
                                      generator.words_per_class)
        _add_words(options, kept, labels)
        record["probes"].append({"template": template.source, "C": result.regularization, "cv_accuracy": result.cv_accuracy,
                                 "words": {label: [{"word": w.word, "token_id": w.token_id, "specificity": w.specificity}
                                                   for w in words if w.word in kept[label]] for label, words in result.words.items()},
                                 "fragments": fragments})
        log(f"probe words ({template.source!r}, probe CV accuracy {result.cv_accuracy:.2f}): "
            + "; ".join(f"{label}: {', '.join(words[:8])}" for label, words in kept.items()) + _dropped(fragments))
    record.update(seconds=time.perf_counter() - began, forward_passes=scorer.backend.forward_passes - passes)
    return record


def _dropped(fragments: Mapping[str, float]) -> str:
    return f" (dropped as word pieces: {', '.join(fragments)})" if fragments else ""


def _trigger_templates(generator, scorer, ranked, train: Dataset, dev: Dataset, labels, options, seed: int,
                       log) -> tuple[list[tuple[Template, Verbalizer]], dict[str, Any]]:
    """Search triggers for each base template; returns the written templates, each with the
    verbalizer its triggers were searched for, and the record."""
    from tqdm import tqdm

    from autoprompt_search.candidates.triggers import TriggerObjective, insert_triggers, search_triggers
    from autoprompt_search.candidates.vocabulary import allowed_trigger_tokens

    backend = scorer.backend
    # (template with trigger slots, its verbalizer, the template the slots went into: None when written with them)
    if generator.templates:
        bases = [(template, ranked[0].verbalizer, None) for template in generator.templates]
    else:
        bases = [(Template.parse(insert_triggers(r.template, generator.count, generator.position)), r.verbalizer, r.template.source)
                 for r in ranked[: generator.base_templates]]
    vocabulary = backend.model.get_input_embeddings().weight.shape[0]
    label_words = _pool_words(options)
    train_texts = [e.fields for e in train.examples]
    dev_texts = [e.fields for e in dev.examples]
    train_gold = [labels.index(e.label) for e in train.examples]
    dev_gold = [labels.index(e.label) for e in dev.examples]
    found: list[tuple[Template, Verbalizer]] = []
    record: dict[str, Any] = {"settings": {name: getattr(generator, name) for name in
                                           ("count", "position", "candidates", "steps", "restarts", "batch_size", "patience",
                                            "init", "filters", "loss", "fluency")}, "searches": []}
    began = time.perf_counter()
    for number, (template, verbalizer, base) in enumerate(bases):
        token_ids = [[word[0] for word in words] for words in scorer.word_ids(template, verbalizer)]
        objective = TriggerObjective(backend, template, token_ids, loss=generator.loss)
        spacing = [bool(template.whitespace_before(i)) for i, s in enumerate(template.segments) if s.kind == "trigger"]
        masks = {space: allowed_trigger_tokens(backend.tokenizer, vocab_size=vocabulary, leading_space=space,
                                               filters=generator.filters, label_words=label_words) for space in set(spacing)}
        allowed = [masks[space] for space in spacing]
        if not all(bool(mask.any()) for mask in allowed):
            raise UserError(f"generators.triggers: no token of this model's vocabulary passes the filters "
                            f"{', '.join(generator.filters)} for the trigger slots of {template.source!r}")
        init = [_single_token(backend.tokenizer, generator.init, space) for space in spacing]
        bar = tqdm(total=generator.steps * generator.restarts, desc=f"triggers {number + 1}/{len(bases)}", unit="step", leave=False)

        def on_step(step: Mapping[str, float]) -> None:
            bar.set_postfix(loss=f"{step['train_loss']:.3f}", dev=f"{step['dev_accuracy']:.3f}")
            bar.update(1)

        searched_at = time.perf_counter()
        runs = search_triggers(objective, train_texts, train_gold, dev_texts, dev_gold, init_ids=init, allowed=allowed,
                               steps=generator.steps, candidates=generator.candidates, restarts=generator.restarts,
                               batch_size=generator.batch_size, patience=generator.patience, seed=seed + number,
                               fluency=generator.fluency, on_step=on_step)
        bar.close()
        for run in runs:
            if run.template is not None and run.changed:  # a restart whose best is where it started hands over nothing
                found.append((Template.parse(run.template, fields=dev.fields), verbalizer))
        record["searches"].append({
            "template": template.source, "base": base, "verbalizer": verbalizer.to_dict(), "seconds": time.perf_counter() - searched_at,
            "forward_passes": objective.forward_passes, "backward_passes": objective.counter.backward, "rows": objective.counter.rows,
            "runs": [{"restart": r.restart, "tokens": r.tokens, "token_ids": r.trigger_ids, "template": r.template,
                      "dev_loss": r.dev_loss, "dev_accuracy": r.dev_accuracy, "steps": r.steps, "improvements": r.improvements,
                      "changed": r.changed,
                      "history": r.history} for r in runs],
        })
        log(f"triggers for {template.source!r}: " + "; ".join(
            f"{r.template or '(dropped: ' + ' '.join(r.tokens) + ' does not survive as text)'} (dev {r.dev_accuracy:.2f})" for r in runs))
    record["seconds"] = time.perf_counter() - began
    return found, record


def _single_token(tokenizer, word: str, leading_space: bool) -> int:
    ids = encode_in_context(tokenizer, [" " + word.strip()])[0] if leading_space else encode_plain(tokenizer, [word.strip()])[0]
    if len(ids) != 1:
        raise UserError(f"generators.triggers.init: {word!r} is {len(ids)} tokens for this model's tokenizer; give a word that is one token")
    return ids[0]
