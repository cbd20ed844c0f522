"""The training loop: a short torch loop (AdamW, linear decay, gradient clipping) over the run's
few-shot train split, the dev split scored after every epoch, the best epoch kept, and a checkpoint
after every epoch from which a killed run continues exactly.

Determinism under a seed: the order of each epoch is drawn from (seed, epoch) and the random state
of every step (dropout) from (seed, step), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from tqdm import tqdm

from autoprompt_search.logs import Log
from autoprompt_search.training.checkpoint import Checkpoint, TrainingState, copy_into
from autoprompt_search.training.methods import Method


@dataclass(frozen=True)
class FitConfig:
    epochs: int  # the learning rate decays linearly to zero over this many epochs
    learning_rate: float
    batch_size: int
    seed: int
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    stop_after: int | None = None  # stop after this many epochs, on the same schedule (a refit to the epoch chosen on dev)
    epoch_zero_cap: float | None = None  # epoch 0 competes with at most this accuracy (see selection_accuracy)

    @property
    def last_epoch(self) -> int:
        return self.epochs if self.stop_after is None else self.stop_after


@dataclass(frozen=True)
class LabelledExamples:
    fields: list[Mapping[str, str]]
    gold: list[int]

    def __len__(self) -> int:
        return len(self.gold)


def evaluate(method: Method, examples: LabelledExamples, batch_size: int) -> dict[str, float]:
    """Accuracy and mean cross-entropy of the method's class scores (no gradients, eval mode)."""
    method.module.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            scores = method.log_scores(examples.fields[start : start + batch_size])
            gold = torch.tensor(examples.gold[start : start + batch_size], device=scores.device)
            losses.append(float(torch.nn.functional.cross_entropy(scores, gold, reduction="sum")))
            correct += int((scores.argmax(dim=1) == gold).sum())
    return {"accuracy": correct / len(examples), "loss": sum(losses) / len(examples)}


def better(row: dict[str, Any], best: dict[str, Any]) -> bool:
    """Higher accuracy to select by wins; on a tie (frequent with few dev examples), lower dev loss."""
    return (selection_accuracy(row), -row["dev_loss"]) > (selection_accuracy(best), -best["dev_loss"])


def selection_accuracy(row: dict[str, Any]) -> float:
    """What an epoch competes with: its dev accuracy, or for epoch 0 at most ``FitConfig.epoch_zero_cap``."""
    return row.get("selection_accuracy", row["dev_accuracy"])


def fit(method: Method, train: LabelledExamples, dev: LabelledExamples | None, config: FitConfig, checkpoint: Checkpoint,
        identity: dict[str, Any], *, eval_batch_size: int, log: Log = print) -> TrainingState:
    """Train ``method`` and leave its parameters at the best dev epoch (epoch 0: the untrained model),
    or, without ``dev``, at the last epoch."""
    parameters = method.parameters()
    optimizer = torch.optim.AdamW(parameters.values(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_size)
    total = steps_per_epoch * config.epochs
    state = checkpoint.read(identity)
    if state is None:
        state = TrainingState(identity)
        state.epoch = 0
        row = {"epoch": 0, "step": 0, "train_loss": None, **_dev_row(method, dev, eval_batch_size), "seconds": 0.0}
        if config.epoch_zero_cap is not None and row["dev_accuracy"] is not None:
            row["selection_accuracy"] = min(row["dev_accuracy"], config.epoch_zero_cap)
        state.curve.append(row)
        checkpoint.write(state, parameters, optimizer, best_changed=True)
    else:
        checkpoint.restore(state, parameters, optimizer)
        if state.epoch < config.last_epoch:
            log(f"train: resuming after epoch {state.epoch} of {config.last_epoch} (step {state.step})")
    bar = tqdm(total=steps_per_epoch * config.last_epoch, initial=state.step, desc=f"train {method.name}", unit="step", leave=False)
    try:
        for epoch in range(state.epoch + 1, config.last_epoch + 1):
            began, losses = time.perf_counter(), []
            order = np.random.default_rng([config.seed, epoch]).permutation(len(train))
            method.module.train()
            for start in range(0, len(order), config.batch_size):
                rows = order[start : start + config.batch_size]
                for group in optimizer.param_groups:  # linear decay to zero over the whole run
                    group["lr"] = config.learning_rate * (1 - state.step / total)
                torch.manual_seed(config.seed * 1_000_003 + state.step)  # dropout, the same on a resumed run
                scores = method.log_scores([train.fields[i] for i in rows])
                loss = torch.nn.functional.cross_entropy(scores, torch.tensor([train.gold[i] for i in rows], device=scores.device))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(parameters.values()), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", **_dev_postfix(state.best))
            row = {"epoch": epoch, "step": state.step, "train_loss": float(np.mean(losses)), **_dev_row(method, dev, eval_batch_size),
                   "seconds": time.perf_counter() - began}
            improved = dev is None or better(row, state.best)  # without dev, the last epoch is kept
            state.curve.append(row)
            state.epoch = epoch
            if improved:
                state.best_epoch = epoch
            checkpoint.write(state, parameters, optimizer, best_changed=improved)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", **_dev_postfix(row))
    finally:
        bar.close()
    copy_into(parameters, checkpoint.best_parameters(state))
    method.module.eval()
    return state


def _dev_row(method: Method, dev: LabelledExamples | None, batch_size: int) -> dict[str, float | None]:
    if dev is None:
        return {"dev_accuracy": None, "dev_loss": None}
    scored = evaluate(method, dev, batch_size)
    return {"dev_accuracy": scored["accuracy"], "dev_loss": scored["loss"]}


def _dev_postfix(row: dict[str, Any]) -> dict[str, str]:
    return {} if row["dev_accuracy"] is None else {"dev": f"{row['dev_accuracy']:.3f}"}
