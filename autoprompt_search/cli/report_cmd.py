"""``autoprompt-search report``: the HTML report of a finished search run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write the HTML report of a search run",
                                   description="Write one self-contained HTML page (leaderboard, optimisation history, "
                                               "ensemble weights, confusion matrices on test, manifest) for a run folder. "
                                               "The search writes it too, as RUN_DIR/report.html.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a search's run folder, e.g. results/runs/mr-smollm2-135m-seed13")
    parser.add_argument("--out", help="where to write the page (default: RUN_DIR/report.html)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoprompt_search.report import write_report

    print(f"wrote {write_report(args.run_dir, args.out)}")
    return 0
