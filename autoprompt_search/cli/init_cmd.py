"""``autoprompt-search init``: write a generic first search space for a dataset, beside its file."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from autoprompt_search.cli.options import add_data_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "init", help="write a first search space for a dataset",
        description="Write a search-space YAML file for a dataset that has none: generic template blocks around its "
                    "text fields, its label names as the seed verbalizer, label words from the model's distribution, "
                    "and the bundled defaults. `search --dataset FILE` runs the same space without writing it.")
    add_data_options(parser)
    parser.add_argument("--out", help="the file to write (default: beside the data file, FILE.yaml; for a registered "
                                      "dataset NAME_generic.yaml here); an existing file is never replaced")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoprompt_search.cli.options import starting_space_from
    from autoprompt_search.errors import UserError
    from autoprompt_search.fileio import atomic_write_text, unwritable_reason
    from autoprompt_search.spaces import space_from_mapping
    from autoprompt_search.starter import space_yaml

    space = starting_space_from(args)
    data_file = space["dataset"]["path"] if isinstance(space["dataset"], dict) else None
    out = Path(args.out) if args.out else (Path(args.dataset).with_suffix(".yaml") if data_file else Path(f"{space['name']}.yaml"))
    if out.exists():
        raise UserError(f"{out} exists; choose another file or remove it", option="out")
    if reason := unwritable_reason(out):
        raise UserError(f"{out}: {reason}", option="out")
    checked = space_from_mapping(space, name=str(out))  # the space is checked whole before a byte is written
    if data_file:  # the file names its data relative to itself, so the two can move together
        space["dataset"]["path"] = os.path.relpath(data_file, out.absolute().parent)
    atomic_write_text(out, space_yaml(space, shlex.join(["autoprompt-search", "init", *_data_arguments(args)])))
    seeds, blocks = checked.templates.seeds, checked.templates.blocks
    print(f"wrote {out}: {len(seeds)} seed templates, {blocks.n_combinations if blocks else 0} block combinations, "
          f"seed verbalizer {checked.verbalizers.seeds[0].to_dict()}")
    print(f"next: autoprompt-search validate {shlex.quote(str(out))} && autoprompt-search search {shlex.quote(str(out))}")
    return 0


def _data_arguments(args: argparse.Namespace) -> list[str]:
    """The data options as read (:func:`~autoprompt_search.cli.options.data_options`), written as a command line."""
    from autoprompt_search.cli.options import data_options

    given = ["--dataset", args.dataset]
    for name, value in data_options(args).items():
        if name == "text_fields":
            given += [part for field in value for part in ("--text-field", field)]
        else:
            given += ["--" + name.replace("_", "-"), ",".join(value) if name == "labels" else str(value)]
    return given
