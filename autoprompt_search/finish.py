"""The end of a search: the best prompt, the best manual prompt and the ensemble taken from the
leaderboard, the ensemble's weights fitted on the few-shot examples, everything scored on test,
and the exports written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from autoprompt_search.ensemble import WeightFit, combine_probabilities, fit_weights, select_members
from autoprompt_search.estimate import CANDIDATES, Candidate, estimate_choices
from autoprompt_search.export import write_ensemble, write_prompt
from autoprompt_search.label_free import choose_by_agreement
from autoprompt_search.logs import Log
from autoprompt_search.prompt import ModelInfo, PromptSpec
from autoprompt_search.ranking import TrialResult
from autoprompt_search.run_folder import BEST, ENSEMBLE, RunFolder
from autoprompt_search.scoring import PromptScore, PromptScorer, evaluate_scores
from autoprompt_search.search import PromptSearch
from autoprompt_search.splits import RunSplits
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer


def score_on_split(scorer: PromptScorer, results: Sequence[TrialResult], dataset, gold: Sequence[int],
                   log: Log) -> list[PromptScore]:
    """Prompts on a split, in one pass of the model over it: all the verbalizers and calibrations
    of a template are read from its distributions, and the templates' distributions of an example
    are computed together (a causal model runs the opening they share once)."""
    by_template: dict[Template, list[int]] = {}
    for index, result in enumerate(results):
        by_template.setdefault(result.template, []).append(index)
    log(f"test: {len(by_template)} templates ({len(results)} prompts) on {len(dataset)} examples")
    texts = [e.fields for e in dataset.examples]
    items = [(scorer.prepare(template, texts), [(Verbalizer.parse(results[i].verbalizer, dataset.labels), results[i].calibration)
                                                for i in indices]) for template, indices in by_template.items()]
    # Examples per second and time left, chunk by chunk (the test pass can take minutes).
    with scorer.progress_bar(len(dataset), "test"):
        scored = scorer.score_templates(items, gold)
    scores = {i: score for indices, template_scores in zip(by_template.values(), scored) for i, score in zip(indices, template_scores)}
    return [scores[i] for i in range(len(results))]


@dataclass
class FinishedSearch:
    """The chosen prompts with their scores: ``selection`` on train+dev, ``dev``, ``test``, keyed by
    trial number (unique on a leaderboard)."""

    chosen: list[TrialResult]
    best: TrialResult
    manual: TrialResult | None
    members: list[TrialResult]
    fit: WeightFit
    selection: dict[int, PromptScore]
    dev: dict[int, PromptScore]
    test: dict[int, PromptScore]
    test_gold: list[int]
    ensemble_test: PromptScore
    summary: dict[str, Any]
    splits: RunSplits
    scorer: PromptScorer

    def spec(self, result: TrialResult) -> PromptSpec:
        dev = self.splits.dev
        return PromptSpec(result.template, result.verbalizer, tuple(dev.labels), tuple(dev.fields), result.calibration)

    def scores(self, result: TrialResult) -> dict[str, Any]:
        return {"train_dev": self.selection[result.number].summary(), "test": self.test[result.number].summary()}

    def word_ids(self, result: TrialResult) -> dict[str, list[list[int]]]:
        template, verbalizer = self.spec(result).parsed()
        ids = self.scorer.word_ids(template, verbalizer)
        return {label: [list(w) for w in words] for label, words in zip(self.splits.dev.labels, ids)}

    def write_exports(self, folder: RunFolder, model: ModelInfo, dataset: dict[str, Any], provenance: dict[str, Any]) -> None:
        backend = self.scorer.backend
        common = {"dataset": dataset, "provenance": provenance, "batch_size": backend.batch_size,
                  "chunk_size": self.scorer.chunk_size, "tokenizer": backend.tokenizer}
        best_scores = {**self.scores(self.best), "estimate": self.summary["best"]["estimate"]}
        write_prompt(folder.file(BEST), self.spec(self.best), model, scores=best_scores, word_token_ids=self.word_ids(self.best), **common)
        write_ensemble(folder.file(ENSEMBLE), [(self.spec(m), w, self.scores(m)) for m, w in zip(self.members, self.fit.weights)],
                       model, scores={key: self.summary["ensemble"][key] for key in ("train_dev", "estimate", "test")},
                       weights_fit=self.fit.to_dict(), word_token_ids=[self.word_ids(m) for m in self.members], **common)

    def write_predictions(self, folder: RunFolder) -> None:
        folder.write_predictions(self.splits.test, self.test_gold, {"best": self.test[self.best.number], "ensemble": self.ensemble_test})


def finish_search(board: list[TrialResult], search: PromptSearch, scorer: PromptScorer, space, splits: RunSplits, *,
                  seed: int, log: Log) -> FinishedSearch:
    """Pick the best prompt (the top one, or by ``space.unlabelled.select``), the best manual one and
    the ensemble's members from ``board`` (best first), fit the ensemble's weights on train+dev, and
    score them all on test."""
    candidates = board[:CANDIDATES]
    agreement = space.unlabelled.select == "agreement"
    # cached: no forward pass (the unlabelled texts are read only for the agreement choice)
    few_shot = {r.number: search.evaluate(r.params, unlabelled_probabilities=agreement) for r in candidates}
    rank = choose_by_agreement([r.objective for r in candidates], [few_shot[r.number].unlabelled for r in candidates],
                               len(search.gold)) if agreement else 0
    best = board[rank]
    manual = next((result for result in board if result.manual), None)
    members = select_members(board, space.ensemble.size, space.ensemble.prompts_per_template, key=lambda r: r.template)
    chosen = list({r.number: r for r in (best, manual, *members) if r is not None}.values())  # each once, in this order
    few_shot.update((r.number, search.evaluate(r.params, unlabelled_probabilities=False)) for r in chosen if r.number not in few_shot)
    fit = fit_weights([few_shot[m.number].selection.probabilities for m in members], search.gold, seed=seed)
    test = splits.test
    test_gold = [test.labels.index(e.label) for e in test.examples]
    test_scores = {r.number: score for r, score in zip(chosen, score_on_split(scorer, chosen, test, test_gold, log))}
    selection = {i: evaluation.selection for i, evaluation in few_shot.items()}
    dev = {i: evaluation.dev for i, evaluation in few_shot.items()}
    dev_rows = slice(len(search.train), len(search.gold))

    def combined(probabilities: list[np.ndarray], gold) -> PromptScore:
        return evaluate_scores(torch.log(torch.from_numpy(combine_probabilities(probabilities, fit.weights))), gold)

    def entry(result: TrialResult) -> dict[str, Any]:
        i = result.number
        return {"trial": result.number, "template": result.template.source, "verbalizer": result.verbalizer,
                "calibration": result.calibration.method, "train_dev": selection[i].summary(),
                "dev": dev[i].summary(), "test": test_scores[i].summary()}

    def estimate(choice: str) -> dict[str, Any]:
        if estimates is None:
            return {"accuracy": None, "why_none": "some label has fewer than 2 dev examples to hold out"}
        return estimates[choice].to_dict()

    estimates = estimate_choices(
        [Candidate(r.template.source, r.verbalizer, r.calibration.method, selection[r.number].probabilities) for r in candidates],
        search.gold, np.arange(len(search.train), len(search.gold)), objective=space.objective,
        ensemble_size=space.ensemble.size, prompts_per_template=space.ensemble.prompts_per_template, seed=seed,
        unlabelled=[few_shot[r.number].unlabelled for r in candidates] if agreement else None)
    member_keys = [m.number for m in members]
    ensemble_all = combined([selection[i].probabilities for i in member_keys], search.gold)
    ensemble_test = combined([test_scores[i].probabilities for i in member_keys], test_gold)
    ensemble_dev = combined([selection[i].probabilities[dev_rows] for i in member_keys], search.gold[dev_rows])
    summary = {
        "best": {**entry(best), "selected_by": space.unlabelled.select, "rank": rank + 1, "estimate": estimate("best")},
        "best_manual": entry(manual) if manual else None,
        "ensemble": {"members": [entry(m) for m in members], "weights": list(fit.weights), "train_dev": ensemble_all.summary(),
                     "estimate": estimate("ensemble"), "dev": ensemble_dev.summary(), "test": ensemble_test.summary()},
    }
    return FinishedSearch(chosen, best, manual, members, fit, selection, dev, test_scores, test_gold, ensemble_test, summary,
                          splits, scorer)
