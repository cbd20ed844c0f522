"""Do the user's unlabelled texts choose better prompts? Measured on finished runs, after the fact.

Each run's leaderboard (the prompts its search tried, each scored on its 56-160 labelled
examples) is read back, and every trial is also scored on texts of the run's train pool that
its few-shot examples did not use (``--unlabelled``, drawn with the run's seed; the test split is
never among them). Their labels are not read. The rules below then pick a single prompt, or an
ensemble, among the *same* trials, and only what they pick is scored on the run's test split:

- ``chosen``: the run's own pick (labelled accuracy, then margin);
- ``batch_prior``: every ``prior``-calibrated trial refitted on the unlabelled texts (batch
  calibration, Zhou et al. 2024) instead of on the 32-128 scored train texts, and the trials
  ranked again on the labelled examples;
- ``mi_near_top``: among the trials whose labelled accuracy is within one standard error of the
  top one, the one of highest mutual information on the unlabelled texts (Sorensen et al. 2022);
- ``agreement_near_top``: the same near-top trials, the one agreeing most with the pseudo-labels
  of the uniform ensemble of the ten best-ranked trials (Liao et al. 2022): the search's own
  ``unlabelled.select: agreement`` rule (:func:`label_free.choose_by_agreement`);
- ``*_batch``: the same two rules on the ``batch_prior`` ranking;
- ``ensemble``: the run's own ensemble; ``ensemble_batch_prior``: members and weights chosen as
  the run chooses them (:mod:`autoprompt_search.ensemble`), on the ``batch_prior`` ranking;
  ``ensemble5_batch_prior``: the same with 5 templates instead of the space's size;
  ``top10_uniform_batch_prior``: the uniform average of the ten best-ranked trials (the prompts
  whose vote gives the pseudo-labels).

What this does not measure: a search that used the signals while it ran would have sampled other
trials (``--runs`` may name runs that did: their ``prior`` trials are already fitted on the texts).
``--baseline-runs`` sets the chosen prompt and ensemble of runs of the same seeds searched without
the texts beside, paired by seed. Writes ``results/benchmarks/unlabelled.json``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from autoprompt_search.analysis import BENCHMARK_SEEDS as SEEDS
from autoprompt_search.analysis import FinishedRun, mean_std
from autoprompt_search.calibration import Calibration
from autoprompt_search.ensemble import combine_probabilities, fit_weights, select_members
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.label_free import PSEUDO_LABEL_PROMPTS, choose_by_agreement, mutual_information, near_top, unlabelled_sample
from autoprompt_search.provenance import stamp
from autoprompt_search.ranking import TrialResult, ranking_key
from autoprompt_search.run_folder import RESULTS, RunFolder
from autoprompt_search.scoring import evaluate_scores
from autoprompt_search.space_types import DatasetSpec
from autoprompt_search.verbalizers import Verbalizer

SINGLE = ("chosen", "batch_prior", "mi_near_top", "agreement_near_top", "mi_near_top_batch", "agreement_near_top_batch")
ENSEMBLES = ("ensemble", "ensemble_batch_prior", "ensemble5_batch_prior", "top10_uniform_batch_prior")


class RunSignals:
    """A finished run's trials with their raw class scores on the unlabelled texts and on train+dev."""

    def __init__(self, path: Path, unlabelled: int) -> None:
        self.run = FinishedRun(path)
        pool = DatasetSpec.from_record(self.run.space["dataset"]).load_split("train_pool")
        self.unlabelled = unlabelled_sample(pool, [self.run.train, self.run.dev], unlabelled, self.run.seed)
        self.search = self.run.search()
        began = time.perf_counter()
        self.raw_unlabelled: dict[int, torch.Tensor] = {}
        self.raw_labelled: dict[int, torch.Tensor] = {}
        scorer, labels = self.run.scorer, self.run.dev.labels
        texts = [e.fields for e in self.unlabelled.examples]
        for template in dict.fromkeys(r.template for r in self.run.board):
            results = [r for r in self.run.board if r.template == template]
            word_ids = [scorer.word_ids(template, Verbalizer.parse(r.verbalizer, labels)) for r in results]
            on_unlabelled = scorer.variant_class_scores(scorer.prepare(template, texts).prompts, word_ids)
            pieces = self.search.prepared(self.run.pools.templates.index(template))
            on_labelled = [torch.cat(parts) for parts in zip(*(scorer.variant_class_scores(p.prompts, word_ids) for p in pieces))]
            for result, raw_u, raw_l in zip(results, on_unlabelled, on_labelled):
                self.raw_unlabelled[result.number], self.raw_labelled[result.number] = raw_u, raw_l
        self.seconds = time.perf_counter() - began

    def probabilities(self, result: TrialResult) -> np.ndarray:
        """A trial's calibrated class probabilities on the unlabelled texts."""
        return torch.softmax(result.calibration.apply(self.raw_unlabelled[result.number]), dim=1).numpy()

    def batch_prior(self) -> list[TrialResult]:
        """The leaderboard with each ``prior`` trial refitted on the unlabelled texts, ranked again."""
        gold = self.search.gold
        board = []
        for result in self.run.board:
            if result.calibration.method == "prior":
                calibration = Calibration.prior_from(self.raw_unlabelled[result.number])
                score = evaluate_scores(calibration.apply(self.raw_labelled[result.number]), gold, calibration)
                value = score.accuracy if self.search.objective == "accuracy" else score.macro_f1
                result = replace(result, calibration=calibration, objective=value, accuracy=score.accuracy,
                                 macro_f1=score.macro_f1, mean_margin=score.mean_margin)
            board.append(result)
        board.sort(key=lambda r: ranking_key(r.objective, r.mean_margin, r.template.source, r.verbalizer, r.calibration.method))
        return board

    def picks(self, board: list[TrialResult]) -> dict[str, TrialResult]:
        """The near-top trial of highest mutual information, and the one agreeing most with the pseudo-labels."""
        ranked, n = [r.objective for r in board], len(self.search.gold)
        probabilities = [self.probabilities(r) for r in board]
        return {"mi_near_top": board[max(near_top(ranked, n), key=lambda i: mutual_information(probabilities[i]))],
                "agreement_near_top": board[choose_by_agreement(ranked, probabilities, n)]}

    def ensemble(self, board: list[TrialResult], size: int | None = None) -> tuple[list[TrialResult], list[float]]:
        """Members and weights chosen as the run chooses them, from ``board`` (``size`` templates: the run's by default)."""
        space = self.run.space["ensemble"]
        members = select_members(board, size or space["size"], space["prompts_per_template"], key=lambda r: r.template)
        probabilities = [evaluate_scores(m.calibration.apply(self.raw_labelled[m.number]), self.search.gold).probabilities
                         for m in members]
        return members, list(fit_weights(probabilities, self.search.gold, seed=self.run.seed).weights)


