"""Quality across the bundled datasets: every method, 16-shot, the five LM-BFF seeds.

For each dataset (mr, subj, rt, bbc, tweets) and seed it runs, or reads back when complete, these
searches into ``results/runs/quality/``:

- ``<dataset>``: the bundled space ``search_spaces/<dataset>.yaml`` at its default budget;
- ``<dataset>_gradient``: the same space with the gradient-guided generators of
  ``search_spaces/mr_gradient.yaml`` (HotFlip triggers and probe label words) switched on;
- ``<dataset>_plain``, only where the space shows demonstrations (``mr``): the same space with
  ``generators.demonstrations`` off, the ablation of the table's second part.

Methods, all scored on the same held-out test sample for every seed (``--test-limit``):

- ``manual_zero_shot``: the space's first manual prompt (first seed template, first seed
  verbalizer), uncalibrated: chosen without any label, as a zero-shot user would;
- ``manual_calibrated``: the best manual prompt (seed template x seed verbalizer) with contextual
  or prior calibration, chosen on train+dev by the study's ranking;
- ``label_words``: LM-BFF's automatic label words on the manual templates: the best combination of
  words the model's own slot distribution proposed (LM-BFF / PETAL scoring; no seed word), over
  the seed templates and calibrations, chosen on train+dev as a trial is (see best_generated_words);
- ``gradient``: the best trial of the gradient search on a template with searched triggers (its
  words from that search's pool, where the probe's words join the others);
- ``search``: the best single prompt of the full search;
- ``ensemble``: the full search's weighted ensemble.

Two ablation tables follow the main one: demonstrations on and off (``<dataset>_plain``), and the
gradient-guided generators on and off (``<dataset>_gradient``'s own best prompt and ensemble against
the full search's).

The first three come from the full search's run (its manual baselines and its cached
distributions), so they share that run's wall time and forward passes. Writes ``results/benchmarks/quality.json`` and
``results/benchmarks/quality.md`` and puts that table into README.md between its markers; each
run's manifest and results are copied to ``results/benchmarks/quality_runs/<run>/``. A method
or dataset that was not run is shown as such; ``--datasets``/``--methods`` run a part, and the
table is always built from every complete run on disk.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path

import yaml

from autoprompt_search.analysis import BENCHMARK_DATASETS as DATASETS
from autoprompt_search.analysis import BENCHMARK_SEEDS as SEEDS
from autoprompt_search.analysis import FinishedRun, mean_std, search_seed
from autoprompt_search.assets import DEFAULT_MODEL, model_weights_hash, resolve_model
from autoprompt_search.backends import DEFAULT_MAX_LENGTH, PRECISION_CHOICES
from autoprompt_search.candidates.pools import word_param
from autoprompt_search.fileio import atomic_write_json, atomic_write_text
from autoprompt_search.provenance import stamp
from autoprompt_search.ranking import TrialResult, ranking_key
from autoprompt_search.run_folder import MANIFEST, RESULTS, RunFolder
from autoprompt_search.spaces import load_space

METHODS = {
    "manual_zero_shot": "first manual prompt, zero-shot",
    "manual_calibrated": "best manual prompt, calibrated",
    "label_words": "seed templates, distribution-scored words",
    "gradient": "searched triggers (pool words)",
    "search": "full search, best single prompt",
    "ensemble": "full search, weighted ensemble",
}
PLAIN_METHODS = ("search", "ensemble")  # read from the <dataset>_plain runs, as plain_search and plain_ensemble
FROM_FULL_SEARCH = ("manual_zero_shot", "manual_calibrated", "label_words", "search", "ensemble")
# Published anchors (RoBERTa-large, 355M parameters, their own splits of MR): the figures our MR row sits beside.
ANCHORS = {"mr": [("LM-BFF, prompt-based zero-shot (RoBERTa-large)", 0.808), ("RLPrompt (RoBERTa-large)", 0.871)]}
GENERATED_OPTIONS = 5  # per label, for the label_words method's combinations (5^C per template and calibration)...
MAX_COMBINATIONS = 243  # ...fewer options where 5^C is more (BBC, C=5: 3 options, 3^5 = 243 instead of 3,125)
README_MARKERS = ("<!-- quality-table:start -->", "<!-- quality-table:end -->")


KINDS = {"full": "", "gradient": "_gradient", "plain": "_plain"}  # searches per dataset and seed, and their folder suffixes


def shows_demonstrations(dataset: str) -> bool:
    return load_space(f"search_spaces/{dataset}.yaml").generators.demonstrations.enabled


def variant_space(dataset: str, kind: str, folder: Path) -> Path:
    """The dataset's bundled space as it is (full), with the generators of mr_gradient.yaml
    switched on (gradient), or without demonstrations (plain)."""
    if kind == "full":
        return Path(f"search_spaces/{dataset}.yaml")
    if kind == "gradient":
        generators = yaml.safe_load(Path("search_spaces/mr_gradient.yaml").read_text())["generators"]
    else:
        generators = {"demonstrations": {"enabled": False}}
    path = folder / f"{dataset}{KINDS[kind]}.yaml"
    text = yaml.safe_dump({"include": str(Path(f"search_spaces/{dataset}.yaml").resolve()), "generators": generators}, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def complete(run: Path) -> bool:
    return RunFolder(run).is_complete()


def keep_record(run: Path, records: Path) -> str:
    """Copy the run's manifest and results next to the benchmark's JSON (the run folders are not
    committed), so that every figure of the table traces back to a file in the repository."""
    target = records / run.name
    for name in (MANIFEST, RESULTS):
        atomic_write_text(target / name, RunFolder(run).file(name).read_text(encoding="utf-8"))
    return str(target)


def run_cost(run: Path) -> dict:
    manifest = RunFolder(run).manifest()
    timings = manifest["timings"]
    return {"wall_seconds": timings.get("total_seconds"), "forward_seconds": timings.get("forward_seconds"),
            "forward_passes": (manifest.get("cache") or {}).get("forward_passes")}


def full_search_methods(run: Path) -> dict[str, dict | None]:
    trials = FinishedRun(run)
    seed_templates = trials.space["templates"]["seeds"]
    seed_verbalizers = trials.space["verbalizers"]["seeds"]
    seed_words = {word for verbalizer in seed_verbalizers for words in verbalizer.values() for word in words}
    first_prompt = (seed_templates[0], {label: list(words) for label, words in seed_verbalizers[0].items()}, "none")
    return {
        "manual_zero_shot": trials.on_test(trials.best(lambda r: (r.template.source, r.verbalizer, r.calibration.method) == first_prompt)),
        "manual_calibrated": trials.on_test(trials.best(lambda r: r.manual and r.calibration.method != "none")),
        "label_words": trials.on_test(best_generated_words(trials, seed_words)),
        **searched_methods(trials),
    }


def searched_methods(trials: FinishedRun) -> dict[str, dict | None]:
    """A search's best single prompt and its weighted ensemble, on the test sample."""
    ensemble = trials.results()["ensemble"]
    return {
        "search": trials.on_test(trials.best(lambda r: True)),
        "ensemble": {"members": [m["template"] for m in ensemble["members"]], "weights": ensemble["weights"],
                     "test_accuracy": ensemble["test"]["accuracy"], "test_macro_f1": ensemble["test"]["macro_f1"],
                     "test_n": ensemble["test"]["n"]},
    }


