"""The training methods: what trains, how a batch is scored, and how the result is saved.

- ``full``: prompt-based fine-tuning of all weights (LM-BFF, PET): the loss is cross-entropy over
  the verbalizer's class scores at the slot, computed as the search scores them;
- ``lora``: the same objective, with LoRA adapters (PEFT) as the only trainable weights;
- ``soft``: prompt tuning (PEFT): virtual tokens before the template, initialised from text
  (PEFT's TEXT init) or at random; the model, template and label words stay as they are;
- ``head``: standard fine-tuning with a new classification head on the bare text (the baseline).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from autoprompt_search.adapters import ADAPTER_WEIGHTS, import_peft
from autoprompt_search.backends import Backend
from autoprompt_search.errors import UserError
from autoprompt_search.export import peft_form, portable_tokenizer_name
from autoprompt_search.fileio import sha256_file
from autoprompt_search.predictor import HeadPredictor
from autoprompt_search.prompt import AdapterInfo, ModelInfo, PromptSpec
from autoprompt_search.scoring import trainable_class_scores
from autoprompt_search.templates import RenderedPrompt

METHODS = ("full", "lora", "soft", "head")
SOFT_INITS = ("text", "random", "manual")  # the trained prompt's own words, PEFT's random init, the best manual prompt's words
MODEL_FOLDER = "model"
ADAPTER_FOLDER = "adapter"
# Set before the MR benchmark and not tuned on it (benchmarks/bench_training.py reports what they give): the
# usual rates for each method, raised for runs of tens of steps (the default is 10 epochs of 32 examples).
DEFAULT_LEARNING_RATES = {"full": 2e-5, "lora": 1e-3, "soft": 3e-3, "head": 5e-5}
LORA_RANK = 8


class Method(ABC):
    """One way of training a model to classify the run's examples."""

    name: str

    @abstractmethod
    def parameters(self) -> dict[str, torch.nn.Parameter]:
        """The trainable parameters by name (checkpointed and restored by name)."""

    @abstractmethod
    def log_scores(self, examples: Sequence[Mapping[str, str]]) -> torch.Tensor:
        """Class log-scores ``[n, classes]`` (gradients flow to :meth:`parameters`)."""

    @abstractmethod
    def save(self, folder: Path) -> dict[str, Any]:
        """Write the trained weights under ``folder`` in the standard forms; what the output records of them."""

    @property
    @abstractmethod
    def module(self) -> torch.nn.Module:
        """The module to put in train or eval mode."""


class PromptMethod(Method):
    """The prompt itself is the classifier: its class scores at the slot, as the search computes them."""

    def __init__(self, backend: Backend, spec: PromptSpec) -> None:
        from autoprompt_search.scoring import PromptScorer

        self.backend, self.spec = backend, spec
        self.template, verbalizer = spec.parsed()
        self.template.check_for_model(backend.kind)
        scorer = PromptScorer(backend)
        self.word_ids = scorer.word_ids(self.template, verbalizer)
        self._render = scorer.render

    @property
    def module(self) -> torch.nn.Module:
        return self.backend.model

    def word_token_ids(self) -> dict[str, list[list[int]]]:
        """The verbalizer's token ids by label, as the prompt file records them."""
        return {label: [list(word) for word in words] for label, words in zip(self.spec.labels, self.word_ids)}

    def prompts(self, examples: Sequence[Mapping[str, str]]) -> list[RenderedPrompt]:
        return self._render(self.template, examples, self.spec.trigger_ids or None)

    def log_scores(self, examples: Sequence[Mapping[str, str]]) -> torch.Tensor:
        return trainable_class_scores(self.backend, self.prompts(examples), self.word_ids)


class FullFineTuning(PromptMethod):
    name = "full"

    def __init__(self, backend: Backend, spec: PromptSpec) -> None:
        super().__init__(backend, spec)
        backend.model.requires_grad_(True)

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.backend.model.named_parameters())  # tied weights once

    def save(self, folder: Path) -> dict[str, Any]:
        from autoprompt_search.assets import model_weights_hash

        target = folder / MODEL_FOLDER
        self.backend.model.save_pretrained(target)
        self.backend.tokenizer.save_pretrained(target)
        return {"weights_sha256": model_weights_hash(target), "path": MODEL_FOLDER, "adapter": None}


class PeftPromptMethod(PromptMethod):
    """A PEFT adapter on the frozen model; only the adapter's parameters train."""

    def __init__(self, backend: Backend, spec: PromptSpec, model: ModelInfo, config) -> None:
        super().__init__(backend, spec)
        peft = import_peft()
        self.model_info = model
        try:
            self.peft_model = peft.get_peft_model(backend.model, config)  # LoRA: injected into backend.model's layers
        except (ValueError, KeyError, OSError) as error:  # e.g. no default LoRA target layers for this architecture
            raise UserError(f"PEFT cannot put a {self.name} adapter on the model {model.name} ({error})", option="method") from None

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in self.peft_model.named_parameters() if p.requires_grad}

    def save(self, folder: Path) -> dict[str, Any]:
        config = self.peft_model.peft_config["default"]
        config.base_model_name_or_path = portable_tokenizer_name(self.model_info)  # never this machine's cache folder
        self.backend.model.config._name_or_path = config.base_model_name_or_path  # what PEFT's model card names
        if getattr(config, "tokenizer_name_or_path", None):
            config.tokenizer_name_or_path = portable_tokenizer_name(self.model_info)
        target = folder / ADAPTER_FOLDER
        self.peft_model.save_pretrained(target, save_embedding_layers=False)  # no hub lookup of the base model's config
        adapter = AdapterInfo(self.adapter_method, ADAPTER_FOLDER, sha256_file(target / ADAPTER_WEIGHTS))
        return {"weights_sha256": self.model_info.weights_sha256, "path": "", "adapter": adapter}


