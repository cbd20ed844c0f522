"""``autoprompt-search evaluate``: score one prompt on a dataset split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autoprompt_search.cli.options import add_data_options, add_model_options, data_options, model_options, slot_cache
from autoprompt_search.data import SPLITS
from autoprompt_search.scoring import CALIBRATION_METHODS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="score one prompt on a dataset split",
                                   description="Score a template and verbalizer on a dataset split with a frozen model.")
    add_data_options(parser)
    add_model_options(parser)
    parser.add_argument("--template", required=True, help="e.g. '{text} It was {mask}.'")
    parser.add_argument("--verbalizer", required=True, help='JSON, e.g. \'{"negative": ["terrible"], "positive": ["great"]}\'')
    parser.add_argument("--calibrate", choices=CALIBRATION_METHODS, default="none")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--limit", type=int, help="score a random sample of this many examples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", help="also write the JSON report to this file (atomically)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoprompt_search.errors import UserError
    from autoprompt_search.evaluation import evaluate_prompt
    from autoprompt_search.fileio import unwritable_reason

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a folder; give a file name such as {Path(args.out) / 'evaluation.json'}")
    if args.out and (reason := unwritable_reason(args.out)):
        raise UserError(f"--out {args.out}: {reason}")  # checked before the scoring, not after it
    result = evaluate_prompt(args.dataset, args.model, args.template, args.verbalizer, calibrate=args.calibrate,
                             split=args.split, limit=args.limit, seed=args.seed, cache=slot_cache(args),
                             data_options=data_options(args), model_options=model_options(args))
    report = result.report
    if args.out:
        from autoprompt_search.fileio import atomic_write_json

        atomic_write_json(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"dataset   {report['dataset']['name']} ({report['dataset']['split']}, n={report['n']})")
        print(f"model     {report['model']['name']} ({report['model']['kind']})")
        print(f"template  {report['template']}")
        print(f"verbalizer {json.dumps(report['verbalizer'])}  calibration {report['calibration']['method']}")
        print(f"accuracy  {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
              f"({report['timing']['examples_per_second']:.1f} examples/s, {report['forward_passes']} forward passes)")
    return 0
