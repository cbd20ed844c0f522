"""Prompt files as scikit-learn style predictors: :func:`load` checks the file and the model and
returns a predictor whose probabilities equal the search's bit for bit."""

from __future__ import annotations

import os
import stat
import warnings
from functools import cached_property
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from autoprompt_search.adapters import apply_adapter, check_adapter_folder
from autoprompt_search.backends import Backend, load_backend
from autoprompt_search.cache import SlotCache, default_cache_dir
from autoprompt_search.ensemble import combine_probabilities
from autoprompt_search.errors import UserError
from autoprompt_search.prompt import ModelInfo, PromptSpec
from autoprompt_search.prompt_file import PromptFile, read
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import RenderedPrompt, Template
from autoprompt_search.verbalizers import Verbalizer

Texts = Iterable[str | Mapping[str, str]]
TRAINED_PROMPT = "prompt.json"  # in a train output folder: the prompt with its trained model or adapter
TRAINED_CLASSIFIER = "classifier.json"  # in a train output folder: a model with a classification head
TRAINING = "training.json"  # in a train output folder: what was trained from what (written last: the run is done)
CHECKPOINT = "checkpoint"  # in a train output folder while it trains: the last epoch, to resume from
CLASSIFIER_FORMAT = "autoprompt_search.classifier"
CLASSIFIER_FORMAT_VERSION = 1  # what this version reads; the files written so far carry no version (1)


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


class _WeightedAverage(_Classifier):
    """A weighted average of predictors' class probabilities (:func:`combine_probabilities`)."""

    def __init__(self, predictors: Sequence[_Classifier], weights: Sequence[float]) -> None:
        self.weights = [float(weight) for weight in weights]
        self.classes_ = list(predictors[0].classes_)
        if any(predictor.classes_ != self.classes_ for predictor in predictors):
            raise ValueError("averaged predictors must share their classes, in the same order")

    def each_proba(self, texts: list) -> list[np.ndarray]:
        raise NotImplementedError

    def predict_proba(self, texts: Texts) -> np.ndarray:
        texts = _as_list(texts)
        if not texts:
            return np.empty((0, len(self.classes_)))
        return combine_probabilities(self.each_proba(texts), self.weights)


class EnsemblePredictor(_WeightedAverage):
    """A weighted average of prompts' probabilities; members share one backend and cache."""

    def __init__(self, members: Sequence[PromptPredictor], weights: Sequence[float]) -> None:
        self.members = list(members)
        super().__init__(self.members, weights)

    def passes(self) -> list[list[int]]:
        """The members' indices grouped by the pass of the model they are read from (one per template)."""
        groups: dict[tuple, list[int]] = {}
        for index, member in enumerate(self.members):
            groups.setdefault((member.spec.template, member.spec.fields, member.spec.trigger_ids, id(member.scorer)), []).append(index)
        return list(groups.values())

    def each_proba(self, texts: list) -> list[np.ndarray]:
        """Each member's probabilities; members that share a template are read from one pass of the
        model over ``texts``."""
        probabilities: list[np.ndarray] = [np.empty(0)] * len(self.members)
        for indices in self.passes():
            first = self.members[indices[0]]
            raws = first.scorer.variant_class_scores(first.prompts(texts), [self.members[i].word_ids for i in indices])
            for index, raw in zip(indices, raws):
                probabilities[index] = self.members[index].probabilities(raw)
        return probabilities


