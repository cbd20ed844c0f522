"""The search on a bundled space for the five LM-BFF seeds: best manual prompt, searched single
prompt and ensemble on the held-out test split, per seed and on average.

Writes ``results/benchmarks/search_<space>.json``. Each seed's run folder (with its own
manifest) stays under ``results/runs/bench-<space>-seed<S>``; an existing complete run is read
again rather than redone, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

from autoprompt_search.cli.main import main as cli
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp

METHODS = ("best_manual", "best", "ensemble")


def run_seed(space: Path, seed: int, out: Path, extra: list[str]) -> dict:
    manifest = out / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("status") == "complete":
        return json.loads((out / "results.json").read_text())
    resume = ["--resume"] if (out / "study.db").exists() else []
    began = time.perf_counter()
    code = cli(["search", str(space), "--seed", str(seed), "--out", str(out), *resume, *extra])
    if code != 0:
        raise SystemExit(f"seed {seed}: search failed with exit code {code}")
    results = json.loads((out / "results.json").read_text())
    results["wall_seconds"] = time.perf_counter() - began
    return results


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (None without values: no seed had such a prompt)."""
    if not values:
        return {"mean": None, "std": None, "per_seed": []}
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "per_seed": values}


@functools.cache
def scorer_for(model: str, max_length: int):
    """A scorer of ``model`` with prompts cut to ``max_length`` tokens, one per setting (memoised)."""
    from autoprompt_search.backends import load_backend
    from autoprompt_search.cache import SlotCache, default_cache_dir
    from autoprompt_search.scoring import PromptScorer

    return PromptScorer(load_backend(model, max_length=max_length), SlotCache(default_cache_dir()))


def scored_as_trial(search, test, source: str, verbalizer) -> dict:
    """A template with fixed words under each calibration of ``search``'s pools, each scored on
    train+dev exactly as a trial is (:meth:`PromptSearch.evaluate`: calibration fitted on the
    scored train examples) and on ``test``; the calibration the study's ranking picks."""
    from autoprompt_search.search import ranking_key
    from autoprompt_search.templates import Template

    pools, scorer = search.pools, search.scorer
    evaluated = {method: search.evaluate(pools.params_for(source, verbalizer, method)) for method in pools.calibrations}
    prepared = scorer.prepare(Template.parse(source, fields=test.fields), [e.fields for e in test.examples])
    gold = [test.labels.index(e.label) for e in test.examples]
    tests = scorer.score_variants(prepared, [(verbalizer, fitted) for _, _, fitted in evaluated.values()], gold)
    by_calibration, keys = {}, {}
    for (method, (result, _, _)), on_test in zip(evaluated.items(), tests):
        by_calibration[method] = {"train_dev_accuracy": result.accuracy, "train_dev_margin": result.mean_margin,
                                  "test_accuracy": on_test.accuracy}
        value = result.accuracy if search.objective == "accuracy" else result.macro_f1
        keys[method] = ranking_key(value, result.mean_margin, source, verbalizer.to_dict(), method)
    chosen = min(keys, key=keys.get)
    return {"template": source, "calibration": chosen, **by_calibration[chosen], "by_calibration": by_calibration}


def trigger_base(search: dict) -> str | None:
    """The template a recorded trigger search inserted its ``[T]`` slots into; None for a template
    the space wrote with them. Runs made before the search recorded it: its template without the
    slots, which is what the generator inserted."""
    if "base" in search:
        return search["base"]
    return search["template"].replace(" [T]", "").replace("[T] ", "")


