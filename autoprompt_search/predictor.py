"""Prompt files as scikit-learn style predictors: :func:`load` checks the file and the model and
returns a predictor whose probabilities equal the search's bit for bit."""

from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from autoprompt_search.adapters import apply_adapter
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
TRAINED_PROMPT = "prompt.json"  # in a train output folder: the prompt with its trained model or adapter
TRAINED_CLASSIFIER = "classifier.json"  # in a train output folder: a model with a classification head
CLASSIFIER_FORMAT = "autoprompt_search.classifier"


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


class HeadPredictor(_Classifier):
    """A model fine-tuned with a classification head (the baseline without a prompt): softmax of its logits."""

    def __init__(self, model, tokenizer, labels: Sequence[str], fields: Sequence[str], *, max_length: int,
                 batch_size: int = 32) -> None:
        self.model, self.tokenizer, self.classes_ = model, tokenizer, list(labels)
        self.fields, self.max_length, self.batch_size = tuple(fields), max_length, batch_size

    def encode(self, examples: Sequence[Mapping[str, str]]) -> dict[str, torch.Tensor]:
        """The examples' fields as model inputs: one field alone, two as a text pair, more joined by newlines."""
        columns = [[example[name] for example in examples] for name in self.fields]
        if len(columns) > 2:
            columns = [["\n".join(values) for values in zip(*columns)]]
        encoded = self.tokenizer(*columns, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return {name: value.to(self.model.device) for name, value in encoded.items()}

    def logits(self, examples: Sequence[Mapping[str, str]]) -> torch.Tensor:
        return self.model(**self.encode(examples)).logits.float()

    @torch.inference_mode()
    def predict_proba(self, texts: Texts) -> np.ndarray:
        examples = _examples(_as_list(texts), self.fields)
        self.model.eval()
        parts = [torch.softmax(self.logits(examples[start : start + self.batch_size]), dim=-1).double().cpu().numpy()
                 for start in range(0, len(examples), self.batch_size)]
        return np.concatenate(parts) if parts else np.empty((0, len(self.classes_)))

    @classmethod
    def load(cls, folder: Path, *, device: str = "auto") -> "HeadPredictor":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from autoprompt_search.assets import model_weights_hash
        from autoprompt_search.fileio import read_json

        origin = folder / TRAINED_CLASSIFIER
        document = read_json(origin, "classifier file")
        if document.get("format") != CLASSIFIER_FORMAT:
            raise UserError(f"{origin}: format: expected {CLASSIFIER_FORMAT!r}, got {document.get('format')!r}")
        try:
            model_folder, labels, fields = folder / document["model"]["path"], document["labels"], document["fields"]
            recorded, max_length = document["model"]["weights_sha256"], int(document["max_length"])
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"{origin}: missing or malformed field {error}") from None
        if not model_folder.is_dir() or model_weights_hash(model_folder) != recorded:
            raise UserError(f"{model_folder}: missing, or its weights differ from the ones {origin} recorded")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        model = AutoModelForSequenceClassification.from_pretrained(model_folder, use_safetensors=True, dtype=torch.float32)
        predictor = cls(model.to(device).eval(), AutoTokenizer.from_pretrained(model_folder), labels, fields, max_length=max_length,
                        batch_size=int(document.get("batch_size", 32)))
        predictor.document = document
        return predictor


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
         strict: bool = True) -> PromptPredictor | EnsemblePredictor | HeadPredictor:
    """Load a prompt file as a predictor on its model; the output folder of ``autoprompt-search train``
    gives its trained prompt (with the trained model or adapter) or its classification-head model.

    The model is ``model`` if given (a name, a folder, or a loaded backend used as it is), else
    the file's ``model.path`` if that folder exists, else ``model.name``. A model or tokenizer
    that differs from the search's is refused unless ``strict=False`` (then a warning).
    """
    path = Path(path)
    if path.is_dir():  # the output folder of `autoprompt-search train`
        if (path / TRAINED_CLASSIFIER).is_file():
            return HeadPredictor.load(path, device=device)
        if not (path / TRAINED_PROMPT).is_file():
            raise UserError(f"{path}: a folder, but neither {TRAINED_PROMPT} nor {TRAINED_CLASSIFIER} is in it; give a prompt file "
                            "(such as best.json) or the output folder of autoprompt-search train")
        path = path / TRAINED_PROMPT
    origin, file = str(path), read(path)
    adapter = file.model.adapter
    if isinstance(model, Backend) and adapter is not None:
        raise UserError(f"{origin}: the prompt comes with a trained adapter, which load() puts on a model it loads itself; "
                        "pass the base model's name or folder instead of a loaded backend")
    if isinstance(model, Backend):
        backend, source = model, str(model.path or "the given backend")
    else:
        recorded = Path(file.model.path) if file.model.path else None
        if recorded is not None and not recorded.is_absolute():  # trained outputs name their model folder relative to the file
            recorded = path.parent / recorded
        found = str(recorded) if recorded is not None and recorded.is_dir() else file.model.name
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
    if adapter is not None:
        apply_adapter(backend, path.parent / adapter.path, adapter.method, adapter.sha256)
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
