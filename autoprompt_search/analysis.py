"""Reading finished search runs, for analyses and benchmarks.

A :class:`FinishedRun` is a run folder read back: its leaderboard, its own train, dev and test
splits derived again (each checked against the hash the run recorded), a scorer of the model it
recorded (weights hash checked), and any of its trials scored again on its test split. Scoring
goes through the slot cache, so what the run already scored costs no forward pass.
:func:`search_seed` runs one seed's search for a benchmark, or reads it back when it is done.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from autoprompt_search.errors import UserError
from autoprompt_search.ranking import TrialResult, ranking_key
from autoprompt_search.run_folder import RunFolder

if TYPE_CHECKING:
    from autoprompt_search.candidates.pools import Pools
    from autoprompt_search.data import Dataset
    from autoprompt_search.scoring import PromptScore, PromptScorer
    from autoprompt_search.search import PromptSearch
    from autoprompt_search.splits import RunSplits
    from autoprompt_search.templates import Template
    from autoprompt_search.verbalizers import Verbalizer

BENCHMARK_DATASETS = ("mr", "subj", "rt", "bbc", "tweets")  # the bundled datasets the quality benchmarks cover
BENCHMARK_SEEDS = (13, 21, 42, 87, 100)  # LM-BFF's five few-shot seeds
REPORTED_PROMPTS = ("best_manual", "best", "ensemble")  # the prompts a run's results.json scores on test
SEARCH_OPTIONS = ("model", "trials", "timeout", "test_limit", "max_length", "device", "batch_size", "precision")


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None without values: no seed had such a prompt)."""
    if not values:
        return {"mean": None, "std": None, "per_seed": []}
    values = list(values)
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "per_seed": values}


@functools.cache
def scorer_for(model: str, max_length: int, precision: str = "float32") -> PromptScorer:
    """A scorer of ``model`` in ``precision`` with prompts cut to ``max_length`` tokens over the on-disk
    slot cache, one per setting (memoised: every run of a benchmark on that model shares it)."""
    from autoprompt_search.backends import load_backend
    from autoprompt_search.cache import SlotCache, default_cache_dir
    from autoprompt_search.scoring import PromptScorer

    return PromptScorer(load_backend(model, max_length=max_length, precision=precision), SlotCache(default_cache_dir()))


def prompt_search(scorer: PromptScorer, pools: Pools, train: Dataset, dev: Dataset, *, objective: str = "accuracy",
                  pruner: str = "none", chunks: int = 1, unlabelled: Dataset | None = None) -> PromptSearch:
    """A study's scorer over ``pools`` as the pipeline builds it: prompts scored on the train
    examples no template shows (:meth:`Pools.scored_train`) and on dev."""
    from autoprompt_search.search import PromptSearch

    return PromptSearch(scorer, pools.scored_train(train), dev, pools, objective=objective, pruner=pruner, chunks=chunks,
                        unlabelled=unlabelled)


def scored_as_trial(search: PromptSearch, test: Dataset, template: Template, verbalizer: Verbalizer) -> dict[str, Any]:
    """A template with fixed words under each calibration of ``search``'s pools, each scored on
    train+dev exactly as a trial is (:meth:`PromptSearch.evaluate`: calibration fitted on the
    scored train examples) and on ``test``; the calibration the study's ranking picks."""
    pools, scorer = search.pools, search.scorer
    evaluated = {method: search.evaluate(pools.params_for(template, verbalizer, method)) for method in pools.calibrations}
    prepared = scorer.prepare(template, [e.fields for e in test.examples])
    gold = [test.labels.index(e.label) for e in test.examples]
    tests = scorer.score_variants(prepared, [(verbalizer, e.calibration) for e in evaluated.values()], gold)
    by_calibration, keys = {}, {}
    for (method, evaluation), on_test in zip(evaluated.items(), tests):
        result = evaluation.selection
        by_calibration[method] = {"train_dev_accuracy": result.accuracy, "train_dev_margin": result.mean_margin,
                                  "test_accuracy": on_test.accuracy}
        value = result.accuracy if search.objective == "accuracy" else result.macro_f1
        keys[method] = ranking_key(value, result.mean_margin, template.source, verbalizer.to_dict(), method)
    chosen = min(keys, key=keys.get)
    return {"template": template.source, "calibration": chosen, **by_calibration[chosen], "by_calibration": by_calibration}


def trigger_base(search: dict[str, Any]) -> str | None:
    """The template a recorded trigger search inserted its ``[T]`` slots into; None for a template
    the space wrote with them. Runs made before the search recorded it: its template without the
    slots, which is what the generator inserted."""
    if "base" in search:
        return search["base"]
    return search["template"].replace(" [T]", "").replace("[T] ", "")


