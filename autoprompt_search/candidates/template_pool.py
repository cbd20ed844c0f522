"""The candidate templates of a search space: the manual seeds, then combinations of its blocks.

A combination is ``prefix + fields + connector + ending``, where ``fields`` is ``{text}`` (or,
for data with several text fields, all of them joined by spaces: ``{premise} {hypothesis}``) and
the ending holds ``{mask}``. Combinations come in a round-robin over the endings, each ending
paired with a different prefix/connector pair in each round, so that a cap keeps a varied
sample instead of the first rows of a nested loop. Templates equal up to whitespace are kept once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from autoprompt_search.errors import UserError
from autoprompt_search.space_checks import Invalid
from autoprompt_search.templates import Template

if TYPE_CHECKING:
    from autoprompt_search.spaces import SearchSpace

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TemplateBlocks:
    """Pieces combined as ``prefix + fields + connector + ending``; each ending holds the slot."""

    prefixes: tuple[str, ...] = ("",)
    connectors: tuple[str, ...] = (" ",)
    endings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("prefixes", "connectors", "endings"):
            values = getattr(self, name)
            if not values:
                raise Invalid(f"templates.blocks.{name}", "must list at least one piece")
            for i, value in enumerate(values):
                if not isinstance(value, str):
                    raise Invalid(f"templates.blocks.{name}[{i}]", f"must be a quoted string, got {value!r}")

    @property
    def n_combinations(self) -> int:
        return len(self.prefixes) * len(self.connectors) * len(self.endings)


def join_fields(fields: tuple[str, ...]) -> str:
    """The input part of a block combination: ``{text}``, or ``{a} {b}`` for several fields."""
    return " ".join(f"{{{name}}}" for name in fields)


def normalize_template(source: str) -> str:
    """The de-duplication key: each whitespace run becomes one newline (if it holds one) or one space."""
    return _WHITESPACE.sub(lambda m: "\n" if "\n" in m.group(0) else " ", source).strip()


def block_combinations(blocks: TemplateBlocks, fields: tuple[str, ...]) -> Iterator[str]:
    """Every combination exactly once, in the diverse order described in the module docstring."""
    joined = join_fields(fields)
    n_prefixes = len(blocks.prefixes)
    # Pair k cycles the prefix fastest, so neighbouring pairs differ in prefix and, later, connector.
    pairs = [(blocks.prefixes[k % n_prefixes], blocks.connectors[k // n_prefixes]) for k in range(n_prefixes * len(blocks.connectors))]
    for round_ in range(len(pairs)):
        for j, ending in enumerate(blocks.endings):
            prefix, connector = pairs[(round_ + j) % len(pairs)]
            yield f"{prefix}{joined}{connector}{ending}"


def build_template_pool(space: SearchSpace, *, model_kind: str | None = None) -> list[Template]:
    """The seeds (in order, always kept), then block combinations up to ``max_candidates`` in all.

    ``model_kind`` (default: the space's registered model's kind) drops combinations a causal
    model cannot score (text after ``{mask}``); a seed like that is an error.
    """
    fields = space.dataset.text_fields
    kind = model_kind or space.model_kind
    pool: list[Template] = []
    seen: set[str] = set()
    for i, seed in enumerate(space.templates.seeds):
        if kind is not None:
            seed.check_for_model(kind, origin=f"{space.origin}: templates.seeds[{i}]")
        if normalize_template(seed.source) not in seen:
            seen.add(normalize_template(seed.source))
            pool.append(seed)
    blocks = space.templates.blocks
    if blocks is None:
        return pool
    for source in block_combinations(blocks, fields):
        if len(pool) >= space.templates.max_candidates:
            break
        key = normalize_template(source)
        if key in seen:
            continue
        seen.add(key)
        try:
            template = Template.parse(source, fields=fields)
            if kind is not None:
                template.check_for_model(kind)
        except UserError:
            continue  # only valid templates enter the pool; the blocks were checked when loaded
        pool.append(template)
    return pool
