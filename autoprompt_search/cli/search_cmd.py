"""``autoprompt-search search``: parse the arguments, call :func:`autoprompt_search.run_search`,
print the leaderboard."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from autoprompt_search.cli.options import add_data_options, add_model_options, model_options

if TYPE_CHECKING:
    from autoprompt_search.pipeline import SearchResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="search prompts for a dataset and a frozen model",
                                   description="Run a prompt search described by a search-space YAML file, or by the "
                                               "generic starting space of a dataset (--dataset; see `init`).")
    parser.add_argument("space", nargs="?", help="a search-space YAML file (search_spaces/mr.yaml) or a bundled space's name (mr)")
    add_data_options(parser, required=False)
    add_model_options(parser, default=None)
    parser.add_argument("--trials", type=int, help="search trials after the manual baselines (overrides budget.trials)")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--seed", type=int, help="few-shot sampling and sampler seed (default: the space's first seed)")
    parser.add_argument("--out", help="run folder (default: results/runs/<space>-<model>-seed<seed>)")
    parser.add_argument("--storage", help="Optuna storage: an RDB URL (sqlite:///…, postgresql://…) or journal:PATH "
                                          "for several local processes (default: sqlite in the run folder)")
    parser.add_argument("--resume", action="store_true", help="continue the study in the run folder")
    parser.add_argument("--test-limit", type=int, help="score only a sample of this many test examples (the same sample for every seed)")
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help="search with each of these models on the same few-shot sample (each in its own folder inside --out), "
                             "then ensemble their ensembles: an ensemble of models (instead of --model)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoprompt_search.cli.options import data_options, starting_space_from
    from autoprompt_search.errors import UserError
    from autoprompt_search.pipeline import run_search

    if (args.space is None) == (args.dataset is None):
        raise UserError("give a search space or --dataset (a registered name or a data file, searched with a generic "
                        "starting space), " + ("not both" if args.space else "one of them"))
    if args.space is not None and data_options(args, check=False):
        raise UserError("--text-field, --label-field, --labels and --test-fraction describe --dataset's file; a search space "
                        "names its data in its dataset section")
    options = model_options(args)
    space = args.space if args.space is not None else starting_space_from(args)
    if args.models:
        return run_models(args, space, options)
    result = run_search(space, seed=args.seed, out=args.out, trials=args.trials, timeout=args.timeout, storage=args.storage,
                        resume=args.resume, model=args.model, test_limit=args.test_limit, max_length=options["max_length"],
                        model_kind=options["kind"], device=options["device"], batch_size=options["batch_size"],
                        precision=options["precision"], cache=not args.no_cache)
    print_leaderboard(result)
    return 0


def run_models(args: argparse.Namespace, space, options: dict) -> int:
    """``--models``: a search per model, each leaderboard printed, then the ensemble of models."""
    from autoprompt_search.errors import UserError
    from autoprompt_search.pipeline import run_search_models

    if args.model is not None:
        raise UserError("--model cannot be combined with --models: give every model to --models")
    combined = run_search_models(space, args.models, seed=args.seed, out=args.out, resume=args.resume, cache=not args.no_cache,
                                 device=options["device"], on_search=print_leaderboard, trials=args.trials, timeout=args.timeout,
                                 test_limit=args.test_limit, max_length=options["max_length"], model_kind=options["kind"],
                                 batch_size=options["batch_size"], precision=options["precision"], storage=args.storage)
    print_combined(combined)
    return 0


def print_combined(combined) -> None:
    """Each part's ensemble and the ensemble of models, on train+dev and test."""
    summary = combined.summary
    print(f"\nEnsemble of models ({summary['dataset']['name']}; train+dev n={summary['scored_train_dev_rows']}, "
          f"test n={summary['ensemble']['test']['n']})")
    for part in summary["parts"]:
        name = part["model"].get("name", part["run"])
        if trained := part["model"].get("trained"):
            name = f"{Path(name).name} trained ({trained['method']})"
        print(f"{name:<24} weight {part['weight']:.3f}   train+dev accuracy {part['train_dev']['accuracy']:.4f}   "
              f"test accuracy {part['test']['accuracy']:.4f}")
    ensemble = summary["ensemble"]
    print(f"{'ensemble of models':<24} {'':>12}   train+dev accuracy {ensemble['train_dev']['accuracy']:.4f}   "
          f"test accuracy {ensemble['test']['accuracy']:.4f}   test macro-F1 {ensemble['test']['macro_f1']:.4f}")
    print(f"({ensemble['train_dev_note']})")
    print(f"wrote {combined.path}/ensemble.json, test_predictions.csv, results.json")


