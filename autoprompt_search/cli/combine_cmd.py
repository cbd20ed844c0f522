"""``autoprompt-search combine``: the ensembles of finished runs (one per model), and models trained from
such runs, as an ensemble of models."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "combine", help="ensemble the ensembles of finished runs on the same few-shot sample (an ensemble of models)",
        description="Combine the ensembles of finished search runs on the same dataset, seed and test sample (typically one "
                    "per model) into one ensemble of models, its weights fitted on the runs' labelled examples. Output "
                    "folders of `train` (prompt methods) started from such runs can be parts too, if they lie inside --out "
                    "(ensemble.json names their models relative to itself); with a trained part the weights are equal.")
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="finished run folders, or train outputs inside --out (at least 2 in all), on the same examples")
    parser.add_argument("--out", required=True, help="folder for ensemble.json, test_predictions.csv and results.json")
    parser.add_argument("--replace", action="store_true",
                        help="replace an earlier ensemble of models in --out (nothing else there is ever replaced)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the on-disk slot cache")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoprompt_search.cli.search_cmd import print_combined
    from autoprompt_search.model_ensemble import combine_runs

    print_combined(combine_runs(args.runs, args.out, device=args.device, cache=not args.no_cache, replace=args.replace))
    return 0