def best_generated_words(trials: FinishedRun, seed_words: set[str]) -> TrialResult | None:
    """LM-BFF's automatic label words on the manual templates: every combination of the generated
    word options (the first ``GENERATED_OPTIONS`` of each label in the generator's order, fewer where
    the combinations would pass ``MAX_COMBINATIONS``; none holds a seed word) on every seed template
    and calibration, scored on train+dev exactly as a trial is (cached distributions: no forward
    pass), and the best by the study's own ranking."""
    pools, space, search = trials.pools, trials.space, trials.search()
    per_label = max(n for n in range(1, GENERATED_OPTIONS + 1) if n ** len(pools.words) <= MAX_COMBINATIONS)
    generated = [[i for i, option in enumerate(options) if not seed_words & set(option)][:per_label] for options in pools.words]
    best, best_key = None, None
    pooled = {t.source: t for t in pools.templates}
    for template in (pooled[t] for t in space["templates"]["seeds"] if t in pooled):
        for choice in itertools.product(*generated):
            for calibration in pools.calibrations:
                params = {"template": pools.templates.index(template), "calibration": calibration,
                          **{word_param(c): index for c, index in enumerate(choice)}}
                result, dev, fitted, _ = search.evaluate(params)
                value = result.accuracy if space["objective"] == "accuracy" else result.macro_f1
                verbalizer = pools.verbalizer(params).to_dict()
                key = ranking_key(value, result.mean_margin, template.source, verbalizer, calibration)
                if best_key is None or key < best_key:
                    best_key = key
                    best = TrialResult(number=-1, objective=value, accuracy=result.accuracy, macro_f1=result.macro_f1,
                                       mean_margin=result.mean_margin, template=template, verbalizer=verbalizer,
                                       calibration=fitted, manual=False, params=params, dev_accuracy=dev.accuracy)
    return best


