"""autoprompt_search: discrete prompt search for frozen language models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from os import PathLike

    from autoprompt_search.export import EnsemblePredictor, PromptPredictor

__version__ = "0.1.0"


def load(path: str | PathLike[str], *args: Any, **kwargs: Any) -> PromptPredictor | EnsemblePredictor:
    """Load an exported prompt file as a predictor; see :func:`autoprompt_search.export.load`."""
    from autoprompt_search.export import load as load_prompt

    return load_prompt(path, *args, **kwargs)
