"""Gradient-guided trigger search, in the manner of AutoPrompt (Shin et al., 2020), with HotFlip.

A template with trigger slots ``[T]`` starts from seed tokens. Each step takes the gradient of
the label loss on a batch of train examples with respect to the trigger embeddings, proposes for
one slot the top-k replacement tokens by the first-order estimate ``grad . (e_new - e_old)``
(HotFlip), scores every candidate by its actual loss on the batch, and keeps the best if it
improves. Dev accuracy after each change decides which triggers a restart hands over, and stops
a restart that has not improved for ``patience`` steps.

Candidate scoring is where existing tools are slowest, so it is batched: all candidates of a step
go through a few forward passes (examples x candidates, chunked to bound memory) and only the
slot's vocabulary logits are computed. For causal models the text before the first trigger runs
once per example for the whole search (:mod:`prefix_cache`); every gradient pass, candidate pass
and dev evaluation continues from its key/value cache, the candidates of one example packed into
one row behind it.
:func:`reference_candidate_losses` is AutoPrompt's per-candidate loop, kept as the baseline that
tests and the benchmark compare against.

Found triggers are written into the template as text, so what the search finds is an ordinary
template that every downstream tool can use; a trigger that does not survive that round trip is
reported and its template dropped.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch

from autoprompt_search.backends import Backend, ModelInputs
from autoprompt_search.candidates.generators.triggers import TRIGGER_LOSSES
from autoprompt_search.candidates.prefix_cache import PrefixStore, SplitBatch
from autoprompt_search.errors import UserError
from autoprompt_search.scoring import MAX_WORD_TOKENS
from autoprompt_search.templates import RenderedPrompt, Template, TemplateRenderer
from autoprompt_search.tokenization import decode_token

TriggerLoss = Literal["cross_entropy", "label_likelihood"]
TriggerPosition = Literal["after", "before", "slot"]
ROWS_PER_PASS = 1024  # (example, candidate) pairs per forward pass: bounds memory
TOKENS_PER_PASS = 32_768  # tokens per forward pass, over all rows
PACKED_ROW_TOKENS = 1024  # tokens of one packed row: its attention mask is quadratic in this


def placeholder(index: int) -> int:
    """The id that stands for trigger ``index`` in rendered prompts until a token is chosen."""
    return -(index + 1)


@dataclass
class PassCounter:
    forward: int = 0
    backward: int = 0
    rows: int = 0


class TriggerObjective:
    """The label loss of one template with trigger slots, and its gradient and candidates.

    ``label_token_ids[c]`` lists the slot token of each word of class ``c`` (the first token of a
    longer word). A class's log-score is the log of the mean probability of its tokens, as the
    scorer combines words. ``cross_entropy`` is the loss of the softmax over class scores (what
    the classifier decides by); ``label_likelihood`` is AutoPrompt's negative log-likelihood of
    the gold class's words.
    """

    def __init__(self, backend: Backend, template: Template, label_token_ids: Sequence[Sequence[int]],
                 loss: TriggerLoss = "cross_entropy", rows_per_pass: int = ROWS_PER_PASS, share_prefix: bool = True) -> None:
        if template.n_triggers == 0:
            raise UserError(f"trigger search: template {template.source!r} has no trigger slot [T]")
        if loss not in TRIGGER_LOSSES:
            raise UserError(f"trigger search: unknown loss {loss!r}; choose one of {', '.join(TRIGGER_LOSSES)}")
        template.check_for_model(backend.kind)
        self.backend = backend
        self.template = template
        self.loss = loss
        self.rows_per_pass = rows_per_pass
        self.label_token_ids = [torch.tensor(list(ids), dtype=torch.long) for ids in label_token_ids]
        self.counter = PassCounter()
        placeholders = [placeholder(j) for j in range(template.n_triggers)]
        self._renderer = TemplateRenderer(template, backend.tokenizer, trigger_ids=placeholders)
        packable = getattr(backend.model.config, "_attn_implementation", "sdpa") in ("sdpa", "eager")
        self.prefixes = PrefixStore(backend, placeholder(0)) if share_prefix and packable and backend.kind == "causal" else None

    @property
    def n_triggers(self) -> int:
        return self.template.n_triggers

    @property
    def forward_passes(self) -> int:
        return self.counter.forward + (self.prefixes.passes if self.prefixes is not None else 0)

    def render(self, texts: Sequence[Mapping[str, str]]) -> list[RenderedPrompt]:
        """Prompts with placeholders at the trigger slots, truncated as the scorer truncates."""
        return self._renderer.render(texts, self.backend.max_prompt_tokens(MAX_WORD_TOKENS))

    def inputs(self, prompts: Sequence[RenderedPrompt]) -> ModelInputs:
        return self.backend.assemble(prompts)

    # -- the loss --------------------------------------------------------------------------
    def class_log_scores(self, logits: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)
        columns = [torch.logsumexp(log_probs[:, ids.to(logits.device)], dim=1) - np.log(len(ids)) for ids in self.label_token_ids]
        return torch.stack(columns, dim=1)

    def row_losses(self, logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        scores = self.class_log_scores(logits)
        if self.loss == "cross_entropy":
            scores = torch.log_softmax(scores, dim=1)
        return -scores.gather(1, gold.view(-1, 1).to(scores.device)).squeeze(1)

    @staticmethod
    def fill(input_ids: torch.Tensor, triggers: Sequence[int]) -> torch.Tensor:
        """The ids with each placeholder replaced by its trigger token."""
        filled = input_ids.clone()
        for j, token in enumerate(triggers):
            filled[input_ids == placeholder(j)] = int(token)
        return filled

    # -- gradient --------------------------------------------------------------------------
    def loss_and_gradient(self, inputs: ModelInputs, triggers: Sequence[int], gold: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Mean loss over the batch, and its gradient ``[n_triggers, hidden]`` with respect to each
        trigger's input embedding (summed over the positions and rows where it sits)."""
        split = self.prefixes.split(inputs) if self.prefixes is not None else None
        ids = split.suffix_ids if split is not None else inputs.input_ids
        cached = self.prefixes.batch(split.prefixes) if split is not None else None
        with torch.enable_grad(), self._pass(len(ids), backward=True):
            embeds = self.backend.embed(self.fill(ids, triggers)).detach().requires_grad_(True)
            if cached is not None:  # only the part from the first trigger on runs, after the stored prefix
                logits = self.backend.model(inputs_embeds=embeds, attention_mask=cached.attention(split.suffix_mask),
                                            position_ids=cached.positions(split.suffix_mask), cache=cached.cache,
                                            use_cache=True, logits_to_keep=1).logits[:, -1]
            else:
                logits = self.backend.slot_logits(inputs, inputs_embeds=embeds)
            loss = self.row_losses(logits, gold).mean()
            loss.backward()
        gradient = torch.stack([embeds.grad[ids == placeholder(j)].sum(dim=0) for j in range(self.n_triggers)])
        return float(loss.detach()), gradient.float()

    def hotflip_estimates(self, gradient: torch.Tensor, index: int, current: int) -> torch.Tensor:
        """``[vocab]`` first-order loss change of putting each token at trigger ``index``."""
        embeddings = self.backend.model.get_input_embeddings().weight.detach()
        return (embeddings - embeddings[current]) @ gradient[index].to(embeddings.dtype)

    def hotflip_candidates(self, gradient: torch.Tensor, index: int, current: int, allowed: torch.Tensor, k: int) -> torch.Tensor:
        """The ``k`` allowed tokens (not the current one) with the lowest estimated loss."""
        estimates = self.hotflip_estimates(gradient, index, current).float().cpu()
        estimates[~allowed[: len(estimates)]] = float("inf")
        estimates[current] = float("inf")
        k = min(k, int(torch.isfinite(estimates).sum()))
        return torch.topk(-estimates, k).indices

    # -- fluency ---------------------------------------------------------------------------
    @torch.inference_mode()
    def next_token_log_probs(self, inputs: ModelInputs, triggers: Sequence[int], index: int) -> torch.Tensor | None:
        """``[vocab]`` the causal model's log-probability of each token at trigger ``index`` given
        the tokens before it, averaged over the batch: how natural the token reads there. None
        when nothing precedes the trigger in some row (the model has no preference to read)."""
        if self.backend.kind != "causal":
            raise UserError("trigger search: fluency needs a causal model (it reads the next-token distribution)")
        split = self.prefixes.split(inputs) if self.prefixes is not None else None
        if split is not None and index == 0:  # the prefix's own last position predicts the first trigger
            return self.prefixes.next_log_probs(split.prefixes).mean(dim=0).cpu()
        ids, mask = (split.suffix_ids, split.suffix_mask) if split is not None else (inputs.input_ids, inputs.attention_mask)
        before = (ids == placeholder(index)).int().argmax(dim=1) - 1
        if bool((before < (mask == 0).sum(dim=1)).any()):
            return None
        columns = torch.unique(before)  # only these positions' logits are computed
        with self._pass(len(ids)):
            if split is not None:
                cached = self.prefixes.batch(split.prefixes)
                logits = self.backend.model(input_ids=self.fill(ids, triggers), attention_mask=cached.attention(mask),
                                            position_ids=cached.positions(mask), cache=cached.cache, use_cache=True,
                                            logits_to_keep=columns).logits
            else:
                logits = self.backend.model(input_ids=self.fill(ids, triggers), attention_mask=mask,
                                            position_ids=inputs.extra["position_ids"], use_cache=False, logits_to_keep=columns).logits
        rows = logits[torch.arange(len(ids), device=logits.device), torch.searchsorted(columns, before)]
        return torch.log_softmax(rows.float(), dim=-1).mean(dim=0).cpu()

    # -- candidate losses ----------------------------------------------------------------
    @torch.inference_mode()
    def candidate_losses(self, inputs: ModelInputs, triggers: Sequence[int], index: int, candidates: torch.Tensor,
                         gold: torch.Tensor) -> torch.Tensor:
        """``[len(candidates)]`` mean batch loss with trigger ``index`` set to each candidate, in
        batched passes; causal models continue from the stored key/value cache of the text."""
        split = self.prefixes.split(inputs) if self.prefixes is not None else None
        if split is not None:
            return self._shared_prefix_losses(split, triggers, index, candidates, gold)
        return self._batched_losses(inputs, triggers, index, candidates, gold)

    def _chunks(self, candidates: torch.Tensor, batch: int, width: int, packed: bool = False) -> list[torch.Tensor]:
        """Candidates in chunks: one pass scores at most ``rows_per_pass`` (example, candidate) pairs
        and ``TOKENS_PER_PASS`` tokens (``width`` per candidate and example), and a packed row holds
        at most ``PACKED_ROW_TOKENS``."""
        per_pass = min(self.rows_per_pass // max(1, batch), TOKENS_PER_PASS // max(1, batch * width))
        if packed:
            per_pass = min(per_pass, PACKED_ROW_TOKENS // max(1, width))
        per_pass = max(1, per_pass)
        return [candidates[start : start + per_pass] for start in range(0, len(candidates), per_pass)]

    def _batched_losses(self, inputs: ModelInputs, triggers: Sequence[int], index: int, candidates: torch.Tensor,
                        gold: torch.Tensor) -> torch.Tensor:
        filled = replace(inputs, input_ids=self.fill(inputs.input_ids, triggers))
        marker = inputs.input_ids == placeholder(index)
        batch = len(filled.input_ids)
        losses = []
        for chunk in self._chunks(candidates, batch, filled.input_ids.shape[1]):
            repeated = filled.repeat_rows(len(chunk))
            ids = repeated.input_ids.clone()
            slot_rows = marker.repeat_interleave(len(chunk), dim=0)
            ids[slot_rows] = chunk.to(ids.device).repeat(batch)  # one slot per row, rows b * m + c
            with self._pass(len(ids)):
                logits = self.backend.slot_logits(replace(repeated, input_ids=ids))
            losses.append(self.row_losses(logits, gold.repeat_interleave(len(chunk))).view(batch, len(chunk)).mean(dim=0))
        return torch.cat(losses).double().cpu()

    def _shared_prefix_losses(self, split: SplitBatch, triggers: Sequence[int], index: int, candidates: torch.Tensor,
                              gold: torch.Tensor) -> torch.Tensor:
        """For each chunk of candidates, the stored prefix cache is extended by what precedes the
        flipped trigger (earlier triggers, template words: a few tokens per example); then all
        candidates of the chunk continue from it in one packed row per example, each candidate's
        copy of the rest a block that sees the prefix and its own block only (a 4D attention
        mask): the shared part is neither recomputed nor copied per candidate."""
        suffix_ids = self.fill(split.suffix_ids, triggers)
        flips = (split.suffix_ids == placeholder(index)).int().argmax(dim=1)
        pads = (split.suffix_mask == 0).sum(dim=1)
        before = [suffix_ids[b, pads[b] : flips[b]].tolist() for b in range(len(suffix_ids))]
        rest_ids, rest_mask = self.backend._pad([suffix_ids[b, flips[b] :].tolist() for b in range(len(suffix_ids))], left=True)
        width = rest_ids.shape[1]
        flip_columns = (rest_mask == 0).sum(dim=1)  # the flipped trigger is each row's first real token
        batch = len(rest_ids)
        losses = []
        for chunk in self._chunks(candidates, batch, width, packed=True):
            m = len(chunk)
            cached = self.prefixes.batch(split.prefixes)
            if any(before):
                before_ids, before_mask = self.backend._pad(before, left=True)
                with self._pass(batch):
                    cached = cached.extend(self.backend.model, before_ids, before_mask)
            rows = rest_ids.repeat(1, m)
            blocks = torch.arange(m, device=rows.device) * width
            columns = (blocks.unsqueeze(0) + flip_columns.unsqueeze(1)).flatten()
            rows[torch.arange(batch, device=rows.device).repeat_interleave(m), columns] = chunk.to(rows.device).repeat(batch)
            keep = blocks + width - 1  # each block's last token: the slot's prediction
            with self._pass(batch * m):
                output = self.backend.model(input_ids=rows, attention_mask=cached.packed_attention(rest_mask, m, self.backend.model),
                                            position_ids=cached.positions(rest_mask).repeat(1, m), cache=cached.cache,
                                            use_cache=True, logits_to_keep=keep)
            logits = output.logits.reshape(batch * m, -1)  # row b * m + c
            losses.append(self.row_losses(logits, gold.repeat_interleave(m)).view(batch, m).mean(dim=0))
        return torch.cat(losses).double().cpu()

    def _logits(self, inputs: ModelInputs, triggers: Sequence[int]) -> torch.Tensor:
        """Slot logits of a batch with these triggers (from the stored prefix cache where there is one)."""
        split = self.prefixes.split(inputs) if self.prefixes is not None else None
        cached = self.prefixes.batch(split.prefixes) if split is not None else None
        with self._pass(len(inputs.input_ids)):
            if cached is None:
                return self.backend.slot_logits(replace(inputs, input_ids=self.fill(inputs.input_ids, triggers)))
            return self.backend.model(input_ids=self.fill(split.suffix_ids, triggers), attention_mask=cached.attention(split.suffix_mask),
                                      position_ids=cached.positions(split.suffix_mask), cache=cached.cache,
                                      use_cache=True, logits_to_keep=1).logits[:, -1]

    @contextmanager
    def _pass(self, rows: int, backward: bool = False) -> Iterator[None]:
        """Count a pass over ``rows`` (example, candidate) rows here and in the backend's totals."""
        self.counter.forward += 1
        self.counter.backward += int(backward)
        self.counter.rows += rows
        with self.backend.counted(rows):
            yield

    # -- evaluation ----------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self, prompts: Sequence[RenderedPrompt], triggers: Sequence[int], gold: torch.Tensor) -> tuple[float, float]:
        """(mean loss, accuracy) of the triggers on ``prompts``. The accuracy is prior-calibrated
        (each class's mean score over these prompts subtracted, no labels used), as the search can
        judge prompts: a prompt whose raw scores favour one class is not useless."""
        losses, scores = [], []
        size = self.backend.batch_size
        for start in range(0, len(prompts), size):
            logits = self._logits(self.inputs(prompts[start : start + size]), triggers)
            losses.append(self.row_losses(logits, gold[start : start + size]))
            scores.append(self.class_log_scores(logits).cpu())
        scores_all = torch.cat(scores)
        predictions = (scores_all - scores_all.mean(dim=0)).argmax(dim=1)
        return float(torch.cat(losses).mean()), float((predictions == gold).float().mean())


@torch.inference_mode()
def reference_candidate_losses(objective: TriggerObjective, inputs: ModelInputs, triggers: Sequence[int], index: int,
                               candidates: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """AutoPrompt's loop: one full forward pass of the batch per candidate, logits at every
    position, the slot's row picked afterwards. The baseline the batched path must match."""
    filled = objective.fill(inputs.input_ids, triggers)
    marker = inputs.input_ids == placeholder(index)
    backend = objective.backend
    rows = torch.arange(len(filled), device=filled.device)
    losses = []
    for candidate in candidates.tolist():
        ids = filled.clone()
        ids[marker] = candidate
        logits = backend.model(input_ids=ids, attention_mask=inputs.attention_mask, **inputs.extra).logits
        slot = logits[rows, inputs.slot_positions] if backend.kind != "seq2seq" else logits[:, -1]
        losses.append(objective.row_losses(slot, gold).mean())
    return torch.stack(losses).double().cpu()


@dataclass
class TriggerRun:
    """What one restart found: tokens, the template written with them, and how it went."""

    restart: int
    trigger_ids: list[int]
    tokens: list[str]
    template: str | None  # None when the tokens do not survive the text round trip
    dev_loss: float
    dev_accuracy: float
    steps: int
    improvements: int
    changed: bool  # whether the handed-over triggers differ from where the restart started
    history: list[dict[str, float]] = field(default_factory=list)


def search_triggers(objective: TriggerObjective, train: Sequence[Mapping[str, str]], train_gold: Sequence[int],
                    dev: Sequence[Mapping[str, str]], dev_gold: Sequence[int], *, init_ids: Sequence[int],
                    allowed: Sequence[torch.Tensor], steps: int, candidates: int, restarts: int, batch_size: int,
                    patience: int | None, seed: int, fluency: int | None = None,
                    on_step: Callable[[dict[str, float]], None] | None = None) -> list[TriggerRun]:
    """Run ``restarts`` searches (the first from ``init_ids``, the others from random allowed
    tokens) and return each restart's best triggers by dev accuracy, then dev loss.

    ``allowed[j]`` is the bool vocabulary mask of trigger ``j``. With ``fluency`` (causal models),
    a step's HotFlip candidates come only from the ``fluency`` allowed tokens the model itself finds
    likeliest at that trigger, given the batch's text and the triggers before it.
    """
    rng = np.random.default_rng(seed)
    train_prompts = objective.render(train)
    dev_prompts = objective.render(dev)
    train_labels = torch.tensor(list(train_gold), dtype=torch.long)
    dev_labels = torch.tensor(list(dev_gold), dtype=torch.long)
    runs = []
    for restart in range(restarts):
        if restart == 0:
            triggers = [int(t) for t in init_ids]
        else:
            triggers = [int(rng.choice(torch.nonzero(mask).flatten().numpy())) for mask in allowed]
        start = list(triggers)
        dev_loss, dev_accuracy = objective.evaluate(dev_prompts, triggers, dev_labels)
        best = (dev_accuracy, -dev_loss, list(triggers))
        history = [{"step": 0, "train_loss": None, "dev_loss": dev_loss, "dev_accuracy": dev_accuracy}]
        stale = improvements = step = 0
        for step in range(1, steps + 1):
            rows = np.sort(rng.choice(len(train_prompts), size=min(batch_size, len(train_prompts)), replace=False))
            inputs = objective.inputs([train_prompts[i] for i in rows])
            gold = train_labels[torch.from_numpy(rows)]
            loss, gradient = objective.loss_and_gradient(inputs, triggers, gold)
            index = int(rng.integers(objective.n_triggers))
            natural = objective.next_token_log_probs(inputs, triggers, index) if fluency is not None else None
            eligible = allowed[index] if natural is None else most_likely(allowed[index], natural, fluency)
            proposals = objective.hotflip_candidates(gradient, index, triggers[index], eligible, candidates)
            record = {"step": step, "train_loss": loss, "dev_loss": dev_loss, "dev_accuracy": dev_accuracy}
            if fluency is not None:  # False where nothing precedes the trigger: no distribution to constrain it by
                record["fluent"] = natural is not None
            if len(proposals):
                losses = objective.candidate_losses(inputs, triggers, index, proposals, gold)
                if float(losses.min()) < loss:
                    triggers[index] = int(proposals[int(losses.argmin())])
                    improvements += 1
                    dev_loss, dev_accuracy = objective.evaluate(dev_prompts, triggers, dev_labels)
                    record.update(train_loss=float(losses.min()), dev_loss=dev_loss, dev_accuracy=dev_accuracy)
            history.append(record)
            if on_step is not None:
                on_step(record)
            if (dev_accuracy, -dev_loss) > best[:2]:
                best, stale = (dev_accuracy, -dev_loss, list(triggers)), 0
            else:
                stale += 1
                if patience is not None and stale >= patience:
                    break
        chosen = best[2]
        tokens = [decode_token(objective.backend.tokenizer, t) for t in chosen]
        runs.append(TriggerRun(restart, chosen, tokens, written_template(objective, chosen, train[: min(8, len(train))]),
                               dev_loss=-best[1], dev_accuracy=best[0], steps=step, improvements=improvements,
                               changed=chosen != start, history=history))
    return runs


def most_likely(allowed: torch.Tensor, log_probs: torch.Tensor, count: int) -> torch.Tensor:
    """The bool mask of the ``count`` allowed tokens with the highest ``log_probs``."""
    size = min(len(allowed), len(log_probs))
    scores = log_probs[:size].float().clone()
    scores[~allowed[:size]] = float("-inf")
    keep = torch.zeros_like(allowed)
    top = torch.topk(scores, min(count, int(allowed[:size].sum()))).indices
    keep[top] = True
    return keep


def written_template(objective: TriggerObjective, trigger_ids: Sequence[int], texts: Sequence[Mapping[str, str]]) -> str | None:
    """The template with its triggers as text, if it renders to exactly the same ids on ``texts``."""
    tokenizer = objective.backend.tokenizer
    words = iter(decode_token(tokenizer, t).strip().replace("{", "{{").replace("}", "}}") for t in trigger_ids)
    source = re.sub(re.escape("[T]"), lambda _: next(words), objective.template.source)
    try:
        written = Template.parse(source)
    except UserError:
        return None
    limit = objective.backend.max_prompt_tokens(MAX_WORD_TOKENS)
    with_ids = TemplateRenderer(objective.template, tokenizer, trigger_ids=trigger_ids).render(texts, limit)
    as_text = TemplateRenderer(written, tokenizer).render(texts, limit)
    return source if with_ids == as_text else None


def insert_triggers(template: Template, count: int, position: TriggerPosition) -> str:
    """``count`` trigger slots right after the template's last field (``after``), right before its
    first (``before``), or right before the label slot (``slot``, AutoPrompt's place)."""
    names = [m for m in re.finditer(r"(?<!\{)\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}(?!\})", template.source)]
    fields = [m for m in names if m.group(1) != "mask"]
    slots = " ".join(["[T]"] * count)
    if position == "slot":
        start = next(m for m in names if m.group(1) == "mask").start()
        head = template.source[:start].rstrip()
        return f"{head} {slots}{template.source[len(head):start]}{template.source[start:]}"
    if position == "after":
        end = fields[-1].end()
        return f"{template.source[:end]} {slots}{template.source[end:]}"
    start = fields[0].start()
    return f"{template.source[:start]}{slots} {template.source[start:]}"