class LoraTuning(PeftPromptMethod):
    name = "lora"
    adapter_method = "lora"

    def __init__(self, backend: Backend, spec: PromptSpec, model: ModelInfo) -> None:
        peft = import_peft()
        task = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}.get(backend.kind)
        config = peft.LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.0, task_type=task)
        super().__init__(backend, spec, model, config)


class SoftPromptTuning(PeftPromptMethod):
    """Prompt tuning: ``backend.soft_prompt`` is PEFT's prompt embedding, so the search's scoring path
    runs with the virtual tokens in front (see :meth:`Backend.forward_slot_logits`)."""

    name = "soft"
    adapter_method = "prompt_tuning"

    def __init__(self, backend: Backend, spec: PromptSpec, model: ModelInfo, *, init: str, manual: PromptSpec | None = None) -> None:
        if backend.kind not in ("masked", "causal"):
            raise UserError(f"soft prompts are supported for masked and causal models, not {backend.kind}", option="method")
        if init not in SOFT_INITS:
            raise UserError(f"unknown soft-prompt init {init!r}; choose one of {', '.join(SOFT_INITS)}", option="init")
        if init == "manual" and manual is None:
            raise UserError("the run has no manual prompt whose words could start the soft prompt", option="init")
        peft = import_peft()
        form = peft_form(spec, model)
        own = form["prompt_tuning_init_text"]
        init_text = {"text": own, "random": None, "manual": manual and peft_form(manual, model)["prompt_tuning_init_text"]}[init]
        if not (init_text or own) or (init != "random" and not init_text):
            raise UserError(f"the {'manual' if init == 'manual' else 'trained'} prompt has no words of its own to start the soft "
                            "prompt from; use init random", option="init")
        count = len(backend.tokenizer(init_text or own)["input_ids"])  # PEFT's TEXT init uses the text's tokens exactly once
        config = peft.PromptTuningConfig(
            task_type=form["task_type"], num_virtual_tokens=count,
            prompt_tuning_init="TEXT" if init_text else "RANDOM", prompt_tuning_init_text=init_text,
            tokenizer_name_or_path=str(backend.path) if init_text else None)
        super().__init__(backend, spec, model, config)
        self.init_text = init_text
        backend.soft_prompt = self.peft_model.prompt_encoder["default"].embedding.weight

    def save(self, folder: Path) -> dict[str, Any]:
        saved = super().save(folder)
        return {**saved, "virtual_tokens": self.backend.virtual_tokens, "init_text": self.init_text}


class HeadFineTuning(Method):
    """Standard fine-tuning: a new classification head on the model, the text without a prompt."""

    name = "head"

    def __init__(self, backend: Backend, labels: Sequence[str], fields: Sequence[str], *, seed: int) -> None:
        from transformers import AutoModelForSequenceClassification

        if backend.kind == "seq2seq":
            raise UserError("the classification-head baseline is supported for masked and causal models", option="method")
        if backend.tokenizer.pad_token is None:  # batches are padded; the pad token is saved with the tokenizer
            backend.tokenizer.pad_token = backend.tokenizer.convert_ids_to_tokens(backend.pad_id)
        torch.manual_seed(seed)  # the new head's initial weights
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                backend.path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)},
                pad_token_id=backend.pad_id, use_safetensors=True, dtype=torch.float32)
        except (ValueError, KeyError, OSError) as error:  # an architecture without a sequence-classification class
            raise UserError(f"model {backend.path}: transformers has no classification head for it ({error})", option="method") from None
        self.predictor = HeadPredictor(model.to(backend.device), backend.tokenizer, labels, fields, max_length=backend.max_length,
                                       batch_size=backend.batch_size)
        self.tokenizer = backend.tokenizer

    @property
    def module(self) -> torch.nn.Module:
        return self.predictor.model

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.predictor.model.named_parameters())

    def log_scores(self, examples: Sequence[Mapping[str, str]]) -> torch.Tensor:
        return torch.log_softmax(self.predictor.logits(examples).double(), dim=-1)

    def save(self, folder: Path) -> dict[str, Any]:
        from autoprompt_search.assets import model_weights_hash

        target = folder / MODEL_FOLDER
        self.predictor.model.save_pretrained(target)
        self.tokenizer.save_pretrained(target)
        return {"weights_sha256": model_weights_hash(target), "path": MODEL_FOLDER, "adapter": None}