class FinishedRun:
    """A finished run's leaderboard, with any of its trials scored on the run's own test split.

    The splits are derived again from the recorded space, K, seed and test limit and checked
    against the hashes the run recorded (:meth:`RunFolder.splits`); the scorer uses the run's model
    and prompt length, and a model whose weights differ from the recorded ones is refused. A run
    whose data were given in memory needs them again (``records``)."""

    def __init__(self, path: str | Path, *, records: Any = None) -> None:
        self.folder = RunFolder(path)
        self.path = self.folder.path
        manifest = self.folder.manifest()
        self.space: dict[str, Any] = manifest["space"]  # as the run recorded it
        self.seed: int = manifest["seed"]
        self.splits: RunSplits = self.folder.splits(records)
        stored = self.folder.read_pools()
        if stored is None:
            raise UserError(f"{self.folder.file('pools.json')}: no such file: the run stopped before its candidate pools existed")
        self.pools: Pools = stored[0]
        model = manifest["model"]
        self.scorer = scorer_for(model["name"], model["max_length"], model.get("precision", "float32"))  # as the run scored
        if self.scorer.backend.weights_hash != model["weights_sha256"]:
            raise UserError(f"{self.path}: the weights of the model {model['name']} differ from the ones the run recorded")
        self.board: list[TrialResult] = self.folder.leaderboard()
        self.gold = [self.test.labels.index(e.label) for e in self.test.examples]
        self._prepared: dict[Template, Any] = {}
        self._search: PromptSearch | None = None

    @property
    def train(self) -> Dataset:
        return self.splits.train

    @property
    def dev(self) -> Dataset:
        return self.splits.dev

    @property
    def test(self) -> Dataset:
        return self.splits.test

    def results(self) -> dict[str, Any]:
        """The run's own results.json."""
        return self.folder.results()

    def search(self) -> PromptSearch:
        """The run's study scorer over its pools, built as the pipeline builds it (same scored train
        examples, dev, objective and pruner chunks), to score any choice of the pools as a trial."""
        if self._search is None:
            pruner = self.space["pruner"]
            self._search = prompt_search(self.scorer, self.pools, self.train, self.dev, objective=self.space["objective"],
                                         pruner=pruner["type"], chunks=pruner["chunks"], unlabelled=self.splits.unlabelled)
        return self._search

    def best(self, keep: Callable[[TrialResult], bool]) -> TrialResult | None:
        """The best-ranked trial that ``keep`` accepts (the study's own order), or None."""
        return next((result for result in self.board if keep(result)), None)

    def test_score(self, result: TrialResult) -> PromptScore:
        """A trial's score on the run's test split, with its own calibration (probabilities included)."""
        from autoprompt_search.verbalizers import Verbalizer

        if result.template not in self._prepared:
            texts = [e.fields for e in self.test.examples]
            self._prepared[result.template] = self.scorer.prepare(result.template, texts)
        return self.scorer.score(self._prepared[result.template], Verbalizer.parse(result.verbalizer, self.test.labels),
                                 self.gold, calibration=result.calibration)

    def on_test(self, result: TrialResult | None) -> dict[str, Any] | None:
        """A trial scored on the run's test split, with the calibration it fitted on train+dev."""
        if result is None:
            return None
        score = self.test_score(result)
        return {"trial": result.number, "template": result.template.source, "verbalizer": result.verbalizer,
                "calibration": result.calibration.method, "train_dev_accuracy": result.accuracy,
                "test_accuracy": score.accuracy, "test_macro_f1": score.macro_f1, "test_n": len(self.gold)}


def search_seed(space: str | Path, seed: int, out: str | Path, **options: Any) -> dict[str, Any]:
    """The results.json of ``space``'s search with ``seed`` in ``out``: read back when that run is
    complete, else the search is run (resumed where ``out`` holds its study), with its
    ``wall_seconds`` added. ``options`` go to :func:`~autoprompt_search.pipeline.run_search`."""
    from autoprompt_search.pipeline import run_search

    folder = RunFolder(out)
    if folder.is_complete():
        wanted, recorded = options.get("precision", "float32"), (folder.manifest().get("model") or {}).get("precision", "float32")
        if wanted != "auto" and wanted != recorded:
            raise UserError(f"{folder.path}: a complete run in {recorded}, not {wanted}: give another run folder")
        return folder.results()
    began = time.perf_counter()
    run_search(space, seed=seed, out=folder.path, resume=folder.is_started(), **options)
    return {**folder.results(), "wall_seconds": time.perf_counter() - began}


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The search options a benchmark passes on to every search it runs (see :func:`search_options`)."""
    from autoprompt_search.backends import PRECISION_CHOICES

    group = parser.add_argument_group("search options (passed on to every search)")
    group.add_argument("--model", help="model for the searches (default: the space's)")
    group.add_argument("--trials", type=int, help="search trials after the manual baselines (default: the space's)")
    group.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    group.add_argument("--test-limit", type=int, help="score only a sample of this many test examples")
    group.add_argument("--max-length", type=int, help="tokens per prompt (default: the space's)")
    group.add_argument("--device", help="cpu, cuda, or auto")
    group.add_argument("--batch-size", type=int)
    group.add_argument("--precision", choices=PRECISION_CHOICES, help="float32 (default), bfloat16, or auto")
    group.add_argument("--no-cache", action="store_true", help="do not read or write the on-disk slot cache")


def search_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_search` keyword arguments from the options :func:`add_search_arguments` added (those given)."""
    options = {name: getattr(args, name) for name in SEARCH_OPTIONS if getattr(args, name, None) is not None}
    if getattr(args, "no_cache", False):
        options["cache"] = False
    return options