def run_figures(path: Path, unlabelled: int) -> dict:
    signals = RunSignals(path, unlabelled)
    run = signals.run
    batch = signals.batch_prior()
    picked = {"chosen": run.board[0], "batch_prior": batch[0], **signals.picks(run.board),
              **{f"{name}_batch": result for name, result in signals.picks(batch).items()}}
    tested = {name: run.test_score(result) for name, result in picked.items()}
    gold = np.asarray(run.gold)

    def ensemble_accuracy(board: list[TrialResult], size: int | None = None) -> float:
        members, weights = signals.ensemble(board, size)
        return combined_accuracy(members, weights)

    def combined_accuracy(members: list[TrialResult], weights: list[float]) -> float:
        combined = combine_probabilities([run.test_score(m).probabilities for m in members], weights)
        return float((combined.argmax(axis=1) == gold).mean())

    return {
        "run": str(path), "trials": len(run.board), "unlabelled_n": len(signals.unlabelled), "test_n": len(gold),
        "seconds_scoring_unlabelled": round(signals.seconds, 1),
        **{name: score.accuracy for name, score in tested.items()},
        "ensemble": run.results()["ensemble"]["test"]["accuracy"],
        "ensemble_recomputed": ensemble_accuracy(run.board),  # must equal the run's own: the check that this replays the run
        "ensemble_batch_prior": ensemble_accuracy(batch),
        "ensemble5_batch_prior": ensemble_accuracy(batch, 5),
        "top10_uniform_batch_prior": combined_accuracy(batch[:PSEUDO_LABEL_PROMPTS], [1.0] * len(batch[:PSEUDO_LABEL_PROMPTS])),
        "chosen_reported": run.results()["best"]["test"]["accuracy"],
        "picked": {name: {"trial": r.number, "template": r.template.source, "verbalizer": r.verbalizer,
                          "calibration": r.calibration.method, "train_dev_accuracy": r.accuracy,
                          "unlabelled_mi": mutual_information(signals.probabilities(r))} for name, r in picked.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="mr")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--runs", default="results/runs/quality_v2")
    parser.add_argument("--unlabelled", type=int, default=256, help="unlabelled texts per run")
    parser.add_argument("--baseline-runs", help="runs of the same seeds searched otherwise (without unlabelled texts): "
                                                   "their chosen prompt and ensemble are set beside, paired by seed")
    parser.add_argument("--out", default="results/benchmarks/unlabelled.json")
    args = parser.parse_args()
    report: dict = {"unlabelled": args.unlabelled, "runs": args.runs, "baseline_runs": args.baseline_runs, "datasets": {}}
    for dataset in args.datasets.split(","):
        per_seed = []
        for seed in args.seeds.split(","):
            path = Path(args.runs) / f"{dataset}-seed{seed}"
            if RunFolder(path).file(RESULTS).exists():
                per_seed.append(run_figures(path, args.unlabelled))
                if args.baseline_runs:
                    baseline = RunFolder(Path(args.baseline_runs) / path.name).results()
                    per_seed[-1].update(baseline_chosen=baseline["best"]["test"]["accuracy"],
                                        baseline_ensemble=baseline["ensemble"]["test"]["accuracy"])
                print(dataset, seed, {name: per_seed[-1][name] for name in (*SINGLE, *ENSEMBLES)}, flush=True)
        if not per_seed:
            continue
        summary = {name: mean_std([row[name] for row in per_seed]) for name in (*SINGLE, *ENSEMBLES)}
        paired = {name: mean_std([row[name] - row["chosen"] for row in per_seed]) for name in SINGLE[1:]}
        paired.update({name: mean_std([row[name] - row["ensemble"] for row in per_seed]) for name in ENSEMBLES[1:]})
        if args.baseline_runs:  # this search against the baseline search, and each rule here against the baseline's own choice
            summary.update({name: mean_std([row[name] for row in per_seed]) for name in ("baseline_chosen", "baseline_ensemble")})
            paired.update({f"{name}_vs_baseline": mean_std([row[name] - row["baseline_chosen"] for row in per_seed]) for name in SINGLE})
            paired.update({f"{name}_vs_baseline": mean_std([row[name] - row["baseline_ensemble"] for row in per_seed])
                           for name in ENSEMBLES})
        report["datasets"][dataset] = {"per_seed": per_seed, "summary": summary, "paired_difference": paired}
        # partial reports survive an interrupted run
        atomic_write_json(Path(args.out), {**report, "provenance": stamp()})
    atomic_write_json(Path(args.out), {**report, "provenance": stamp()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
