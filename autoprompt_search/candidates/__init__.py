"""Candidates for the search: the template pool, and the generators (:mod:`candidates.generators`:
label words read from the model's slot distribution or from a linear probe, templates with
gradient-searched triggers or with demonstrations); :mod:`candidates.build` freezes them all into
the search's :class:`~autoprompt_search.candidates.pools.Pools`."""

from autoprompt_search.candidates.template_pool import block_combinations, build_template_pool, normalize_template

__all__ = ["block_combinations", "build_template_pool", "normalize_template"]