class ModelEnsemblePredictor(_WeightedAverage):
    """A weighted average of several models' predictors (each an ensemble on its own backend)."""

    def __init__(self, parts: Sequence[_Classifier], weights: Sequence[float]) -> None:
        self.parts = list(parts)
        super().__init__(self.parts, weights)

    def each_proba(self, texts: list) -> list[np.ndarray]:
        return [part.predict_proba(texts) for part in self.parts]


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
        """The classifier of a ``train --method head`` output folder: its ``model.path`` must lie inside
        the folder, and the model's weights must be the recorded ones before anything else is read."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from autoprompt_search.prompt_file import _get, read_document

        path = folder / TRAINED_CLASSIFIER
        origin = str(path)
        document = read_document(path, "classifier file")
        if not isinstance(document, dict):
            raise UserError(f"{origin}: expected a JSON object at the top level")
        _get(document, "format", "", "str", origin, choices=(CLASSIFIER_FORMAT,))
        version = _get(document, "format_version", "", "positive int", origin, 1)
        if version > CLASSIFIER_FORMAT_VERSION:
            raise UserError(f"{origin}: format_version: the file has version {version}, but this autoprompt_search reads "
                            f"up to version {CLASSIFIER_FORMAT_VERSION}; upgrade autoprompt_search")
        labels = _get(document, "labels", "", "strings", origin)
        fields = _get(document, "fields", "", "strings", origin)
        if not labels or len(set(labels)) != len(labels):
            raise UserError(f"{origin}: labels: expected distinct label names, got {labels}")
        if not fields:
            raise UserError(f"{origin}: fields: expected at least one field name")
        max_length = _get(document, "max_length", "", "count", origin)
        batch_size = _get(document, "batch_size", "", "count", origin, 32)
        block = _get(document, "model", "", "mapping", origin)
        recorded = _get(block, "weights_sha256", "model", "str", origin)
        model_folder = confined_folder(path, _get(block, "path", "model", "str", origin), origin, "model.path")
        try:
            model_folder = _checked_model_folder(str(model_folder), "model.path")
        except UserError as error:
            raise UserError(f"{origin}: {error}") from None
        if _weights_hash(model_folder) != recorded:
            raise UserError(f"{origin}: model.weights_sha256: the weights in {model_folder} differ from the ones the file recorded")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        try:
            model = AutoModelForSequenceClassification.from_pretrained(model_folder, use_safetensors=True, trust_remote_code=False,
                                                                       dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(model_folder, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"{origin}: model.path: cannot load {model_folder} as a classifier ({error})") from None
        predictor = cls(model.to(device).eval(), tokenizer, labels, fields, max_length=max_length, batch_size=batch_size)
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
         strict: bool = True) -> PromptPredictor | EnsemblePredictor | ModelEnsemblePredictor | HeadPredictor:
    """Load a prompt file as a predictor on its model (an ensemble of models: each part on its own); the
    output folder of ``autoprompt-search train`` gives its trained prompt (with the trained model or
    adapter) or its classification-head model.

    The model is ``model`` if given (a name, a folder, or a loaded backend used as it is), else the
    one the file names (see :func:`recorded_model`). A model or tokenizer that differs from the
    search's is refused unless ``strict=False`` (then a warning); a model the file names is checked
    against its recorded weights hash before transformers opens anything in its folder. A model it
    loads runs in the file's ``model.precision``; a given backend in another precision is a mismatch.

    Nothing in a file is run: folders are opened without remote code and with safetensors weights only,
    and a relative ``model.path`` or ``model.adapter.path`` must lie inside the file's folder.
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
    if file.kind == "models":
        if model is not None:
            raise UserError(f"{origin}: an ensemble of models loads each part's own model; model=... cannot replace them")
        parts = [_load_file(part, path, f"{origin}: parts[{index}].ensemble", None, device, cache, strict)
                 for index, (_, part) in enumerate(file.parts)]
        result = ModelEnsemblePredictor(parts, [weight for weight, _ in file.parts])
        result.file = file
        return result
    return _load_file(file, path, origin, model, device, cache, strict)


def _load_file(file: PromptFile, path: Path, origin: str, model: str | Path | Backend | None, device: str, cache: bool,
               strict: bool) -> PromptPredictor | EnsemblePredictor:
    """A ``single`` or ``ensemble`` file as a predictor (see :func:`load`); ``origin`` names it in messages."""
    adapter, adapter_folder = file.model.adapter, None
    if isinstance(model, Backend) and adapter is not None:
        raise UserError(f"{origin}: the prompt comes with a trained adapter, which load() puts on a model it loads itself; "
                        "pass the base model's name or folder instead of a loaded backend")
    if adapter is not None:  # checked (inside the file's folder, safetensors, its hash) before any model is loaded
        adapter_folder = confined_folder(path, adapter.path, origin, "model.adapter.path")
        check_adapter_folder(adapter_folder, adapter.method, adapter.sha256)
    checked: set[str] = set()
    if isinstance(model, Backend):
        backend, source = model, str(model.path or "the given backend")
    elif model is not None:  # the caller's own choice: loaded as given, then compared with the file
        source = str(model)
        backend = load_backend(source, kind=file.model.kind, device=device, batch_size=file.batch_size,
                               max_length=file.model.max_length, precision=file.model.precision)
    else:
        folder = recorded_model_folder(path, file.model, origin)
        source = str(folder)
        actual = _weights_hash(folder)  # before transformers opens anything in the folder
        if actual != file.model.weights_sha256:
            _mismatch(_other_model(origin, "weights_sha256", file.model.weights_sha256, actual, source), strict)
        checked.add("weights_sha256")
        try:
            backend = load_backend(folder, kind=file.model.kind, device=device, batch_size=file.batch_size,
                                   max_length=file.model.max_length, precision=file.model.precision)
        except UserError as error:
            raise UserError(f"{origin}: model: cannot load the prompt's model ({error}); pass model=... to give its folder") from None
    for key, expected, actual in (("kind", file.model.kind, backend.kind),
                                  ("weights_sha256", file.model.weights_sha256, backend.weights_hash)):
        if key not in checked and expected != actual:
            _mismatch(_other_model(origin, key, expected, actual, source), strict)
    if file.model.precision != backend.precision:  # same weights, slightly different scores
        _mismatch(f"{origin}: model.precision: the prompt was scored in {file.model.precision}, the given model runs in "
                  f"{backend.precision}; its figures would not be reproduced exactly", strict)
    if adapter_folder is not None:
        apply_adapter(backend, adapter_folder, adapter.method, adapter.sha256)
    vocabulary = backend.model.get_input_embeddings().weight.shape[0]
    for member in file.members:
        if outside := [token for token in member.spec.trigger_ids if token >= vocabulary]:
            raise UserError(f"{origin}: {member.where}.trigger_ids: token id {outside[0]} is outside the model's vocabulary "
                            f"of {vocabulary} tokens")
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