def print_leaderboard(result: SearchResult, rows: int = 10) -> None:
    from autoprompt_search.templates import outline

    space, splits = result.space, result.splits
    scored = result.best["train_dev"]["n"]
    manifest = result.folder.manifest()
    precision = (manifest.get("model") or {}).get("precision", "float32")
    model = space.model if precision == "float32" else f"{space.model} in {precision}"
    print(f"\nLeaderboard ({space.name}, {model}, seed {splits.seed}; dev n={len(splits.dev)}, test n={len(splits.test)})")
    print(f"{'#':>3} {'trial':>5} {'score':>6} {'dev':>6} {'margin':>7} {'cal':<10} {'verbalizer':<34} template   "
          f"(score: {space.objective} on train+dev, n={scored})")
    demonstrations = (manifest.get("pools") or {}).get("demonstrations")  # to outline their templates
    for rank, trial in enumerate(result.leaderboard[:rows], 1):
        verbalizer = ", ".join("/".join(words) for words in trial.verbalizer.values())
        template = outline(trial.template.source, demonstrations).replace("\n", "\\n")
        print(f"{rank:>3} {trial.number:>5} {trial.objective:>6.3f} {trial.dev_accuracy:>6.3f} {trial.mean_margin:>7.3f} "
              f"{trial.calibration.method:<10} {verbalizer[:34]:<34} {template[:70]}{' (manual)' if trial.manual else ''}")
    print()
    for name, entry in (("best_manual", result.best_manual), ("best", result.best), ("ensemble", result.ensemble)):
        if entry:
            print(f"{name:<12} train+dev accuracy {entry['train_dev']['accuracy']:.4f}   test accuracy {entry['test']['accuracy']:.4f}   "
                  f"test macro-F1 {entry['test']['macro_f1']:.4f}")
    print("(train+dev figures are those the winners were chosen on: they flatter)")
    if result.best.get("selected_by") == "agreement":
        from autoprompt_search.label_free import AGREEMENT_RULE

        print(f"best         is #{result.best['rank']} of the leaderboard: {AGREEMENT_RULE}")
    for name in ("best", "ensemble"):
        estimate = getattr(result, name).get("estimate") or {}
        if estimate.get("accuracy") is None:
            print(f"{name:<12} no held-out estimate: {estimate.get('why_none', 'not computed')}")
            continue
        low, high = estimate["interval"]
        print(f"{name:<12} held-out estimate {estimate['accuracy']:.4f}, {estimate['confidence']:.0%} interval [{low:.3f}, {high:.3f}] "
              f"(the choice repeated without {estimate['n']} dev examples, scored on them)")
        if estimate["includes_chance"]:
            print(f"{'':<12} this interval includes chance ({estimate['chance']:.2f}): on these examples the {name} "
                  "is not shown to beat guessing; label more examples before trusting it")
    timings = result.timings
    print(f"\nwrote {result.folder.path}/best.json, ensemble.json, results.json, trials.csv, test_predictions.csv, manifest.json, "
          f"report.html ({timings['total_seconds']:.0f} s, of which forward passes {timings['forward_seconds']:.0f} s)")
