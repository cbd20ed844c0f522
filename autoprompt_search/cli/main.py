"""Entry point of the ``autoprompt-search`` command: parses arguments and dispatches.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``func`` (``args -> int`` exit code) as a default.
"""

from __future__ import annotations

import argparse
import sys

from autoprompt_search.errors import UserError
from autoprompt_search.version import __version__

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    from autoprompt_search.cli import (
        assets_cmd,
        cache_cmd,
        combine_cmd,
        evaluate_cmd,
        init_cmd,
        report_cmd,
        search_cmd,
        train_cmd,
        validate_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="autoprompt-search",
        description="Find discrete prompts that make a frozen language model classify text well.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (assets_cmd, evaluate_cmd, validate_cmd, init_cmd, search_cmd, combine_cmd, train_cmd, report_cmd, cache_cmd):
        module.register(subparsers)
    return parser


def user_message(error: UserError) -> str:
    """The library names the argument at fault; the command line names its flag."""
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    message = str(error)
    if error.option and message.startswith(error.option + " "):  # "trials must be ..." -> "--trials must be ..."
        message = flag(error.option) + message[len(error.option):]
    elif error.option:
        message = f"{flag(error.option)}: {message}"
    return message + (f" ({', '.join(map(flag, error.alternatives))})" if error.alternatives else "")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"autoprompt-search: error: {user_message(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("autoprompt-search: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