def recorded_model_folder(path: Path, model: ModelInfo, origin: str) -> Path:
    """The folder of the prompt file's model, found by the file alone (:func:`recorded_model`) and
    checked to be a usable model folder; its weights are not opened (nor compared: see :func:`load`)."""
    location, field = recorded_model(path, model, origin)
    try:
        return _checked_model_folder(location, field)
    except UserError as error:
        raise UserError(f"{origin}: model: cannot load the prompt's model ({error}); pass model=... to give its folder") from None


def recorded_model(path: Path, model: ModelInfo, origin: str) -> tuple[str, str]:
    """Where the model of the prompt file ``path`` is, by the file alone, and the field that says so:

    - a relative ``model.path`` (a trained model beside the file): inside the file's folder, else refused;
    - a registered ``model.name``: the asset registry's folder (an absolute ``model.path`` is that
      folder on the machine the file came from, and is not read);
    - an absolute ``model.path``, if that folder exists, else an absolute ``model.name``: the folder the
      search ran on (load() then opens it only if its weights hash is the recorded one);
    - nothing else: a relative or ``~`` name would be read from wherever the caller happens to be.
    """
    from autoprompt_search.asset_registry import MODELS

    if model.path and not Path(model.path).is_absolute():
        folder = confined_folder(path, model.path, origin, "model.path")
        if folder.is_dir():
            return str(folder), "model.path"
    if model.name in MODELS:
        return model.name, "model.name"
    if model.path and Path(model.path).is_absolute() and Path(model.path).is_dir():
        return model.path, "model.path"
    if Path(model.name).is_absolute():
        return model.name, "model.name"
    where = f"model.path {model.path!r} is no folder here, and " if model.path else ""
    raise UserError(f"{origin}: model: cannot load the prompt's model ({where}model.name {model.name!r} is neither a registered "
                    f"model ({', '.join(MODELS)}) nor an absolute folder); pass model=... to give its folder")


def confined_folder(path: Path, value: str, origin: str, field: str) -> Path:
    """The folder ``value`` names relative to the folder of the file ``path``; a user error naming the
    file and the field when it is absolute, or when it or a link at or below it leads out of that folder."""
    root = path.parent.resolve()
    try:
        if Path(value).is_absolute():
            raise UserError(f"{origin}: {field}: {value!r} is an absolute path; a file names the folders that come with it "
                            "relative to its own folder")
        folder = (root / value).resolve()
    except (OSError, ValueError, RuntimeError) as error:  # a NUL byte, a link loop
        raise UserError(f"{origin}: {field}: {value!r} is not a usable path ({error})") from None
    if not folder.is_relative_to(root):
        raise UserError(f"{origin}: {field}: {value!r} leads to {folder}, outside the file's folder {root}; "
                        "only folders inside it are followed")
    if folder.is_dir():
        for parent, folders, files in os.walk(folder):  # links are not followed, but checked
            for name in (*folders, *files):
                entry = Path(parent) / name
                try:
                    mode, target = entry.lstat().st_mode, entry.resolve()
                except (OSError, RuntimeError) as error:  # gone meanwhile, a link loop
                    raise UserError(f"{origin}: {field}: {entry} cannot be read ({error})") from None
                if stat.S_ISLNK(mode) and not target.is_relative_to(root):
                    raise UserError(f"{origin}: {field}: {entry} is a link to {target}, outside the file's folder {root}")
                if not (stat.S_ISLNK(mode) or stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise UserError(f"{origin}: {field}: {entry} is not a regular file")
    return folder


def _checked_model_folder(location: str, field: str) -> Path:
    """The folder of a registered name or a folder path, with config, safetensors weights (pickled
    weights alone are refused) and a tokenizer; a user error naming the field otherwise."""
    from autoprompt_search.assets import resolve_model

    try:
        return resolve_model(location)
    except UserError as error:
        raise UserError(f"{field}: {error}") from None


def _weights_hash(folder: Path) -> str:
    from autoprompt_search.assets import model_weights_hash

    return model_weights_hash(folder)


def _other_model(origin: str, key: str, expected: str, actual: str, source: str) -> str:
    return (f"{origin}: model.{key}: the prompt was found on another model ({key} {expected!r} in the file, "
            f"{actual!r} for {source}); its scores do not carry over")


def _mismatch(message: str, strict: bool) -> None:
    """A file and a model that disagree: an error, or with ``strict=False`` a warning."""
    if strict:
        raise UserError(message + "; pass strict=False to use it anyway")
    warnings.warn(message, UserWarning, stacklevel=3)
