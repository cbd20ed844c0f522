"""Key/value caches of the text before the triggers, for causal models, computed once per example.

In a template like ``{text} In summary, this film is [T] [T] [T] {mask}`` everything before the
first trigger is fixed for an example during a whole trigger search: its keys and values are
computed once (in one batched pass for all examples not seen yet), kept per example, and every
later gradient pass, candidate pass and dev evaluation runs only the part from the first trigger
on. A batch's cache is assembled from the stored rows, left-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from autoprompt_search.backends import Backend, ModelInputs, positions_of


@dataclass(frozen=True)
class SplitBatch:
    """Rows cut before their first trigger: the prefix tokens and the rest (left-padded)."""

    prefixes: list[tuple[int, ...]]
    suffix_ids: torch.Tensor  # may hold trigger placeholders
    suffix_mask: torch.Tensor


@dataclass(frozen=True)
class BatchCache:
    cache: DynamicCache
    prefix_mask: torch.Tensor
    prefix_lengths: torch.Tensor

    def attention(self, suffix_mask: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.prefix_mask, suffix_mask], dim=1)

    def positions(self, suffix_mask: torch.Tensor) -> torch.Tensor:
        return positions_of(suffix_mask, start=self.prefix_lengths.to(suffix_mask.device))

    def extend(self, model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> "BatchCache":
        """This cache with the (left-padded) ``ids`` run after the prefix: a longer shared prefix.
        The forward appends to the underlying cache, so this object must not be used afterwards."""
        model(input_ids=ids, attention_mask=self.attention(mask), position_ids=self.positions(mask), cache=self.cache,
              use_cache=True, logits_to_keep=1)
        return BatchCache(self.cache, self.attention(mask), self.prefix_lengths + mask.sum(dim=1).to(self.prefix_lengths.device))

    def packed_attention(self, suffix_mask: torch.Tensor, blocks: int, model: PreTrainedModel) -> torch.Tensor:
        """``[batch, 1, blocks * width, prefix + blocks * width]`` for ``blocks`` copies of the
        suffix side by side in one row: a token sees the real prefix tokens, and the real tokens of
        its own block up to itself. Boolean for SDPA, additive for the other attention kernels."""
        width = suffix_mask.shape[1]
        length = blocks * width
        block_of = torch.arange(length, device=suffix_mask.device) // width
        lower = torch.ones(length, length, dtype=torch.bool, device=suffix_mask.device).tril()
        own_block = (block_of.unsqueeze(1) == block_of.unsqueeze(0)) & lower
        suffix_part = own_block.unsqueeze(0) & suffix_mask.bool().repeat(1, blocks).unsqueeze(1)
        prefix_part = self.prefix_mask.bool().unsqueeze(1).expand(-1, length, -1)
        allowed = torch.cat([prefix_part, suffix_part], dim=2).unsqueeze(1)
        if getattr(model.config, "_attn_implementation", "sdpa") == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=model.dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(model.dtype).min)


class PrefixStore:
    """Per-example key/value caches of the prompt up to its first trigger (causal models)."""

    def __init__(self, backend: Backend, first_trigger: int) -> None:
        self.backend = backend
        self.first_trigger = first_trigger  # the placeholder id of the first trigger in the template
        self._rows: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._next: dict[tuple[int, ...], torch.Tensor] = {}  # log-probs of the token after each prefix
        self.passes = 0

    def split(self, inputs: ModelInputs) -> SplitBatch | None:
        """Cut each row before its first trigger; ``None`` when some row has nothing before it."""
        ids, mask = inputs.input_ids, inputs.attention_mask
        pads = (mask == 0).sum(dim=1)
        first = (ids == self.first_trigger).int().argmax(dim=1)
        if bool(((first - pads) <= 0).any()):
            return None
        prefixes = [tuple(ids[b, pads[b] : first[b]].tolist()) for b in range(len(ids))]
        suffix_ids, suffix_mask = self.backend._pad([ids[b, first[b] :].tolist() for b in range(len(ids))], left=True)
        return SplitBatch(prefixes, suffix_ids, suffix_mask)

    def batch(self, prefixes: list[tuple[int, ...]]) -> BatchCache:
        """A fresh cache for these prefixes (the forward it is given to appends to it)."""
        self._compute([p for p in dict.fromkeys(prefixes) if p not in self._rows])
        longest = max(len(p) for p in prefixes)
        layers = []
        for layer in range(len(self._rows[prefixes[0]])):
            keys, values = self._rows[prefixes[0]][layer]
            batch_keys = keys.new_zeros((len(prefixes), keys.shape[0], longest, keys.shape[2]))
            batch_values = values.new_zeros((len(prefixes), values.shape[0], longest, values.shape[2]))
            for row, prefix in enumerate(prefixes):
                stored_keys, stored_values = self._rows[prefix][layer]
                batch_keys[row, :, longest - len(prefix) :] = stored_keys
                batch_values[row, :, longest - len(prefix) :] = stored_values
            layers.append((batch_keys, batch_values))
        _, prefix_mask = self.backend._pad([list(p) for p in prefixes], left=True)
        lengths = torch.tensor([len(p) for p in prefixes], device=prefix_mask.device)
        return BatchCache(DynamicCache(ddp_cache_data=layers, config=self.backend.model.config), prefix_mask, lengths)

    def next_log_probs(self, prefixes: list[tuple[int, ...]]) -> torch.Tensor:
        """``[batch, vocab]`` the model's log-probabilities of the token that follows each prefix."""
        self._compute([p for p in dict.fromkeys(prefixes) if p not in self._rows])
        return torch.stack([self._next[prefix] for prefix in prefixes])

    @torch.no_grad()  # rows stored under inference mode are fine too: batch() copies them into fresh tensors
    def _compute(self, prefixes: list[tuple[int, ...]]) -> None:
        size = self.backend.batch_size
        for start in range(0, len(prefixes), size):
            part = prefixes[start : start + size]
            ids, mask = self.backend._pad([list(p) for p in part], left=True)
            with self.backend.counted(len(part)):
                output = self.backend.model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask),
                                            use_cache=True, logits_to_keep=1)
            self.passes += 1
            cache, following = output.cache, torch.log_softmax(output.logits[:, -1].float(), dim=-1)
            for row, prefix in enumerate(part):
                self._next[prefix] = following[row].to("cpu", copy=True)  # read only by the fluency constraint
                offset = ids.shape[1] - len(prefix)
                self._rows[prefix] = [(layer.keys[row, :, offset:].clone(), layer.values[row, :, offset:].clone())
                                      for layer in cache.layers]