def gradient_method(trials: FinishedRun) -> dict | None:
    found = {r["template"] for search in trials.pools.origins.get("triggers", {}).get("searches", [])
             for r in search["runs"] if r["template"]}
    return trials.on_test(trials.best(lambda r: r.template.source in found))


def markdown(report: dict) -> str:
    """The README table: test accuracy mean ± sd over the seeds (macro-F1 beside it for the unbalanced sets)."""
    lines = [f"Test accuracy, mean ± sd over seeds {', '.join(map(str, report['seeds']))}; macro-F1 in brackets where "
             f"the classes are unbalanced. {report['model']}, 16-shot train and dev. Test: the same sample of at most "
             f"{report['test_limit']} held-out examples for every seed. Cells say how many seeds ran when not all did."
             + _prompt_lengths(report), "",
             "| dataset | " + " | ".join(METHODS.values()) + " | wall time per seed (full / gradient) |",
             "|---|" + "---|" * (len(METHODS) + 1)]
    for dataset in report["datasets"]:
        entry = report["results"].get(dataset, {})
        cells = [_cell(entry, method, report["seeds"]) for method in METHODS]
        walls = [entry.get("wall_seconds", {}).get(kind) for kind in ("full", "gradient")]
        wall = " / ".join("-" if w is None else f"{w / 60:.1f} min" for w in walls)
        lines.append(f"| {dataset} | " + " | ".join(cells) + f" | {wall} |")
    anchors = [f"{dataset}: {name} {value:.3f}" for dataset, rows in ANCHORS.items() for name, value in rows]
    ours = "a 135M causal model" if report["model"] == DEFAULT_MODEL else report["model"]
    lines += ["", "Published anchors, for scale only: " + "; ".join(anchors) + ". Those use RoBERTa-large (355M parameters, "
              "2.6x SmolLM2-135M, a masked model) on their own MR splits (LM-BFF's zero-shot figure: one fixed manual prompt, "
              "no labels, the full 2,000-sentence test set, so beside our first column; RLPrompt: prompts searched on 16-shot "
              f"train/dev as here); ours is {ours} on a hash-based held-out split of MR."]
    ablated = [d for d in report["datasets"] if _has_figure(report, d, "plain_search")]
    if ablated:
        lines += ["", "Demonstrations, on and off (the same space without `generators.demonstrations`, same seeds and test sample):", "",
                  "| dataset | best single prompt, with | without | weighted ensemble, with | without |", "|---|---|---|---|---|"]
        for dataset in ablated:
            entry = report["results"][dataset]
            lines.append(f"| {dataset} | " + " | ".join(_cell(entry, m, report["seeds"]) for m in
                                                         ("search", "plain_search", "ensemble", "plain_ensemble")) + " |")
    with_gradient = [d for d in report["datasets"] if _has_figure(report, d, "gradient_search")]
    if with_gradient:
        lines += ["", "Gradient-guided generators, on and off (the space with the generators of `mr_gradient.yaml` added: HotFlip "
                  "triggers and probe label words; same seeds and test sample):", "",
                  "| dataset | best single prompt, with | without | weighted ensemble, with | without |", "|---|---|---|---|---|"]
        for dataset in with_gradient:
            entry = report["results"][dataset]
            lines.append(f"| {dataset} | " + " | ".join(_cell(entry, m, report["seeds"]) for m in
                                                         ("gradient_search", "search", "gradient_ensemble", "ensemble")) + " |")
    return "\n".join(lines) + "\n"


