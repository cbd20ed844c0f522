"""Prompt files as scikit-learn style predictors: :func:`load` checks the file and the model and
returns a predictor whose probabilities equal the search's bit for bit."""

from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from autoprompt_search.backends import Backend, load_backend
from autoprompt_search.cache import SlotCache, default_cache_dir
from autoprompt_search.ensemble import combine_probabilities
from autoprompt_search.errors import UserError
from autoprompt_search.prompt import PromptSpec
from autoprompt_search.prompt_file import PromptFile, read
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import RenderedPrompt, Template
from autoprompt_search.verbalizers import Verbalizer

Texts = Iterable[str | Mapping[str, str]]


# -- predictors ----------------------------------------------------------------------------------
class _Classifier:
    classes_: list[str]
    file: PromptFile | None = None  # set by load(): scores, dataset, provenance

    def predict_proba(self, texts: Texts) -> np.ndarray:
        raise NotImplementedError

    def predict(self, texts: Texts) -> list[str]:
        """The likeliest label of each text."""
        return [self.classes_[index] for index in self.predict_proba(texts).argmax(axis=1)]

    def score(self, texts: Texts, labels: Iterable[str]) -> float:
        """Accuracy of :meth:`predict` against gold label names."""
        texts, labels = _as_list(texts), [str(label) for label in labels]
        if len(texts) != len(labels) or not texts:
            raise UserError(f"labels: expected one label per text, got {len(labels)} labels for {len(texts)} texts")
        if unknown := [label for label in labels if label not in self.classes_]:
            raise UserError(f"labels: unknown label {unknown[0]!r}; the prompt's classes are {', '.join(self.classes_)}")
        return float(np.mean([p == g for p, g in zip(self.predict(texts), labels)]))