class RunOnTest:
    """A finished run's leaderboard, with any of its trials scored on the run's own test split.

    The test split is loaded again and checked against the hash the run recorded; scoring uses
    the run's model and prompt length and goes through the slot cache, so a template the run
    already scored on test costs no forward pass."""

    def __init__(self, run: Path) -> None:
        import optuna

        from autoprompt_search import data
        from autoprompt_search.search import STUDY_NAME, leaderboard
        from autoprompt_search.spaces import load_space

        manifest = json.loads((run / "manifest.json").read_text())
        self.run, self.scorer = run, scorer_for(manifest["model"]["name"], manifest["model"]["max_length"])
        if self.scorer.backend.weights_hash != manifest["model"]["weights_sha256"]:
            raise SystemExit(f"{run}: the model's weights differ from the ones the run recorded")
        self.pools = json.loads((run / "pools.json").read_text())
        self.space = manifest["space"]
        recorded = manifest["dataset"]
        space = load_space(self.space["source"])
        test = data.load_split(space.dataset.spec, "test", **space.dataset.load_kwargs())
        if recorded.get("test_limit"):
            # Runs made before TEST_SAMPLE_SEED existed sampled their test split with the run's own seed.
            test = data.sample(test, recorded["test_limit"], recorded.get("test_sample_seed", manifest["seed"]))
        if test.content_hash() != recorded["splits"]["test"]["content_hash"]:
            raise SystemExit(f"{run}: the test split differs from the one the run recorded")
        self.test = test
        self.train, self.dev = data.few_shot(data.load_split(space.dataset.spec, "train_pool", **space.dataset.load_kwargs()),
                                             recorded["k"], manifest["seed"])
        for name, split in (("train", self.train), ("dev", self.dev)):
            if split.content_hash() != recorded["splits"][name]["content_hash"]:
                raise SystemExit(f"{run}: the {name} split differs from the one the run recorded")
        self.gold = [test.labels.index(e.label) for e in test.examples]
        study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{(run / 'study.db').resolve()}")
        self.board = leaderboard(study)
        self._prepared: dict[str, object] = {}

    def best(self, keep):
        """The best-ranked trial that ``keep`` accepts (the study's own order), or None."""
        return next((result for result in self.board if keep(result)), None)

    def on_test(self, result) -> dict | None:
        from autoprompt_search.templates import Template
        from autoprompt_search.verbalizers import Verbalizer

        if result is None:
            return None
        if result.template not in self._prepared:
            texts = [e.fields for e in self.test.examples]
            self._prepared[result.template] = self.scorer.prepare(Template.parse(result.template, fields=self.test.fields), texts)
        score = self.scorer.score(self._prepared[result.template], Verbalizer.parse(result.verbalizer, self.test.labels),
                                  self.gold, calibration=result.calibration)
        return {"trial": result.number, "template": result.template, "verbalizer": result.verbalizer,
                "calibration": result.calibration.method, "train_dev_accuracy": result.accuracy,
                "test_accuracy": score.accuracy, "test_macro_f1": score.macro_f1, "test_n": len(self.gold)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--space", default="search_spaces/mr.yaml")
    parser.add_argument("--seeds", default="13,21,42,87,100")
    parser.add_argument("--runs", default="results/runs")
    parser.add_argument("--out", help="default: results/benchmarks/search_<space>.json")
    args, extra = parser.parse_known_args()
    space = Path(args.space)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    for seed in seeds:
        per_seed[seed] = run_seed(space, seed, Path(args.runs) / f"bench-{space.stem}-seed{seed}", extra)
        print(f"seed {seed}: " + "  ".join(f"{m} {per_seed[seed][m]['test']['accuracy']:.4f}" for m in METHODS if per_seed[seed][m]),
              flush=True)
    summary = {}
    for method in METHODS:
        accuracies = [per_seed[s][method]["test"]["accuracy"] for s in seeds if per_seed[s][method]]
        f1s = [per_seed[s][method]["test"]["macro_f1"] for s in seeds if per_seed[s][method]]
        summary[method] = {"test_accuracy_mean": statistics.mean(accuracies), "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                           "test_macro_f1_mean": statistics.mean(f1s), "per_seed": dict(zip(map(str, seeds), accuracies))}
    beats = {method: {str(s): per_seed[s][method]["test"]["accuracy"] > per_seed[s]["best_manual"]["test"]["accuracy"] for s in seeds}
             for method in ("best", "ensemble")}
    report = {
        "benchmark": "search", "space": str(space), "seeds": seeds, "summary": summary, "beats_best_manual": beats,
        "timings": {str(s): per_seed[s]["timings"] for s in seeds},
        "runs": {str(s): str(Path(args.runs) / f"bench-{space.stem}-seed{s}") for s in seeds},
        "per_seed": {str(s): {m: per_seed[s][m] for m in METHODS} for s in seeds},
        "provenance": stamp(),
    }
    out = Path(args.out or f"results/benchmarks/search_{space.stem}.json")
    atomic_write_json(out, report)
    for method in METHODS:
        print(f"{method:<12} test accuracy {summary[method]['test_accuracy_mean']:.4f} ± {summary[method]['test_accuracy_std']:.4f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
