"""Frozen language models behind one method: log-probabilities of the next token at the slot.

Three kinds share the interface:

- ``masked``: the slot is ``width`` mask tokens; a word of n tokens is scored left to right,
  filling the masks already decided (chain rule, one query per prefix);
- ``causal``: the slot is the continuation of the prompt (the template ends with the slot);
- ``seq2seq``: a T5-style sentinel marks the slot in the encoder input and the decoder
  predicts the word after the sentinel.

Only the slot position goes through the vocabulary projection, and batches are sorted by
length to cut padding.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
import types
import weakref
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Literal, Sequence

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from autoprompt_search.errors import UserError
from autoprompt_search.templates import RenderedPrompt
from autoprompt_search.tokenization import special_tokens_around

ModelKind = Literal["masked", "causal", "seq2seq"]
MODEL_KINDS: tuple[str, ...] = ("masked", "causal", "seq2seq")
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")  # bfloat16: the body's matrix products (autocast); see _set_precision
PRECISION_CHOICES: tuple[str, ...] = (*PRECISIONS, "auto")  # auto: bfloat16 where the device runs it natively (resolve_precision)
DEFAULT_MAX_LENGTH = 256
SHARED_PREFIX_TOKENS = 32  # causal prompts sharing at least this many leading tokens run them once per batch
TEMPLATE_SHARED_TOKENS = 4  # templates share an example's opening when it averages at least this many tokens
OPENING_KEY_TOKENS = 2  # templates are grouped by their first tokens on every example before their common opening is sought
SENTINEL = "<extra_id_0>"


@dataclass(frozen=True)
class ModelInputs:
    """One assembled batch. ``input_ids`` may hold negative placeholders (trigger slots, see
    :mod:`candidates.triggers`) that are replaced before the model sees them; ``slot_positions``
    is where each row's slot distribution is read (masked models); ``extra`` holds
    ``position_ids`` (causal) or ``decoder_input_ids`` (seq2seq), one row per input row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    slot_positions: torch.Tensor
    extra: dict[str, torch.Tensor]

    def repeat_rows(self, repeats: int) -> "ModelInputs":
        """Each row ``repeats`` times in a row (row ``b * repeats + r``), for batched candidates."""
        def repeat(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.repeat_interleave(repeats, dim=0)

        return ModelInputs(repeat(self.input_ids), repeat(self.attention_mask), repeat(self.slot_positions),
                           {name: repeat(value) for name, value in self.extra.items()})


@dataclass(frozen=True)
class SlotQuery:
    """Which next-token distribution to compute at the slot.

    ``width`` is the number of slot tokens (masked models only); ``prefix`` holds the word's
    tokens already placed at the slot.
    """

    width: int = 1
    prefix: tuple[int, ...] = ()


class Backend(ABC):
    """A frozen model and its tokenizer."""

    kind: ModelKind

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, path: Path | None = None,
                 device: str = "cpu", batch_size: int = 32, max_length: int = DEFAULT_MAX_LENGTH, precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}", option="precision")
        self.model = model.eval().requires_grad_(False).to(device)
        self.precision = precision
        _set_precision(self.model, device, precision)
        self.tokenizer = tokenizer
        self.path = path
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.specials = special_tokens_around(tokenizer)
        self.pad_id = _pad_id(tokenizer, model)
        self.soft_prompt: torch.Tensor | None = None  # [virtual tokens, hidden] embeddings put before every prompt
        self.forward_passes = 0
        self.forward_seconds = 0.0
        self.sequences_processed = 0
        self._weights_hash: str | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def weights_hash(self) -> str:
        """sha256 of the model's weight files (or of its parameters for an in-memory model)."""
        if self._weights_hash is None:
            if self.path is not None and any(self.path.glob("*.safetensors")):
                from autoprompt_search.assets import model_weights_hash

                self._weights_hash = model_weights_hash(self.path)
            else:
                self._weights_hash = _parameters_hash(self.model)
        return self._weights_hash

    def set_weights_hash(self, digest: str) -> None:
        """Name the weights after a change the model's files do not show (an adapter put on it)."""
        self._weights_hash = digest

    @property
    def fingerprint(self) -> str:
        """Everything besides the prompts' token ids that the slot distributions depend on."""
        extra = {name: getattr(self, name, None) for name in ("mask_id", "sentinel_id", "decoder_start_id")}
        if self.precision != "float32":  # float32 keys stay those of the versions before this option
            extra["precision"] = self.precision
        if self.soft_prompt is not None:
            extra["soft_prompt"] = hashlib.sha256(self.soft_prompt.detach().float().cpu().numpy().tobytes()).hexdigest()
        described = json.dumps({"kind": self.kind, "weights": self.weights_hash, "config": self.model.config.to_dict(),
                                "specials": [self.specials.prefix, self.specials.suffix], "pad": self.pad_id,
                                "dtype": str(self.model.dtype), **extra}, sort_keys=True, default=str)
        return hashlib.sha256(described.encode()).hexdigest()

    def normalize(self, query: SlotQuery) -> SlotQuery:
        """Autoregressive kinds do not depend on the word's width: one cache entry serves all."""
        return query

    @property
    def virtual_tokens(self) -> int:
        return 0 if self.soft_prompt is None else int(self.soft_prompt.shape[0])

    def max_prompt_tokens(self, width: int = 1) -> int:
        """Room for the rendered prompt once special, slot and virtual tokens are added."""
        return self.max_length - len(self.specials.prefix) - len(self.specials.suffix) - self._slot_tokens(width) - self.virtual_tokens

    @abstractmethod
    def _slot_tokens(self, width: int) -> int: ...

    @abstractmethod
    def assemble(self, prompts: Sequence[RenderedPrompt], query: SlotQuery = SlotQuery()) -> ModelInputs:
        """The model inputs of one batch: special tokens, slot tokens, padding."""

    @abstractmethod
    def slot_logits(self, inputs: ModelInputs, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[batch, vocab]`` at the slot; ``inputs_embeds`` replaces the (encoder) ids' embeddings."""

    def _forward_batch(self, prompts: Sequence[RenderedPrompt], query: SlotQuery) -> torch.Tensor:
        return self.forward_slot_logits(self.assemble(prompts, query))

    def forward_slot_logits(self, inputs: ModelInputs) -> torch.Tensor:
        """:meth:`slot_logits` of assembled inputs, with the soft prompt (if any) put before each row:
        its virtual tokens take the first positions (before any padding, as PEFT's prompt tuning puts
        them), the row's own tokens follow."""
        if self.soft_prompt is None:
            return self.slot_logits(inputs)
        rows, virtual = len(inputs.input_ids), self.virtual_tokens
        embeds = torch.cat([self.soft_prompt.to(self.device).unsqueeze(0).expand(rows, -1, -1), self.embed(inputs.input_ids)], dim=1)
        ones = torch.ones((rows, virtual), dtype=inputs.attention_mask.dtype, device=self.device)
        extra = dict(inputs.extra)
        if "position_ids" in extra:
            first = torch.arange(virtual, device=self.device).unsqueeze(0).expand(rows, -1)
            extra["position_ids"] = torch.cat([first, extra["position_ids"] + virtual], dim=1)
        shifted = ModelInputs(inputs.input_ids, torch.cat([ones, inputs.attention_mask], dim=1), inputs.slot_positions + virtual, extra)
        return self.slot_logits(shifted, inputs_embeds=embeds)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The input embeddings of ``input_ids``, as the model's input embedding module computes them."""
        return self.model.get_input_embeddings()(input_ids)

    @torch.inference_mode()
    def slot_hidden_states(self, prompts: Sequence[RenderedPrompt], query: SlotQuery = SlotQuery()) -> torch.Tensor:
        """``[len(prompts), hidden]``: the vector the output embedding projects at the slot
        (the slot's logits are this times the output embedding matrix, plus any bias)."""
        captured: list[torch.Tensor] = []
        head = self.model.get_output_embeddings()
        if head is None:
            raise UserError(f"model {self.path or ''}: it has no output embedding, so the slot's hidden state cannot be read")
        handle = head.register_forward_hook(lambda module, args, output: captured.append(args[0]))
        output: torch.Tensor | None = None
        try:
            for start in range(0, len(prompts), self.batch_size):
                inputs = self.assemble(prompts[start : start + self.batch_size], query)
                with self.counted(len(inputs.input_ids)):
                    self.slot_logits(inputs)
                if not captured:
                    raise UserError(f"model {self.path or ''}: its output embedding is not called on the slot's hidden state")
                hidden = captured.pop()
                if hidden.dim() == 3 and self.kind == "masked":  # the whole sequence went through the head
                    hidden = hidden[torch.arange(len(hidden), device=hidden.device), inputs.slot_positions]
                elif hidden.dim() == 3:  # causal and decoder outputs: the slot is the last position
                    hidden = hidden[:, -1]
                if output is None:
                    output = torch.empty((len(prompts), hidden.shape[-1]), dtype=torch.float32)
                output[start : start + len(hidden)] = hidden.float().cpu()
        finally:
            handle.remove()
        return output if output is not None else torch.empty((0, 0))

    @abstractmethod
    def _length(self, prompt: RenderedPrompt, query: SlotQuery) -> int: ...

    @torch.inference_mode()
    def next_token_log_probs(self, prompts: Sequence[RenderedPrompt], query: SlotQuery = SlotQuery()) -> torch.Tensor:
        """``[len(prompts), vocab]`` float32 log-probabilities of the token at the slot."""
        query = self.normalize(query)
        order = sorted(range(len(prompts)), key=lambda i: self._length(prompts[i], query))
        # Filled on the model's device and copied to the host once: on a GPU, no sync and no small copy per batch.
        output = torch.empty((len(prompts), self.vocab_size), dtype=torch.float32, device=self.device)
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            with self.counted(len(indices)):
                logits = self._forward_batch([prompts[i] for i in indices], query)
                output[torch.tensor(indices, device=self.device)] = torch.log_softmax(logits.float(), dim=-1)
        with self.counted(0, passes=0):  # the copy that waits for the device's last batch
            return output.cpu()

    def templates_next_token_log_probs(self, prompt_sets: Sequence[Sequence[RenderedPrompt]],
                                       query: SlotQuery = SlotQuery()) -> list[torch.Tensor]:
        """:meth:`next_token_log_probs` of several templates rendered on the same examples
        (``prompt_sets[t][i]``: template ``t`` on example ``i``); a causal model shares their openings."""
        return [self.next_token_log_probs(prompts, query) for prompts in prompt_sets]

    @contextmanager
    def counted(self, rows: int, passes: int = 1) -> Iterator[None]:
        """Count one pass of the model over ``rows`` sequences, and its seconds, in the totals."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.forward_seconds += time.perf_counter() - began
            self.forward_passes += passes
            self.sequences_processed += rows

    def _pad(self, sequences: list[list[int]], *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(ids) for ids in sequences)
        ids = torch.full((len(sequences), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            if left:
                ids[row, longest - len(sequence):] = torch.tensor(sequence)
                mask[row, longest - len(sequence):] = 1
            else:
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
        return ids.to(self.device), mask.to(self.device)


class MaskedBackend(Backend):
    kind = "masked"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        if tokenizer.mask_token_id is None:
            raise UserError(f"model {self.path or ''}: its tokenizer has no mask token, so it cannot be used as a masked LM")
        self.mask_id = int(tokenizer.mask_token_id)
        self._head = _separate_mlm_head(model)

    def _slot_tokens(self, width: int) -> int:
        return width

    def _length(self, prompt: RenderedPrompt, query: SlotQuery) -> int:
        return len(prompt.before) + len(prompt.after) + query.width

    def assemble(self, prompts: Sequence[RenderedPrompt], query: SlotQuery = SlotQuery()) -> ModelInputs:
        slot = list(query.prefix) + [self.mask_id] * (query.width - len(query.prefix))
        sequences = [[*self.specials.prefix, *p.before, *slot, *p.after, *self.specials.suffix] for p in prompts]
        positions = torch.tensor([len(self.specials.prefix) + len(p.before) + len(query.prefix) for p in prompts], device=self.device)
        ids, mask = self._pad(sequences)
        return ModelInputs(ids, mask, positions, {})

    def slot_logits(self, inputs: ModelInputs, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.arange(len(inputs.input_ids), device=self.device)
        given = {"inputs_embeds": inputs_embeds} if inputs_embeds is not None else {"input_ids": inputs.input_ids}
        if self._head is not None:
            hidden = self.model.base_model(**given, attention_mask=inputs.attention_mask).last_hidden_state
            dtype = next(self._head.parameters()).dtype  # the hidden state is bfloat16 when the body's last op was autocast
            return self._head(hidden[rows, inputs.slot_positions].to(dtype))
        return self.model(**given, attention_mask=inputs.attention_mask).logits[rows, inputs.slot_positions]


class CausalBackend(Backend):
    kind = "causal"

    def normalize(self, query: SlotQuery) -> SlotQuery:
        return replace(query, width=1)

    def _slot_tokens(self, width: int) -> int:
        return width  # room for the word's tokens after the prompt

    def max_prompt_tokens(self, width: int = 1) -> int:
        return self.max_length - len(self.specials.prefix) - width - self.virtual_tokens

    def _length(self, prompt: RenderedPrompt, query: SlotQuery) -> int:
        return len(prompt.before) + len(query.prefix)

    def assemble(self, prompts: Sequence[RenderedPrompt], query: SlotQuery = SlotQuery()) -> ModelInputs:
        sequences = [[*self.specials.prefix, *p.before, *query.prefix] for p in prompts]
        ids, mask = self._pad(sequences, left=True)
        last = torch.full((len(prompts),), ids.shape[1] - 1, device=self.device)
        return ModelInputs(ids, mask, last, {"position_ids": positions_of(mask)})

    def slot_logits(self, inputs: ModelInputs, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        given = {"inputs_embeds": inputs_embeds} if inputs_embeds is not None else {"input_ids": inputs.input_ids}
        output = self.model(**given, attention_mask=inputs.attention_mask, position_ids=inputs.extra["position_ids"],
                            logits_to_keep=1, use_cache=False)
        return output.logits[:, -1]

    def _forward_batch(self, prompts: Sequence[RenderedPrompt], query: SlotQuery) -> torch.Tensor:
        """Prompts that open with the same long text (demonstrations) run it once: its keys and
        values are computed for one row and shared by the batch, which runs only the rest."""
        sequences = [[*self.specials.prefix, *p.before, *query.prefix] for p in prompts]
        shared = min(_common_prefix_length(sequences), min(len(s) for s in sequences) - 1)  # each row keeps a token to run
        if len(prompts) < 2 or shared < SHARED_PREFIX_TOKENS:
            return super()._forward_batch(prompts, query)
        from transformers import DynamicCache

        head = torch.tensor([sequences[0][:shared]], device=self.device)
        if self.soft_prompt is None:
            computed = self.model(input_ids=head, use_cache=True, logits_to_keep=1).cache
        else:  # the virtual tokens open the shared part
            embeds = torch.cat([self.soft_prompt.to(self.device).unsqueeze(0), self.embed(head)], dim=1)
            computed = self.model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1).cache
        opened = shared + self.virtual_tokens
        layers = [(layer.keys.expand(len(prompts), -1, -1, -1), layer.values.expand(len(prompts), -1, -1, -1)) for layer in computed.layers]
        cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        ids, mask = self._pad([s[shared:] for s in sequences], left=True)
        attention = torch.cat([torch.ones((len(prompts), opened), dtype=mask.dtype, device=self.device), mask], dim=1)
        output = self.model(input_ids=ids, attention_mask=attention, position_ids=positions_of(mask, start=opened), cache=cache,
                            use_cache=True, logits_to_keep=1)
        return output.logits[:, -1]


    @torch.inference_mode()
    def templates_next_token_log_probs(self, prompt_sets: Sequence[Sequence[RenderedPrompt]],
                                       query: SlotQuery = SlotQuery()) -> list[torch.Tensor]:
        """Templates that open alike on every example (``{text} ...`` templates open with the
        example's own tokens, ``Review: {text} ...`` ones with those after ``Review:``) run that
        opening once: its keys and values are computed once per example, and each template of the
        group continues from them with the rest of its prompt."""
        query = self.normalize(query)
        if self.soft_prompt is not None or len(prompt_sets) < 2 or not prompt_sets[0]:
            return super().templates_next_token_log_probs(prompt_sets, query)
        sequences = [[[*self.specials.prefix, *p.before, *query.prefix] for p in prompts] for prompts in prompt_sets]
        groups: dict[tuple, list[int]] = {}
        for t, rows in enumerate(sequences):
            groups.setdefault(tuple(tuple(row[:OPENING_KEY_TOKENS]) for row in rows), []).append(t)
        outputs: list[torch.Tensor | None] = [None] * len(prompt_sets)
        for members in groups.values():
            together = self._continue_shared_openings([sequences[t] for t in members]) if len(members) > 1 else None
            for t, output in zip(members, together or [self.next_token_log_probs(prompt_sets[t], query) for t in members]):
                outputs[t] = output
        return outputs

    def _continue_shared_openings(self, sequences: list[list[list[int]]]) -> list[torch.Tensor] | None:
        """Log-probabilities after each template's sequences (``sequences[t][i]``), the opening they
        share on each example run once; None when they share too little for it to pay."""
        from transformers import DynamicCache

        examples = len(sequences[0])
        shared = [min(_common_prefix_length([rows[i] for rows in sequences]), min(len(rows[i]) for rows in sequences) - 1)
                  for i in range(examples)]
        if sum(shared) < TEMPLATE_SHARED_TOKENS * examples:
            return None
        order = sorted(range(examples), key=lambda i: max(len(rows[i]) for rows in sequences))
        outputs = [torch.empty((examples, self.vocab_size), dtype=torch.float32, device=self.device) for _ in sequences]
        for start in range(0, examples, self.batch_size):
            batch = order[start : start + self.batch_size]
            index = torch.tensor(batch, device=self.device)
            opened = torch.tensor([shared[i] for i in batch], device=self.device)
            ids, mask = self._pad([sequences[0][i][: shared[i]] for i in batch], left=True)
            with self.counted(0):
                layers = [(layer.keys, layer.values) for layer in self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions_of(mask), use_cache=True, logits_to_keep=1).cache.layers]
            for rows, output in zip(sequences, outputs):
                rest, rest_mask = self._pad([rows[i][shared[i]:] for i in batch], left=True)
                with self.counted(len(batch)):
                    logits = self.model(input_ids=rest, attention_mask=torch.cat([mask, rest_mask], dim=1),
                                        position_ids=positions_of(rest_mask, start=opened), use_cache=True, logits_to_keep=1,
                                        cache=DynamicCache(ddp_cache_data=layers, config=self.model.config)).logits[:, -1]
                    output[index] = torch.log_softmax(logits.float(), dim=-1)
        with self.counted(0, passes=0):
            return [output.cpu() for output in outputs]


class Seq2SeqBackend(Backend):
    kind = "seq2seq"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        sentinel = tokenizer.convert_tokens_to_ids(SENTINEL)
        if sentinel is None or sentinel == tokenizer.unk_token_id:
            raise UserError(f"model {self.path or ''}: encoder-decoder models are supported when their tokenizer has "
                            f"the T5-style sentinel {SENTINEL}")
        self.sentinel_id = int(sentinel)
        start = model.config.decoder_start_token_id
        self.decoder_start_id = int(start if start is not None else self.pad_id)

    def normalize(self, query: SlotQuery) -> SlotQuery:
        return replace(query, width=1)

    def _slot_tokens(self, width: int) -> int:
        return 1

    def _length(self, prompt: RenderedPrompt, query: SlotQuery) -> int:
        return len(prompt.before) + len(prompt.after)

    def assemble(self, prompts: Sequence[RenderedPrompt], query: SlotQuery = SlotQuery()) -> ModelInputs:
        sequences = [[*self.specials.prefix, *p.before, self.sentinel_id, *p.after, *self.specials.suffix] for p in prompts]
        ids, mask = self._pad(sequences)
        positions = torch.tensor([len(self.specials.prefix) + len(p.before) for p in prompts], device=self.device)
        decoder = torch.tensor([[self.decoder_start_id, self.sentinel_id, *query.prefix]] * len(prompts), device=self.device)
        return ModelInputs(ids, mask, positions, {"decoder_input_ids": decoder})

    def slot_logits(self, inputs: ModelInputs, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        given = {"inputs_embeds": inputs_embeds} if inputs_embeds is not None else {"input_ids": inputs.input_ids}
        output = self.model(
            **given, attention_mask=inputs.attention_mask, decoder_input_ids=inputs.extra["decoder_input_ids"], use_cache=False
        )
        return output.logits[:, -1]


_BACKENDS: dict[str, tuple[type[Backend], type]] = {
    "masked": (MaskedBackend, AutoModelForMaskedLM),
    "causal": (CausalBackend, AutoModelForCausalLM),
    "seq2seq": (Seq2SeqBackend, AutoModelForSeq2SeqLM),
}


def detect_kind(config) -> ModelKind:
    """The model kind from its config: encoder-decoder, masked or causal LM."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if "MaskedLM" in architectures:
        return "masked"
    if "CausalLM" in architectures or "LMHead" in architectures:
        return "causal"
    if type(config) in AutoModelForMaskedLM._model_mapping and type(config) not in AutoModelForCausalLM._model_mapping:
        return "masked"
    return "causal"


def load_backend(
    model: str | Path, *, kind: str | None = None, device: str = "auto", batch_size: int = 32, max_length: int | None = None,
    precision: str = "float32",
) -> Backend:
    """Load a registered model name or a local Hugging Face folder, frozen, as a backend computing in
    ``precision`` (``auto``: see :func:`resolve_precision`)."""
    from transformers.utils import logging as transformers_logging

    from autoprompt_search.assets import resolve_model

    transformers_logging.disable_progress_bar()
    device = checked_device(device)
    precision = resolve_precision(precision, device)
    path = resolve_model(str(model))
    # Code in a model folder is never run: trust_remote_code=False (never None, with which transformers asks on
    # the terminal whether to run it), so a config or tokenizer whose auto_map names its own classes gets
    # transformers' built-in ones, or is refused; and weights are read from safetensors only.
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise UserError(f"model folder {path}: cannot read its config.json ({_custom_code(path) or error})") from None
    kind = kind or detect_kind(config)
    if kind not in _BACKENDS:
        raise UserError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    backend_class, auto_class = _BACKENDS[kind]
    mapping = getattr(auto_class, "_model_mapping", None)  # the config classes the auto class loads
    if mapping is not None and type(config) not in mapping:  # refused here, not by a page-long transformers error
        fits = [name for name, (_, auto) in _BACKENDS.items() if type(config) in getattr(auto, "_model_mapping", ())]
        why = _custom_code(path) or (f"it loads as {' or '.join(fits)}" if fits else "it is not a masked, causal or seq2seq language model")
        raise UserError(f"model folder {path}: its model type {config.model_type!r} cannot be loaded as a {kind} language model; {why}")
    from safetensors import SafetensorError

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        loaded = auto_class.from_pretrained(path, dtype=torch.float32, use_safetensors=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        raise UserError(f"model folder {path}: cannot load it as a {kind} language model ({_custom_code(path) or error})") from None
    limit = _position_limit(config, tokenizer)
    max_length = min(max_length or DEFAULT_MAX_LENGTH, limit) if limit else (max_length or DEFAULT_MAX_LENGTH)
    return backend_class(loaded, tokenizer, path=path, device=device, batch_size=batch_size, max_length=max_length,
                         precision=precision)


def checked_device(device: str) -> str:
    """``device`` checked against this machine (``auto``: the first CUDA device if there is one, else the CPU)."""
    resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        parsed = torch.device(resolved)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{device!r} is not a device (cpu, cuda, cuda:N, mps or auto)", option="device")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{device}: no CUDA device is available on this machine", option="device")
        if parsed.index is not None and parsed.index >= count:
            raise UserError(f"{device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}", option="device")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{device}: no MPS device is available on this machine", option="device")
    return resolved


def resolve_precision(precision: str, device: str) -> str:
    """``precision`` itself, or for ``auto`` bfloat16 where ``device`` has native bfloat16 arithmetic
    (a CUDA GPU of compute capability 8 or later; an x86 CPU with AVX512-BF16 or AMX), else float32:
    emulated bfloat16 is slower than float32."""
    if precision not in PRECISION_CHOICES:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}", option="precision")
    if precision != "auto":
        return precision
    parsed = torch.device(device)
    if parsed.type == "cuda":  # compute capability 8 (Ampere) and later; earlier GPUs emulate it
        native = torch.cuda.get_device_capability(parsed)[0] >= 8
    elif parsed.type == "cpu":  # the instructions themselves: oneDNN also "supports" bfloat16 by emulation
        native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    else:
        native = False
    return "bfloat16" if native else "float32"


def _set_precision(model: PreTrainedModel, device: str, precision: str) -> None:
    """Wrap the model's forward passes for ``precision``. ``bfloat16``: its matrix products run in
    bfloat16 (autocast: weights stay float32, norms and softmax stay float32), about twice as fast
    on CPUs with bfloat16 instructions (AVX512-BF16, AMX) and on GPUs, and its vocabulary projection
    stays in float32, which keeps the slot's scores closer to float32's (measured: results/README.md).

    In both precisions the projection runs as one matrix product: transformers hands it a strided
    slice (the slot's position of every row), which torch multiplies as one matrix-vector product per
    row, reading the whole projection matrix each time (150 ms of a 2.8 s batch of 32 MR prompts for
    SmolLM2 on the 2-core CPU)."""
    device_type = torch.device(device).type

    def in_bfloat16(module, forward, /, *args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return forward(*args, **kwargs)

    def as_one_product(head, forward, hidden, /, *args, **kwargs):
        weight = getattr(head, "weight", None)
        dtype = weight.dtype if weight is not None else torch.float32  # float64 where a test made the model so
        with torch.autocast(device_type, enabled=False):
            return forward(hidden.to(dtype).contiguous(), *args, **kwargs)

    if precision == "bfloat16":
        for module in {id(m): m for m in (model, model.base_model)}.values():
            _wrap_forward(module, in_bfloat16)
    head = model.get_output_embeddings()
    if head is not None:
        _wrap_forward(head, as_one_product)


def _wrap_forward(module: torch.nn.Module, around) -> None:
    """Make ``module.forward(...)`` call ``around(module, forward, ...)`` with the module's own forward.

    The module and its bound method are held weakly: the wrapper lives on the module, and a strong
    reference would close a cycle (module -> wrapper -> method -> module) that keeps a dropped model
    in memory until the garbage collector's next full pass."""
    forward, owner = module.forward, weakref.ref(module)
    method = weakref.WeakMethod(forward) if isinstance(forward, types.MethodType) else (lambda: forward)

    def run(*args, **kwargs):
        return around(owner(), method(), *args, **kwargs)

    run.__name__, run.__doc__ = getattr(forward, "__name__", "forward"), forward.__doc__
    try:
        run.__signature__ = inspect.signature(forward)  # what transformers reads to see which arguments a model takes
    except (TypeError, ValueError):  # a forward without a readable signature: none to pass on
        pass
    module.forward = run


def _custom_code(path: Path) -> str | None:
    """Why a folder needs code of its own to load, when its config or tokenizer config names such code (``auto_map``)."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            auto_map = json.loads((path / name).read_text(encoding="utf-8")).get("auto_map")
        except (OSError, ValueError, AttributeError):
            continue
        if auto_map:
            return (f"{name} names code of its own (auto_map) for classes transformers does not have built in; "
                    "autoprompt_search never runs code from a model folder")
    return None


def _position_limit(config, tokenizer: PreTrainedTokenizerBase) -> int | None:
    limits = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions")]
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max and model_max < 1_000_000:
        limits.append(model_max)
    limits = [int(v) for v in limits if isinstance(v, int) and v > 0]
    return min(limits) if limits else None


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for other in sequences[1:]:
        length = next((i for i in range(length) if other[i] != first[i]), length)
    return length


def positions_of(attention_mask: torch.Tensor, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Position ids that count only the real tokens of left-padded rows, from ``start`` per row."""
    if isinstance(start, torch.Tensor):
        start = start.unsqueeze(1)
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0) + start


def _pad_id(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> int:
    for candidate in (tokenizer.pad_token_id, getattr(model.config, "pad_token_id", None), tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _separate_mlm_head(model: PreTrainedModel) -> torch.nn.Module | None:
    """The MLM head when the model is exactly ``base_model`` + one head, so only slots are projected."""
    children = [module for module in model.children() if module is not model.base_model]
    if len(children) == 1 and model.base_model is not model:
        return children[0]
    return None


def _parameters_hash(model: PreTrainedModel) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
