"""Candidate generators for the search: templates now, label words and triggers alongside."""

from autoprompt_search.candidates.template_pool import block_combinations, build_template_pool, normalize_template

__all__ = ["block_combinations", "build_template_pool", "normalize_template"]
