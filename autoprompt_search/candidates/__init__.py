"""Candidate generators for the search: the template pool, label words read from the model's
slot distribution or from a linear probe, and templates with gradient-searched triggers; all of
them frozen into the search's pools by :mod:`candidates.pools`."""

from autoprompt_search.candidates.template_pool import block_combinations, build_template_pool, normalize_template

__all__ = ["block_combinations", "build_template_pool", "normalize_template"]