def _has_figure(report: dict, dataset: str, method: str) -> bool:
    """Whether some seed of ``dataset`` has a test accuracy for ``method``."""
    summary = report["results"].get(dataset, {}).get("summary", {})
    return summary.get(method, {}).get("accuracy", {}).get("mean") is not None


def _prompt_lengths(report: dict) -> str:
    """Which datasets' prompts were cut shorter or longer than the default (their spaces' ``max_length``)."""
    lengths = {d: entry.get("max_length", DEFAULT_MAX_LENGTH) for d, entry in report["results"].items()}
    other = [f"{d}: {n}" for d, n in lengths.items() if n != DEFAULT_MAX_LENGTH]
    if not other:
        return ""
    return f" Prompts of at most {DEFAULT_MAX_LENGTH} tokens, except where the dataset's space sets its own ({', '.join(other)})."


def _cell(entry: dict, method: str, seeds: list[int]) -> str:
    """Mean ± sd of test accuracy (macro-F1 in brackets for unbalanced data), and the seed count when short."""
    summary = entry.get("summary", {}).get(method)
    if not summary or summary["accuracy"]["mean"] is None:
        return "not run"
    accuracy, f1 = summary["accuracy"], summary["macro_f1"]
    cell = f"{accuracy['mean']:.3f} ± {accuracy['std']:.3f}"
    if entry.get("unbalanced"):
        cell += f" ({f1['mean']:.3f})"
    if len(accuracy["per_seed"]) < len(seeds):
        count = len(accuracy["per_seed"])
        cell += f" [{count} seed{'s' if count != 1 else ''}]"
    return cell


