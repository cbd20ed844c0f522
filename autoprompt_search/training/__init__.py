"""From found prompts to trained models: prompt-based fine-tuning (all weights or LoRA), soft
prompts on the frozen model, and the classification-head baseline (see :func:`train`)."""

from autoprompt_search.training.methods import METHODS, SOFT_INITS
from autoprompt_search.training.run import TrainResult, train

__all__ = ["METHODS", "SOFT_INITS", "TrainResult", "train"]
