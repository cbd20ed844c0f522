"""autoprompt_search: discrete prompt search for frozen language models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from os import PathLike

    from autoprompt_search.predictor import EnsemblePredictor, HeadPredictor, ModelEnsemblePredictor, PromptPredictor

from autoprompt_search.version import __version__  # noqa: F401 (the package's public version)


def load(path: str | PathLike[str], *args: Any,
         **kwargs: Any) -> PromptPredictor | EnsemblePredictor | ModelEnsemblePredictor | HeadPredictor:
    """Load an exported prompt file, or a ``train`` output folder, as a predictor; see :func:`autoprompt_search.predictor.load`."""
    from autoprompt_search.predictor import load as load_prompt

    return load_prompt(path, *args, **kwargs)


def __getattr__(name: str) -> Any:
    """``autoprompt_search.run_search`` is :func:`autoprompt_search.pipeline.run_search` itself and
    ``autoprompt_search.train`` :func:`autoprompt_search.training.train` (signature and help included),
    imported on first use so that ``import autoprompt_search`` stays light."""
    if name == "run_search":
        from autoprompt_search.pipeline import run_search

        return run_search
    if name == "train":
        from autoprompt_search.training import train

        return train
    raise AttributeError(f"module 'autoprompt_search' has no attribute {name!r}")