def put_in_readme(table: str, readme: Path = Path("README.md")) -> None:
    text = readme.read_text()
    start, end = README_MARKERS
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: the markers {start} ... {end} are missing")
    atomic_write_text(readme, pattern.sub(lambda _: f"{start}\n{table}{end}", text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help="datasets to run now (the table covers all)")
    parser.add_argument("--methods", default="full,gradient,plain", help="searches to run now: full, gradient, plain")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="e.g. gemma3-270m, or splade-tiny for the masked path")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="float32", help="the model's compute precision")
    parser.add_argument("--runs", help="default: results/runs/quality (quality-<model> for another model)")
    parser.add_argument("--out", help="default: results/benchmarks/quality.json (quality_<model>.json for another model)")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite README.md's table")
    parser.add_argument("--no-run", action="store_true", help="run no search: build the JSON and the table from the runs on disk")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    unknown = set(args.datasets.split(",")) - set(DATASETS) or set(args.methods.split(",")) - set(KINDS)
    if unknown:
        raise SystemExit(f"unknown dataset or method: {', '.join(sorted(unknown))}")
    suffix = ("" if args.model == DEFAULT_MODEL else f"-{args.model}") + ("" if args.precision == "float32" else f"-{args.precision}")
    runs = Path(args.runs or f"results/runs/quality{suffix}")
    args.out = args.out or f"results/benchmarks/quality{suffix.replace('-', '_')}.json"
    # the README's table is the default model's, in float32
    args.no_readme = args.no_readme or args.model != DEFAULT_MODEL or args.precision != "float32"

    def folder(dataset: str, kind: str, seed: int) -> Path:
        return runs / f"{dataset}{KINDS[kind]}-seed{seed}"

    for dataset in [] if args.no_run else args.datasets.split(","):  # in the order given
        for seed in seeds:
            for kind in KINDS:
                if kind in args.methods.split(",") and (kind != "plain" or shows_demonstrations(dataset)):
                    space = variant_space(dataset, kind, runs / "spaces")
                    search_seed(space, seed, folder(dataset, kind, seed), test_limit=args.test_limit, model=args.model,
                                precision=args.precision)

    records = Path(args.out).with_suffix("").parent / f"{Path(args.out).stem}_runs"
    results = {}
    for dataset in DATASETS:
        per_seed, walls = {}, {"full": [], "gradient": []}
        for seed in seeds:
            row: dict = {}
            full, gradient = folder(dataset, "full", seed), folder(dataset, "gradient", seed)
            if complete(full):
                row.update(full_search_methods(full))
                row["full_run"] = {"folder": str(full), "record": keep_record(full, records), **run_cost(full)}
                walls["full"].append(row["full_run"]["wall_seconds"])
            if complete(gradient):
                trials = FinishedRun(gradient)
                row["gradient"] = gradient_method(trials)
                row.update({f"gradient_{name}": value for name, value in searched_methods(trials).items()})
                row["gradient_run"] = {"folder": str(gradient), "record": keep_record(gradient, records), **run_cost(gradient)}
                walls["gradient"].append(row["gradient_run"]["wall_seconds"])
            plain = folder(dataset, "plain", seed)
            if complete(plain):
                methods = full_search_methods(plain)
                row.update({f"plain_{name}": methods[name] for name in PLAIN_METHODS})
                row["plain_run"] = {"folder": str(plain), "record": keep_record(plain, records), **run_cost(plain)}
            if row:
                per_seed[str(seed)] = row
                figures = "  ".join(f"{m} {row[m]['test_accuracy']:.4f}" for m in METHODS if row.get(m))
                print(f"{dataset} seed {seed}: {figures}", flush=True)
        if not per_seed:
            continue
        first = next(folder(dataset, "full", seed) for seed in seeds if str(seed) in per_seed and complete(folder(dataset, "full", seed)))
        test = RunFolder(first).splits().test  # every seed's run has the same test sample
        counts = [sum(1 for e in test.examples if e.label == label) for label in test.labels]
        results[dataset] = {
            "per_seed": per_seed,
            "test_class_counts": counts,
            "unbalanced": max(counts) > 1.2 * min(counts),
            "summary": {m: {"accuracy": mean_std([r[m]["test_accuracy"] for r in per_seed.values() if r.get(m)]),
                            "macro_f1": mean_std([r[m]["test_macro_f1"] for r in per_seed.values() if r.get(m)])}
                        for m in [*METHODS, *(f"{kind}_{name}" for kind in ("plain", "gradient") for name in PLAIN_METHODS)]},
            "wall_seconds": {kind: (sum(w) / len(w) if w else None) for kind, w in walls.items()},
            "max_length": RunFolder(first).manifest()["model"]["max_length"],
        }
    report = {"benchmark": "quality", "model": args.model, "model_weights_sha256": model_weights_hash(resolve_model(args.model)),
              "precision": args.precision, "k": 16, "seeds": seeds, "test_limit": args.test_limit, "datasets": list(DATASETS),
              "methods": METHODS, "anchors": ANCHORS, "results": results, "provenance": stamp()}
    atomic_write_json(args.out, report)
    table = markdown(report)
    atomic_write_text(Path(args.out).with_suffix(".md"), table)
    if not args.no_readme:
        put_in_readme(table)
    print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
