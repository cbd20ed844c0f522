"""``autoprompt-search validate``: check search-space files without loading any model or data."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoprompt_search.spaces import SearchSpace


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("validate", help="check search-space YAML files",
                                   description="Load each search-space file (with its includes), check every key "
                                               "and value, and print a one-line summary per file.")
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="search-space YAML files (search_spaces/mr.yaml) or bundled spaces' names (mr)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoprompt_search.spaces import load_space

    for file in args.files:
        print(summary(load_space(file)))
    return 0


def summary(space: SearchSpace) -> str:
    """One line: name, dataset, model, templates, verbalizers and budget of a loaded space."""
    from autoprompt_search.candidates import build_template_pool

    blocks = space.templates.blocks
    budget = space.budget
    limits = [f"{budget.trials} trials"] if budget.trials is not None else []
    limits += [f"{budget.timeout_seconds:g} s"] if budget.timeout_seconds is not None else []
    generators = list(space.generators.enabled)
    rounds = space.generators.rounds
    if rounds.count > 1:
        generators.append(f"{rounds.count} word rounds every {rounds.trials} trials")
    return (f"{space.origin}: ok: {space.name}: dataset {space.dataset.spec} ({len(space.labels)} labels), "
            f"model {space.model}{f' (prompts of {space.max_length} tokens)' if space.max_length else ''}, "
            f"{len(space.templates.seeds)} seed templates + "
            f"{blocks.n_combinations if blocks else 0} block combinations -> {len(build_template_pool(space))} candidates "
            f"(max {space.templates.max_candidates}), {len(space.verbalizers.seeds)} verbalizer seeds, "
            f"generators: {', '.join(generators) or 'none'}, budget {' or '.join(limits)}")
