"""``autoprompt-search validate``: check search-space files, and the data they name, without loading any model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoprompt_search.spaces import SearchSpace


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("validate", help="check search-space YAML files",
                                   description="Load each search-space file (with its includes), check every key "
                                               "and value, read its data and draw the first seed's few-shot splits "
                                               "from them, and print a one-line summary per file.")
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="search-space YAML files (search_spaces/mr.yaml) or bundled spaces' names (mr)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoprompt_search.spaces import load_space

    for file in args.files:
        space = load_space(file)
        print(f"{summary(space)}; {data_summary(space)}")
    return 0


def data_summary(space: SearchSpace) -> str:
    """The data's sizes once the first seed's few-shot splits are drawn from them as a search would
    (an empty file, a missing column or too few examples of a label are the search's own errors);
    a registered dataset that is not fetched yet is left unread."""
    from autoprompt_search import assets
    from autoprompt_search.splits import make_splits

    if space.dataset.registered and not assets.is_fetched(space.dataset.name):
        return "data: not fetched yet, not read"
    splits = make_splits(space.dataset, space.few_shot.k, space.few_shot.seeds[0])
    return f"data: {len(splits.train)} train + {len(splits.dev)} dev (seed {splits.seed}), {len(splits.test)} test examples"


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
