"""``autoprompt-search search``: the main job. Wires data -> candidates -> scorer -> search ->
ensemble -> export for one search space and one few-shot seed, into one run folder."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from autoprompt_search.cli.options import add_model_options, model_options, slot_cache

TEST_SAMPLE_SEED = 0  # --test-limit draws its sample with this seed, whatever the few-shot seed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="search prompts for a dataset and a frozen model",
                                   description="Run a prompt search described by a search-space YAML file.")
    parser.add_argument("space", help="search space YAML, e.g. search_spaces/mr.yaml")
    add_model_options(parser, default=None)
    parser.add_argument("--trials", type=int, help="search trials after the manual baselines (overrides budget.trials)")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--seed", type=int, help="few-shot sampling and sampler seed (default: the space's first seed)")
    parser.add_argument("--out", help="run folder (default: results/runs/<space>-<model>-seed<seed>)")
    parser.add_argument("--storage", help="Optuna storage: an RDB URL (sqlite:///…, postgresql://…) or journal:PATH "
                                          "for several local processes (default: sqlite in the run folder)")
    parser.add_argument("--resume", action="store_true", help="continue the study in the run folder")
    parser.add_argument("--test-limit", type=int, help="score only a sample of this many test examples (the same sample for every seed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoprompt_search.errors import UserError
    from autoprompt_search.spaces import load_space

    if args.trials is not None and args.trials < 0:
        raise UserError("--trials must be 0 or more")
    space = load_space(args.space).with_overrides(model=args.model, trials=args.trials, timeout=args.timeout)
    if args.storage and space.generators.rounds.count > 1:
        raise UserError(f"{space.source}: generators.rounds.count > 1 needs the run folder's own storage (no --storage): "
                        "workers sharing a study would each generate rounds of their own")
    seed = args.seed if args.seed is not None else space.few_shot.seeds[0]
    out = Path(args.out) if args.out else Path("results/runs") / f"{space.name}-{_slug(space.model)}-seed{seed}"
    job = SearchJob(space, seed, out, args)
    return job.run()


class SearchJob:
    """One search run; each method is one stage, and the run folder records all of them."""

    def __init__(self, space, seed: int, out: Path, args: argparse.Namespace) -> None:
        self.space, self.seed, self.out, self.args = space, seed, out, args
        self.timings: dict[str, float] = {}
        self.began = time.perf_counter()

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        from autoprompt_search.backends import DEFAULT_MAX_LENGTH
        from autoprompt_search.fileio import sha256_text

        space = {key: value for key, value in self.space.to_dict().items() if key not in ("overrides", "budget", "source")}
        for name in ("label_probe", "triggers", "demonstrations"):  # off: the identity of runs made before these generators existed
            if not space["generators"][name]["enabled"]:
                del space["generators"][name]
        if space["generators"]["rounds"]["count"] == 1:  # likewise for one round, as before rounds existed
            del space["generators"]["rounds"]
        space["max_length"] = self.backend.max_length  # the space's or --max-length's, as the backend applies it
        if space["max_length"] == DEFAULT_MAX_LENGTH:  # as before spaces could set it
            del space["max_length"]
        return {"space_sha256": sha256_text(json.dumps(space, sort_keys=True, default=str)), "seed": self.seed,
                "model_weights_sha256": self.backend.weights_hash, "model_kind": self.backend.kind,
                "train_dev_sha256": sha256_text(self.train.content_hash() + self.dev.content_hash())}

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def run(self) -> int:
        from autoprompt_search import data
        from autoprompt_search.backends import load_backend
        from autoprompt_search.errors import UserError
        from autoprompt_search.fileio import atomic_write_json
        from autoprompt_search.scoring import PromptScorer
        from autoprompt_search.candidates.demonstrations import scored_train
        from autoprompt_search.candidates.pools import build_pools
        from autoprompt_search.search import Pools, Progress, PromptSearch, enqueue_manual, finished_trials, open_study

        space, args = self.space, self.args
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial stopped by Ctrl-C is reported by us, without a traceback
        if self.out.exists() and any(self.out.iterdir()) and not args.resume:
            raise UserError(f"run folder {self.out} is not empty: pass --resume to continue it, or --out for a new run")
        self.out.mkdir(parents=True, exist_ok=True)
        dataset = space.dataset
        pool = data.load_split(dataset.spec, "train_pool", **dataset.load_kwargs())
        test = data.load_split(dataset.spec, "test", **dataset.load_kwargs())
        if args.test_limit:  # the same sample for every few-shot seed: comparable runs and shared cache entries
            test = data.sample(test, args.test_limit, TEST_SAMPLE_SEED)
        self.train, self.dev = data.few_shot(pool, space.few_shot.k, self.seed)
        self.test = test
        self.backend = load_backend(space.model, **{**model_options(args), "max_length": args.max_length or space.max_length})
        self.scorer = PromptScorer(self.backend, slot_cache(args))
        self.timings["setup_seconds"] = time.perf_counter() - self.began
        self.write_manifest("running")

        pools_path = self.out / "pools.json"
        identity = self.identity()
        if args.resume and pools_path.exists():
            stored = json.loads(pools_path.read_text())
            changed = [key for key in identity if stored.get("run", {}).get(key) != identity[key]]
            if changed:
                raise UserError(f"--resume: {self.out} was started with other settings ({', '.join(changed)} differ); "
                                "resume with the same space, seed and model, or start a new run with --out")
            pools = Pools.from_dict(stored)
        else:
            began = time.perf_counter()
            pools = build_pools(space, self.scorer, self.train, self.dev, log=self.log)
            self.timings["candidates_seconds"] = time.perf_counter() - began
            atomic_write_json(pools_path, {**pools.to_dict(), "run": identity})
        self.pools = pools
        study, created = open_study(_storage(args.storage, self.out), seed=self.seed, pruner=space.pruner.type,
                                    resume=args.resume, exclusive=args.storage is None)
        if created:
            enqueue_manual(study, pools)
        planned = pools.enqueued + space.budget.trials if space.budget.trials is not None else None
        remaining = None if planned is None else max(0, planned - finished_trials(study))
        self.log(f"search: {len(pools.templates)} templates, {[len(w) for w in pools.words]} word options per label, "
                 f"{len(pools.calibrations)} calibrations; {len(pools.manual)} manual baselines, {len(pools.proposals)} proposals; "
                 f"{'no trial budget' if remaining is None else f'{remaining} trials to run'}")
        self.scored_train = scored_train(self.train, pools.origins)
        search = PromptSearch(self.scorer, self.scored_train, self.dev, pools, objective=space.objective,
                              pruner=space.pruner.type, chunks=space.pruner.chunks)
        progress = Progress(self.scorer, remaining)
        began, forward_before = time.perf_counter(), self.backend.forward_seconds
        try:
            self.run_rounds(study, search, planned, progress)
        except KeyboardInterrupt:
            progress.close()
            self.write_manifest("interrupted")
            self.log(f"interrupted: {finished_trials(study)} finished trials are saved in {self.out}; continue with --resume")
            raise
        progress.close()
        self.timings["search_seconds"] = time.perf_counter() - began
        self.timings["search_forward_seconds"] = self.backend.forward_seconds - forward_before
        self.finish(study, search)
        return 0

    def run_rounds(self, study, search, planned: int | None, progress) -> None:
        """The trials, with one more word-generation round after every ``generators.rounds.trials``
        search trials (or earlier, once the sampler only repeats itself), up to ``count`` rounds."""
        from autoprompt_search.candidates.pools import next_round
        from autoprompt_search.fileio import atomic_write_json
        from autoprompt_search.search import finished_trials, leaderboard

        rounds, timeout = self.space.generators.rounds, self.space.budget.timeout_seconds
        began = time.perf_counter()
        while True:
            latest = search.pools.rounds - 1
            boundary = search.pools.enqueued + (latest + 1) * rounds.trials if latest + 1 < rounds.count else None
            target = planned if boundary is None else (boundary if planned is None else min(planned, boundary))
            left = None if timeout is None else timeout - (time.perf_counter() - began)
            if left is not None and left <= 0:
                return
            search.run(study, target, left, [progress])
            out_of_time = timeout is not None and time.perf_counter() - began >= timeout
            if boundary is None or out_of_time or (planned is not None and finished_trials(study) >= planned):
                return
            pools = next_round(self.space, self.scorer, self.train, search.pools, leaderboard(study), log=self.log)
            atomic_write_json(self.out / "pools.json", {**pools.to_dict(), "run": self.identity()})
            search.use_pools(pools)
            self.pools = pools

    def finish(self, study, search) -> None:
        """Rank, ensemble, score on test, and write every output file."""
        import torch

        from autoprompt_search.ensemble import combine_probabilities, fit_weights, select_members
        from autoprompt_search.errors import UserError
        from autoprompt_search.scoring import evaluate_scores
        from autoprompt_search.search import leaderboard

        board = leaderboard(study)
        if not board:
            raise UserError("the search finished no trial: raise --trials or --timeout")
        began, forward_before = time.perf_counter(), self.backend.forward_seconds
        best = board[0]
        manual = [result for result in board if result.manual]
        members = select_members(board, self.space.ensemble.size, self.space.ensemble.prompts_per_template, key=lambda r: r.template)
        chosen = {id(r): r for r in [best, *manual[:1], *members]}
        few_shot = {key: search.evaluate(result.params) for key, result in chosen.items()}  # cached: no forward pass
        fit = fit_weights([few_shot[id(m)][0].probabilities for m in members], search.gold, seed=self.seed)
        test_gold = [self.test.labels.index(e.label) for e in self.test.examples]
        test_scores = self.score_results(chosen, self.test, test_gold)

        def combined(scores, gold):
            probabilities = combine_probabilities([scores[id(m)].probabilities for m in members], fit.weights)
            return evaluate_scores(torch.log(torch.from_numpy(probabilities)), gold)

        selection = {key: scores for key, (scores, _, _) in few_shot.items()}
        dev = {key: scores for key, (_, scores, _) in few_shot.items()}
        dev_rows = slice(len(search.train), len(search.gold))
        self.timings["test_seconds"] = time.perf_counter() - began
        self.timings["test_forward_seconds"] = self.backend.forward_seconds - forward_before
        self.timings["total_seconds"] = time.perf_counter() - self.began
        self.timings["forward_seconds"] = self.backend.forward_seconds

        def entry(result) -> dict[str, Any]:
            key = id(result)
            return {"trial": result.number, "template": result.template, "verbalizer": result.verbalizer,
                    "calibration": result.calibration.method, "train_dev": selection[key].summary(),
                    "dev": dev[key].summary(), "test": test_scores[key].summary()}

        ensemble_all = combined(selection, search.gold)
        ensemble_test = combined(test_scores, test_gold)
        ensemble_dev = evaluate_scores(torch.log(torch.from_numpy(combine_probabilities(
            [selection[id(m)].probabilities[dev_rows] for m in members], fit.weights))), search.gold[dev_rows])
        summary = {
            "best": entry(best),
            "best_manual": entry(manual[0]) if manual else None,
            "ensemble": {"members": [entry(m) for m in members], "weights": list(fit.weights),
                         "train_dev": ensemble_all.summary(), "dev": ensemble_dev.summary(), "test": ensemble_test.summary()},
        }
        self.write_outputs(study, best, members, fit, selection, test_scores, summary)
        self.write_predictions(test_gold, test_scores[id(best)], ensemble_test)
        self.write_manifest("complete", study=study)
        from autoprompt_search.report import write_report

        self.log(f"report: {write_report(self.out)}")
        self.print_leaderboard(board, summary)

    def score_results(self, results: dict[int, Any], dataset, gold) -> dict[int, Any]:
        """Prompts on a split, one template at a time: all the verbalizers and calibrations of a
        template are read from one pass of the model over the split."""
        from autoprompt_search.verbalizers import Verbalizer

        by_template: dict[str, list[int]] = {}
        for key, result in results.items():
            by_template.setdefault(result.template, []).append(key)
        scores = {}
        for number, (source, keys) in enumerate(by_template.items(), 1):
            self.log(f"test: template {number}/{len(by_template)} ({len(keys)} prompts) on {len(dataset)} examples")
            prepared = self.scorer.prepare(self._template(source), [e.fields for e in dataset.examples])
            variants = [(Verbalizer.parse(results[key].verbalizer, dataset.labels), results[key].calibration) for key in keys]
            scores.update(zip(keys, self.scorer.score_variants(prepared, variants, gold)))
        return scores

    def _template(self, source: str):
        from autoprompt_search.templates import Template

        return Template.parse(source, fields=self.dev.fields)

    def spec(self, result):
        from autoprompt_search.prompt import PromptSpec

        return PromptSpec(result.template, result.verbalizer, tuple(self.dev.labels), tuple(self.dev.fields), result.calibration)

    def model_info(self):
        from autoprompt_search.prompt import ModelInfo

        return ModelInfo(self.space.model, self.backend.kind, self.backend.weights_hash, str(self.backend.path), self.backend.max_length)

    def dataset_info(self) -> dict[str, Any]:
        return {"name": self.space.dataset.name, "k": self.space.few_shot.k, "seed": self.seed,
                "splits": {name: {"n": len(split), "content_hash": split.content_hash()}
                           for name, split in (("train", self.train), ("dev", self.dev), ("test", self.test))},
                "test_limit": self.args.test_limit, "test_sample_seed": TEST_SAMPLE_SEED if self.args.test_limit else None}

    def write_outputs(self, study, best, members, fit, few_shot_scores, test_scores, summary) -> None:
        from autoprompt_search.export import write_ensemble, write_prompt
        from autoprompt_search.fileio import atomic_write_json, atomic_write_text
        from autoprompt_search.provenance import stamp

        provenance = stamp()
        batch_size = self.backend.batch_size
        tokenizer = self.backend.tokenizer

        def word_ids(result):
            ids = self.scorer.word_ids(self._template(result.template), self.spec(result).parsed()[1])
            return {label: [list(w) for w in words] for label, words in zip(self.dev.labels, ids)}

        write_prompt(self.out / "best.json", self.spec(best), self.model_info(),
                     scores={"train_dev": few_shot_scores[id(best)].summary(), "test": test_scores[id(best)].summary()},
                     dataset=self.dataset_info(), provenance=provenance, word_token_ids=word_ids(best),
                     batch_size=batch_size, chunk_size=self.scorer.chunk_size, tokenizer=tokenizer)
        write_ensemble(self.out / "ensemble.json",
                       [(self.spec(m), w, {"train_dev": few_shot_scores[id(m)].summary(), "test": test_scores[id(m)].summary()})
                        for m, w in zip(members, fit.weights)],
                       self.model_info(), scores={"train_dev": summary["ensemble"]["train_dev"], "test": summary["ensemble"]["test"]},
                       dataset=self.dataset_info(), provenance=provenance, weights_fit=fit.to_dict(), batch_size=batch_size,
                       chunk_size=self.scorer.chunk_size, word_token_ids=[word_ids(m) for m in members], tokenizer=tokenizer)
        atomic_write_text(self.out / "trials.csv", _trials_csv(study))
        atomic_write_json(self.out / "results.json", {**summary, "dataset": self.dataset_info(), "timings": self.timings,
                                                      "objective": self.space.objective, "provenance": provenance})

    def write_predictions(self, gold: list[int], best, ensemble) -> None:
        """Per test example (in the order of the test split that results.json hashes): its text,
        the gold label, and the predicted label and class probabilities of the best prompt and of the ensemble."""
        from autoprompt_search.fileio import atomic_write_text
        from autoprompt_search.report import PREDICTIONS_NAME

        labels, fields = self.test.labels, self.test.fields
        ours = {"test_row", "gold", "best", "ensemble"}
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["test_row", *(f"field_{f}" if f in ours or "_p_" in f else f for f in fields), "gold", "best", "ensemble",
                         *(f"best_p_{label}" for label in labels), *(f"ensemble_p_{label}" for label in labels)])
        for row, (example, gold_index) in enumerate(zip(self.test.examples, gold)):
            writer.writerow([row, *(example.fields[field] for field in fields), labels[gold_index], labels[best.predictions[row]],
                             labels[ensemble.predictions[row]], *(f"{p:.6g}" for p in best.probabilities[row]),
                             *(f"{p:.6g}" for p in ensemble.probabilities[row])])
        atomic_write_text(self.out / PREDICTIONS_NAME, buffer.getvalue())

    def write_manifest(self, status: str, study=None) -> None:
        from autoprompt_search.fileio import atomic_write_json
        from autoprompt_search.provenance import stamp

        manifest = {
            "status": status, "seed": self.seed, "space": self.space.to_dict(),
            "dataset": self.dataset_info() if hasattr(self, "train") else None,
            "model": self.model_info().__dict__ if hasattr(self, "backend") else None,
            "storage": self.args.storage or "sqlite (study.db in this folder)",
            "cache": ({"hits": self.scorer.cache.hits, "misses": self.scorer.cache.misses,
                       "forward_passes": self.backend.forward_passes, "sequences": self.backend.sequences_processed}
                      if hasattr(self, "scorer") else None),
            "pools": (self.pools.origins | {"sizes": {"templates": len(self.pools.templates), "words": [len(w) for w in self.pools.words]}}
                      if hasattr(self, "pools") else None),
            "trials": ({"finished": len(study.trials)} if study is not None else None),
            "timings": self.timings, "provenance": stamp(),
        }
        atomic_write_json(self.out / "manifest.json", manifest)

    def print_leaderboard(self, board, summary, rows: int = 10) -> None:
        print(f"\nLeaderboard ({self.space.name}, {self.space.model}, seed {self.seed}; dev n={len(self.dev)}, test n={len(self.test)})")
        print(f"{'#':>3} {'trial':>5} {'score':>6} {'dev':>6} {'margin':>7} {'cal':<10} {'verbalizer':<34} template   "
              f"(score: {self.space.objective} on train+dev, n={len(self.scored_train) + len(self.dev)})")
        for rank, result in enumerate(board[:rows], 1):
            verbalizer = ", ".join("/".join(words) for words in result.verbalizer.values())
            template = result.template.replace("\n", "\\n")
            print(f"{rank:>3} {result.number:>5} {result.objective:>6.3f} {result.dev_accuracy:>6.3f} {result.mean_margin:>7.3f} {result.calibration.method:<10} "
                  f"{verbalizer[:34]:<34} {template[:70]}{' (manual)' if result.manual else ''}")
        print()
        for name in ("best_manual", "best", "ensemble"):
            entry = summary[name]
            if entry:
                print(f"{name:<12} train+dev accuracy {entry['train_dev']['accuracy']:.4f}   test accuracy {entry['test']['accuracy']:.4f}   "
                      f"test macro-F1 {entry['test']['macro_f1']:.4f}")
        print(f"\nwrote {self.out}/best.json, ensemble.json, results.json, trials.csv, test_predictions.csv, manifest.json, report.html "
              f"({self.timings['total_seconds']:.0f} s, of which forward passes {self.timings['forward_seconds']:.0f} s)")


def _storage(url: str | None, out: Path):
    """The run folder's SQLite file, a journal file (journal:PATH) or an RDB URL with heartbeats,
    so that trials of a worker that died are failed and retried once."""
    from autoprompt_search.errors import UserError

    if not url:
        return f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        if url.startswith("journal:"):
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            return JournalStorage(JournalFileBackend(url[len("journal:"):]))
        from optuna.storages import RDBStorage, RetryFailedTrialCallback

        return RDBStorage(url, heartbeat_interval=60, grace_period=180, failed_trial_callback=RetryFailedTrialCallback(max_retry=1))
    except Exception as error:  # a malformed URL, a missing driver or folder, an unreachable server
        raise UserError(f"--storage {url}: cannot open it ({type(error).__name__}: {error})") from None


def _trials_csv(study) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "state", "value", "accuracy", "macro_f1", "mean_margin", "calibration", "manual",
                     "template", "verbalizer", "seconds", "repeat_of"])
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete and trial.datetime_start else ""
        writer.writerow([trial.number, trial.state.name, "" if trial.value is None else trial.value, attrs.get("accuracy", ""),
                         attrs.get("macro_f1", ""), attrs.get("mean_margin", ""), trial.params.get("calibration", ""),
                         bool(attrs.get("manual", False)), attrs.get("template_text", ""),
                         json.dumps(attrs.get("verbalizer", "")), seconds, attrs.get("repeat_of", "")])
    return buffer.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(text).name if "/" in text else text).strip("-")
