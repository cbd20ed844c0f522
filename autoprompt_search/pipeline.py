"""The search as one library call: ``run_search(space, seed=..., out=...)``.

The one place the stages are sequenced: data splits -> candidate pools -> the Optuna study (in
generation rounds) -> ensemble -> scores on test -> exports, each written into the run folder
(:class:`RunFolder`) as soon as it exists, so an interrupted search loses no finished trial.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from autoprompt_search.arguments import positive_number, whole_number
from autoprompt_search.data import checked_seed
from autoprompt_search.errors import UserError
from autoprompt_search.logs import Log, to_stderr
from autoprompt_search.provenance import stamp
from autoprompt_search.ranking import TrialResult
from autoprompt_search.run_folder import DEFAULT_STORAGE, MANIFEST, RESULTS, RunFolder
from autoprompt_search.space_types import MIN_MAX_LENGTH
from autoprompt_search.spaces import SearchSpace, load_space, slug
from autoprompt_search.splits import RunSplits, make_splits

if TYPE_CHECKING:
    from autoprompt_search.model_ensemble import ModelEnsembleResult


@dataclass(frozen=True)
class SearchResult:
    """A finished search: its leaderboard (best first), the summaries of the best prompt, the best
    manual prompt and the ensemble (train+dev, dev and test scores), timings, and its folder."""

    folder: RunFolder
    leaderboard: list[TrialResult] = field(repr=False)
    best: dict[str, Any] = field(repr=False)
    best_manual: dict[str, Any] | None = field(repr=False)
    ensemble: dict[str, Any] = field(repr=False)
    timings: dict[str, float] = field(repr=False)
    splits: RunSplits = field(repr=False)
    space: SearchSpace = field(repr=False)

    def __repr__(self) -> str:
        return (f"SearchResult({self.folder.path}: best {self.best['template']!r} test accuracy {self.best['test']['accuracy']:.4f}, "
                f"ensemble of {len(self.ensemble['members'])} test accuracy {self.ensemble['test']['accuracy']:.4f})")

    @property
    def paths(self) -> dict[str, Path]:
        from autoprompt_search import run_folder

        return {name: self.folder.file(getattr(run_folder, name.upper()))
                for name in ("best", "ensemble", "results", "trials", "predictions", "manifest", "report", "pools")}


def default_run_folder(space: SearchSpace, seed: int) -> Path:
    return Path("results/runs") / f"{space.name}-{slug(space.model)}-seed{seed}"


def run_search(space: str | Path | SearchSpace | Mapping[str, Any], *, seed: int | None = None, out: str | Path | None = None,
               trials: int | None = None, timeout: float | None = None, storage: str | None = None, resume: bool = False,
               model: str | None = None, data: Sequence[Mapping[str, Any]] | Any = None, test_limit: int | None = None,
               max_length: int | None = None, model_kind: str | None = None, device: str = "auto", batch_size: int = 32,
               precision: str = "float32", cache: bool = True, log: Log = to_stderr) -> SearchResult:
    """Search prompts for ``space`` (a YAML path or bundled name, a mapping with the YAML's keys, or a
    :class:`SearchSpace`) on the few-shot sample drawn with ``seed`` (default: the space's first),
    writing the run into ``out`` (default ``results/runs/<space>-<model>-seed<seed>``).

    ``data``: the labelled examples in memory (a list of records or a pandas DataFrame with the
    columns the space's ``dataset`` names) instead of the space's file. ``trials`` (the search
    trials after the manual baselines and the generators' proposals), ``timeout`` and ``model``
    override the space's; ``precision`` is the model's (``bfloat16``: faster where the hardware has
    bfloat16 instructions, recorded in the run and its exports); ``storage`` is an Optuna storage URL or ``journal:PATH`` shared by
    several workers; ``resume`` continues the study in ``out``. Progress goes to ``log`` (stderr
    by default) and to progress bars on stderr.
    """
    seed = None if seed is None else checked_seed(seed)
    trials, test_limit, max_length = (None if value is None else whole_number(value, name, least) for name, value, least in
                                      (("trials", trials, 1), ("test_limit", test_limit, 1), ("max_length", max_length, MIN_MAX_LENGTH)))
    batch_size = whole_number(batch_size, "batch_size", 1)
    timeout = None if timeout is None else positive_number(timeout, "timeout", unit=" of seconds")
    if isinstance(space, SearchSpace):
        loaded = space
    elif isinstance(space, Mapping):
        from autoprompt_search.spaces import space_from_mapping

        loaded = space_from_mapping(space, records=data)
        data = None
    else:
        loaded = load_space(space)
    if data is not None:
        loaded = loaded.with_data(data)
    loaded = loaded.with_overrides(model=model, trials=trials, timeout=timeout)
    if storage and loaded.generators.rounds.count > 1:
        raise UserError(f"{loaded.origin}: generators.rounds.count > 1 needs the run folder's own storage: "
                        "workers sharing a study would each generate rounds of their own", option="storage")
    seed = seed if seed is not None else loaded.few_shot.seeds[0]
    folder = RunFolder(out if out is not None else default_run_folder(loaded, seed))
    options = {"kind": model_kind, "device": device, "batch_size": batch_size, "precision": precision,
               "max_length": max_length if max_length is not None else loaded.max_length}
    job = _SearchJob(loaded, seed, folder, storage=storage, resume=resume, test_limit=test_limit, cache=cache,
                     model_options=options, log=log)
    return job.run()


def run_search_models(space: str | Path | SearchSpace | Mapping[str, Any], models: Sequence[str], *, seed: int | None = None,
                      out: str | Path | None = None, resume: bool = False, data: Sequence[Mapping[str, Any]] | Any = None,
                      device: str = "auto", cache: bool = True, log: Log = to_stderr,
                      on_search: Callable[[SearchResult], None] | None = None, **options: Any) -> ModelEnsembleResult:
    """One search per model of ``models`` on the same few-shot sample (``seed``), each in
    ``out/<model>``, then their ensembles combined into an ensemble of models in ``out`` (default
    ``results/runs/<space>-<model>+<model>-seed<seed>``; see :mod:`autoprompt_search.model_ensemble`).

    ``options`` are :func:`run_search`'s (``trials``, ``test_limit``, ``precision``, ...), the same for
    every model; ``storage`` and ``model`` are not among them. With ``resume`` every model's search
    is resumed as :func:`run_search` resumes one (a finished one is finished again from its study,
    its settings checked against these) and the ensemble of models is written again. ``on_search``
    is called with each finished search."""
    from autoprompt_search.model_ensemble import check_output, combine_runs

    for name in ("storage", "model"):
        if options.get(name) is not None:
            raise UserError(f"{name} cannot be given with models: each model's search has its own folder and study", option=name)
        options.pop(name, None)
    folders = [slug(model) for model in models]
    if len(models) < 2 or len(set(folders)) < len(folders) or {"", ".", ".."} & set(folders):
        raise UserError(f"give at least 2 different models, whose names give different folder names, got {list(models)}", option="models")
    if isinstance(space, SearchSpace):
        loaded = space
    elif isinstance(space, Mapping):
        from autoprompt_search.spaces import space_from_mapping

        loaded, data = space_from_mapping(space, records=data), None
    else:
        loaded = load_space(space)
    if data is not None:
        loaded = loaded.with_data(data)
    seed = checked_seed(seed) if seed is not None else loaded.few_shot.seeds[0]
    root = Path(out) if out is not None else Path("results/runs") / f"{loaded.name}-{'+'.join(folders)}-seed{seed}"
    check_output(root, replace=resume)  # everything the searches could refuse is checked before the first starts
    runs = [RunFolder(root / folder) for folder in folders]
    for run in runs:
        run.check_startable(resume=resume)
    for model, run in zip(models, runs):
        log(f"{model}: search in {run.path}")
        result = run_search(loaded, seed=seed, out=run.path, model=model, resume=resume and run.is_started(), cache=cache,
                            device=device, log=log, **options)
        if on_search is not None:
            on_search(result)
    return combine_runs([run.path for run in runs], root, device=device, cache=cache, replace=resume, space=loaded,
                        records=loaded.dataset.records, log=log)


class _SearchJob:
    """One search run; each method is one stage, and the run folder records all of them."""

    def __init__(self, space: SearchSpace, seed: int, folder: RunFolder, *, storage: str | None, resume: bool,
                 test_limit: int | None, cache: bool, model_options: dict[str, Any], log: Log) -> None:
        self.space, self.seed, self.folder = space, seed, folder
        self.storage, self.resume, self.test_limit, self.cache = storage, resume, test_limit, cache
        self.model_options, self.log = model_options, log
        self.timings: dict[str, float] = {}
        self.began = time.perf_counter()
        self.splits: RunSplits | None = None
        self.backend = self.scorer = self.pools = None

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        from autoprompt_search.fileio import sha256_text

        return {"space_sha256": sha256_text(json.dumps(self.space.identity(self.backend.max_length), sort_keys=True, default=str)),
                "seed": self.seed, "model_weights_sha256": self.backend.weights_hash, "model_kind": self.backend.kind,
                "train_dev_sha256": sha256_text(self.splits.train.content_hash() + self.splits.dev.content_hash()),
                "precision": self.backend.precision}

    def run(self) -> SearchResult:
        import optuna

        from autoprompt_search.backends import load_backend
        from autoprompt_search.cache import SlotCache, default_cache_dir
        from autoprompt_search.candidates.build import build_pools
        from autoprompt_search.scoring import PromptScorer
        from autoprompt_search.search import Progress, PromptSearch
        from autoprompt_search.study import enqueue_manual, finished_trials, open_study

        space = self.space
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial stopped by Ctrl-C is reported by us, without a traceback
        # Everything that can fail on the user's input is checked before the folder is touched.
        self.folder.check_startable(resume=self.resume)
        splits = make_splits(space.dataset, space.few_shot.k, self.seed, self.test_limit, unlabelled=space.unlabelled.texts,
                             unlabelled_file=space.unlabelled.path)
        self.backend = load_backend(space.model, **self.model_options)
        self.splits = splits
        self.scorer = PromptScorer(self.backend, SlotCache(default_cache_dir() if self.cache else None))
        self.timings["setup_seconds"] = time.perf_counter() - self.began
        identity = self.identity()
        stored = self.folder.read_pools() if self.resume else None
        if stored is not None:
            recorded = {"precision": "float32", **stored[1]}  # runs from before the option ran in float32
            changed = [key for key in identity if recorded.get(key) != identity[key]]
            if changed:
                raise UserError(f"{self.folder.path} was started with other settings ({', '.join(changed)} differ); "
                                "resume with the same space, seed, model and precision, or start a new run folder", option="resume")
            self.pools = stored[0]
        else:
            began = time.perf_counter()
            self.pools = build_pools(space, self.scorer, splits.train, splits.dev, log=self.log)
            self.timings["candidates_seconds"] = time.perf_counter() - began
        pools = self.pools

        def study_opened():
            return open_study(self.folder.storage(self.storage), seed=self.seed, pruner=space.pruner.type, resume=self.resume,
                              exclusive=self.storage is None)

        if self.storage is not None:  # a shared storage is opened (and may refuse) before anything is written
            study, created = study_opened()
        self.folder.create()
        self.write_manifest("running")
        if stored is None:
            self.folder.write_pools(pools, identity)
        if self.storage is None:  # the run folder's own SQLite file
            study, created = study_opened()
        if created:
            enqueue_manual(study, pools)
        planned = pools.enqueued + space.budget.trials if space.budget.trials is not None else None
        remaining = None if planned is None else max(0, planned - finished_trials(study))
        self.log(f"search: {len(pools.templates)} templates, {[len(w) for w in pools.words]} word options per label, "
                 f"{len(pools.calibrations)} calibrations; {len(pools.manual)} manual baselines, {len(pools.proposals)} proposals; "
                 f"{'no trial budget' if remaining is None else f'{remaining} trials to run'}")
        search = PromptSearch(self.scorer, pools.scored_train(splits.train), splits.dev, pools, objective=space.objective,
                              pruner=space.pruner.type, chunks=space.pruner.chunks, unlabelled=splits.unlabelled)
        progress = Progress(self.scorer, remaining)
        began, forward_before = time.perf_counter(), self.backend.forward_seconds
        try:
            self.run_rounds(study, search, planned, progress)
            progress.close()
            self.timings["search_seconds"] = time.perf_counter() - began
            self.timings["search_forward_seconds"] = self.backend.forward_seconds - forward_before
            return self.finish(study, search) if self.storage is None else self.finish_shared(study, search)
        except KeyboardInterrupt:  # in the trials or while finishing: every finished trial is in the study
            progress.close()
            self.write_manifest("interrupted")
            self.log(f"interrupted: {finished_trials(study)} finished trials are saved in {self.folder.path}; "
                     "continue by resuming (--resume)")
            raise

    def finish_shared(self, study, search) -> SearchResult:
        """Every worker of a shared study finishes it the same way: once no other worker is still
        scoring a trial and no retried trial waits (it runs those itself), from the whole study,
        again if trials finished while it was finishing. The outputs depend only on the finished
        trials, so every worker writes the same files."""
        from autoprompt_search.study import finished_trial_numbers, wait_for_running_trials, waiting_trials

        while True:
            waited = wait_for_running_trials(study)
            if waited:
                self.log(f"waited {waited:.0f} s for the other workers' running trials")
            if waiting_trials(study):  # a cut-off trial retried meanwhile: scored before finishing
                search.run(study, 0, None, shared=True)
                continue
            finished = finished_trial_numbers(study)
            result = self.finish(study, search)
            if finished_trial_numbers(study) == finished:
                return result
            self.log("other workers finished trials meanwhile: finishing again with them")

    def run_rounds(self, study, search, planned: int | None, progress) -> None:
        """The trials, with one more word-generation round after every ``generators.rounds.trials``
        search trials (or earlier, once the sampler only repeats itself), up to ``count`` rounds."""
        from autoprompt_search.candidates.build import next_round
        from autoprompt_search.study import finished_trials, leaderboard

        rounds, timeout = self.space.generators.rounds, self.space.budget.timeout_seconds
        began = time.perf_counter()
        while True:
            latest = search.pools.rounds - 1
            boundary = search.pools.enqueued + (latest + 1) * rounds.trials if latest + 1 < rounds.count else None
            target = planned if boundary is None else (boundary if planned is None else min(planned, boundary))
            left = None if timeout is None else timeout - (time.perf_counter() - began)
            if left is not None and left <= 0:
                return
            search.run(study, target, left, [progress], shared=self.storage is not None)
            out_of_time = timeout is not None and time.perf_counter() - began >= timeout
            if boundary is None or out_of_time or (planned is not None and finished_trials(study) >= planned):
                return
            self.pools = next_round(self.space, self.scorer, self.splits.train, search.pools, leaderboard(study), log=self.log)
            self.folder.write_pools(self.pools, self.identity())
            search.use_pools(self.pools)

    def finish(self, study, search) -> SearchResult:
        """Rank, ensemble, score on test, and write every output file."""
        from autoprompt_search.finish import finish_search
        from autoprompt_search.report import write_report
        from autoprompt_search.study import leaderboard

        board = leaderboard(study)
        if not board:
            raise UserError("the search finished no trial: raise the trial budget or the timeout")
        began, forward_before = time.perf_counter(), self.backend.forward_seconds
        finished = finish_search(board, search, self.scorer, self.space, self.splits, seed=self.seed, log=self.log)
        self.timings["test_seconds"] = time.perf_counter() - began
        self.timings["test_forward_seconds"] = self.backend.forward_seconds - forward_before
        self.timings["total_seconds"] = time.perf_counter() - self.began
        self.timings["forward_seconds"] = self.backend.forward_seconds
        provenance = stamp()
        finished.write_exports(self.folder, self.model_info(), self.dataset_info(), provenance)
        self.folder.write_trials(study)
        self.folder.write_json(RESULTS, {**finished.summary, "dataset": self.dataset_info(), "timings": self.timings,
                                         "objective": self.space.objective, "provenance": provenance})
        finished.write_predictions(self.folder)
        self.write_manifest("complete", study=study)
        self.log(f"report: {write_report(self.folder.path)}")
        summary = finished.summary
        return SearchResult(self.folder, board, summary["best"], summary["best_manual"], summary["ensemble"], dict(self.timings),
                            self.splits, self.space)

    def model_info(self):
        from autoprompt_search.prompt import ModelInfo

        return ModelInfo(self.space.model, self.backend.kind, self.backend.weights_hash, str(self.backend.path), self.backend.max_length,
                         precision=self.backend.precision)

    def dataset_info(self) -> dict[str, Any]:
        return {"name": self.space.dataset.name, **self.splits.describe()}

    def write_manifest(self, status: str, study=None) -> None:
        pools = self.pools
        manifest = {
            "status": status, "seed": self.seed, "space": self.space.to_dict(),
            "dataset": self.dataset_info() if self.splits is not None else None,
            "model": self.model_info().__dict__ if self.backend is not None else None,
            "storage": self.storage or DEFAULT_STORAGE,
            "cache": ({"hits": self.scorer.cache.hits, "misses": self.scorer.cache.misses,
                       "forward_passes": self.backend.forward_passes, "sequences": self.backend.sequences_processed}
                      if self.scorer is not None else None),
            "pools": (pools.origins | {"sizes": {"templates": len(pools.templates), "words": [len(w) for w in pools.words]}}
                      if pools is not None else None),
            "trials": ({"finished": len(study.trials)} if study is not None else None),
            "timings": self.timings, "provenance": stamp(),
        }
        self.folder.write_json(MANIFEST, manifest)