class PromptPredictor(_Classifier):
    """One prompt on a frozen model (through a PromptScorer): its calibrated class probabilities."""

    def __init__(self, spec: PromptSpec, scorer: PromptScorer, *, origin: str = "prompt") -> None:
        self.spec, self.scorer, self.origin = spec, scorer, origin  # scikit-learn's convention: __init__ only stores

    @cached_property
    def _parsed(self) -> tuple[Template, Verbalizer]:
        template, verbalizer = self.spec.parsed()
        template.check_for_model(self.scorer.backend.kind, origin=f"{self.origin}.template")
        return template, verbalizer

    @property
    def template(self) -> Template:
        return self._parsed[0]

    @property
    def verbalizer(self) -> Verbalizer:
        return self._parsed[1]

    @cached_property
    def word_ids(self) -> tuple:
        """The verbalizer's token ids as the template tokenizes them at its slot."""
        return self.scorer.word_ids(self.template, self.verbalizer)

    @property
    def classes_(self) -> list[str]:
        return list(self.spec.labels)

    def predict_proba(self, texts: Texts) -> np.ndarray:
        """``[n, classes]`` probabilities, by the same scorer steps as the search."""
        prompts = self.prompts(texts)
        if not prompts:
            return np.empty((0, len(self.classes_)))
        return self.probabilities(self.scorer.class_scores(prompts, self.word_ids))

    def prompts(self, texts: Texts) -> list[RenderedPrompt]:
        """The template rendered on ``texts`` (checked against its fields)."""
        examples = _examples(_as_list(texts), self.template.fields_used)
        return self.scorer.prepare(self.template, examples, self.spec.trigger_ids or None).prompts if examples else []

    def probabilities(self, raw: torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities from raw class log-scores, as PromptScore.probabilities."""
        log_scores = self.spec.calibration.apply(raw).double().numpy()
        exp = np.exp(log_scores - log_scores.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


class EnsemblePredictor(_Classifier):
    """A weighted average of prompts' probabilities; members share one backend and cache."""

    def __init__(self, members: Sequence[PromptPredictor], weights: Sequence[float]) -> None:
        self.members, self.weights = list(members), [float(weight) for weight in weights]
        self.classes_ = list(self.members[0].classes_)
        if any(member.classes_ != self.classes_ for member in self.members):
            raise ValueError("ensemble members must share their classes, in the same order")

    def predict_proba(self, texts: Texts) -> np.ndarray:
        """The weighted average of the members' probabilities; members that share a template are
        read from one pass of the model over ``texts``."""
        texts = _as_list(texts)
        if not texts:
            return np.empty((0, len(self.classes_)))
        groups: dict[tuple, list[int]] = {}
        for index, member in enumerate(self.members):
            groups.setdefault((member.spec.template, member.spec.fields, member.spec.trigger_ids, id(member.scorer)), []).append(index)
        probabilities: list[np.ndarray] = [np.empty(0)] * len(self.members)
        for indices in groups.values():
            first = self.members[indices[0]]
            raws = first.scorer.variant_class_scores(first.prompts(texts), [self.members[i].word_ids for i in indices])
            for index, raw in zip(indices, raws):
                probabilities[index] = self.members[index].probabilities(raw)
        return combine_probabilities(probabilities, self.weights)


def _as_list(texts: Texts) -> list[str | Mapping[str, str]]:
    if isinstance(texts, (str, Mapping)):
        raise UserError("texts: expected a list of texts (or of mappings field -> text), got a single one; wrap it in a list")
    return list(texts)


def _examples(texts: Sequence[str | Mapping[str, str]], fields: Sequence[str]) -> list[dict[str, str]]:
    """Each text as a mapping over the template's fields; a plain string fills its only field."""
    examples = []
    for index, item in enumerate(texts):
        if isinstance(item, str) and len(fields) == 1:
            item = {fields[0]: item}
        elif isinstance(item, str):
            raise UserError(f"texts[{index}]: the template uses the fields {', '.join(fields)}; "
                            "give each example as a mapping field -> text")
        elif not isinstance(item, Mapping):
            raise UserError(f"texts[{index}]: expected a text or a mapping field -> text, got {type(item).__name__}")
        if missing := [name for name in fields if name not in item]:
            raise UserError(f"texts[{index}]: missing field {missing[0]!r}; the template uses {', '.join(fields)}")
        if wrong := [name for name in fields if not isinstance(item[name], str)]:
            raise UserError(f"texts[{index}].{wrong[0]}: expected a string, got {type(item[wrong[0]]).__name__}")
        examples.append({name: item[name] for name in fields})
    return examples


# -- loading -------------------------------------------------------------------------------------
def load(path: str | Path, model: str | Path | Backend | None = None, device: str = "auto", cache: bool = True, *,
         strict: bool = True) -> PromptPredictor | EnsemblePredictor:
    """Load a prompt file as a predictor on its model.

    The model is ``model`` if given (a name, a folder, or a loaded backend used as it is), else
    the file's ``model.path`` if that folder exists, else ``model.name``. A model or tokenizer
    that differs from the search's is refused unless ``strict=False`` (then a warning).
    """
    origin, file = str(path), read(path)
    if isinstance(model, Backend):
        backend, source = model, str(model.path or "the given backend")
    else:
        found = file.model.path if file.model.path and Path(file.model.path).is_dir() else file.model.name
        source = str(model) if model is not None else found
        try:
            backend = load_backend(source, kind=file.model.kind, device=device, batch_size=file.batch_size,
                                   max_length=file.model.max_length)
        except UserError as error:
            if model is not None:
                raise
            raise UserError(f"{origin}: model: cannot load the prompt's model ({error}); pass model=... to give its folder") from None
    for key, expected, actual in (("kind", file.model.kind, backend.kind),
                                  ("weights_sha256", file.model.weights_sha256, backend.weights_hash)):
        if expected != actual:
            _mismatch(f"{origin}: model.{key}: the prompt was found on another model ({key} {expected!r} in the file, "
                      f"{actual!r} for {source}); its scores do not carry over", strict)
    scorer = PromptScorer(backend, SlotCache(default_cache_dir()) if cache else SlotCache(), chunk_size=file.chunk_size)
    predictors = []
    for member in file.members:
        predictor = PromptPredictor(member.spec, scorer, origin=f"{origin}: {member.where}")
        now = {label: [list(word) for word in words] for label, words in zip(predictor.classes_, predictor.word_ids)}
        if member.word_token_ids is not None and (changed := [k for k in now if now[k] != member.word_token_ids[k]]):
            _mismatch(f"{origin}: {member.where[: -len('prompt')]}word_token_ids: this model's tokenizer gives other token "
                      f"ids for the words of {changed[0]!r} ({now[changed[0]]}) than the search used "
                      f"({member.word_token_ids[changed[0]]})", strict)
        predictors.append(predictor)
    result = predictors[0] if file.kind == "single" else EnsemblePredictor(predictors, [m.weight for m in file.members])
    result.file = file
    return result


def _mismatch(message: str, strict: bool) -> None:
    """A file and a model that disagree: an error, or with ``strict=False`` a warning."""
    if strict:
        raise UserError(message + "; pass strict=False to use it anyway")
    warnings.warn(message, UserWarning, stacklevel=3)
