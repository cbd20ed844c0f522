"""One trigger-search step: batched candidates with a shared key/value prefix against AutoPrompt's
per-candidate loop, on MR with SmolLM2-135M.

Writes ``results/benchmarks/triggers_step.json``. The template is AutoPrompt's sentiment template
(``{text} [T] [T] [T] {mask}``: the triggers right before the slot). A step is what AutoPrompt's
loop does: the gradient pass on the batch, the HotFlip top-k for one trigger, and the loss of every
candidate on the batch. Both paths get the same model, batch, current triggers and candidates; the
report gives, for each trigger position, the seconds of the candidate scoring and of the whole step
for each path, their ratio, the largest difference between their candidate losses and whether
they choose the same token. Our step is timed warm (the text's key/value cache already stored, as
in every step of a search after the first) and cold (a fresh objective that computes it in the
step). Batching without the shared prefix is timed once, at position 0.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from autoprompt_search import data
from autoprompt_search.backends import load_backend
from autoprompt_search.candidates.triggers import TriggerObjective, reference_candidate_losses
from autoprompt_search.candidates.vocabulary import allowed_trigger_tokens
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.templates import Template
from autoprompt_search.tokenization import encode_in_context

TEMPLATE = "{text} [T] [T] [T] {mask}"
WORDS = {"negative": "terrible", "positive": "great"}


def fastest(function, repeats: int) -> tuple[torch.Tensor, float, list[float]]:
    """The result and the fastest of ``repeats`` timed runs (the first also pays one-off allocations)."""
    times, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - began)
    return result, min(times), times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks/triggers_step.json")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    pool = data.load_split("mr", "train_pool")
    train, _ = data.few_shot(pool, args.examples // 2, args.seed)
    texts = [example.fields for example in train.examples]
    gold = torch.tensor([train.labels.index(example.label) for example in train.examples])
    backend = load_backend("smollm2-135m", device="cpu")
    tokenizer = backend.tokenizer
    label_tokens = [[encode_in_context(tokenizer, [" " + WORDS[label]])[0][0]] for label in train.labels]
    template = Template.parse(TEMPLATE)
    objective = TriggerObjective(backend, template, label_tokens)  # its prefix store stays warm, as in a search
    unshared = TriggerObjective(backend, template, label_tokens, share_prefix=False)  # AutoPrompt's full passes
    inputs = objective.inputs(objective.render(texts))
    vocab = backend.model.get_input_embeddings().weight.shape[0]
    allowed = allowed_trigger_tokens(tokenizer, vocab_size=vocab, leading_space=True, label_words=WORDS.values())
    triggers = [encode_in_context(tokenizer, [" the"])[0][0]] * 3
    (loss, gradient), full_gradient_seconds, _ = fastest(lambda: unshared.loss_and_gradient(inputs, triggers, gold), args.repeats)

    def cold_step(index: int, candidates: torch.Tensor) -> torch.Tensor:
        """A step of a fresh objective: it first computes the text's key/value cache (once per search)."""
        fresh = TriggerObjective(backend, template, label_tokens)
        fresh.loss_and_gradient(inputs, triggers, gold)
        fresh.hotflip_candidates(gradient, index, triggers[index], allowed, args.candidates)
        return fresh.candidate_losses(inputs, triggers, index, candidates, gold)

    def warm_step(index: int, candidates: torch.Tensor) -> torch.Tensor:
        objective.loss_and_gradient(inputs, triggers, gold)
        objective.hotflip_candidates(gradient, index, triggers[index], allowed, args.candidates)
        return objective.candidate_losses(inputs, triggers, index, candidates, gold)

    objective.loss_and_gradient(inputs, triggers, gold)  # fills the prefix store, as the first step of a search does
    positions, batched_only = [], None
    for index in range(objective.n_triggers):
        began = time.perf_counter()
        candidates = objective.hotflip_candidates(gradient, index, triggers[index], allowed, args.candidates)
        hotflip_seconds = time.perf_counter() - began
        ours, ours_seconds, ours_times = fastest(lambda: objective.candidate_losses(inputs, triggers, index, candidates, gold),
                                                 args.repeats)
        _, warm_seconds, _ = fastest(lambda: warm_step(index, candidates), args.repeats)
        _, cold_seconds, _ = fastest(lambda: cold_step(index, candidates), args.repeats)
        loop, loop_seconds, _ = fastest(lambda: reference_candidate_losses(objective, inputs, triggers, index, candidates, gold), 1)
        if index == 0:
            batched, batched_seconds, _ = fastest(lambda: unshared.candidate_losses(inputs, triggers, index, candidates, gold), 1)
            batched_only = {"seconds": batched_seconds, "speedup_vs_loop": loop_seconds / batched_seconds,
                            "max_abs_loss_difference_vs_loop": float((batched - loop).abs().max())}
        loop_step = full_gradient_seconds + hotflip_seconds + loop_seconds
        chosen = {"ours": int(candidates[int(ours.argmin())]), "loop": int(candidates[int(loop.argmin())])}
        positions.append({
            "flipped_trigger": index, "candidates": len(candidates),
            "candidate_tokens": [tokenizer.decode([t]) for t in candidates.tolist()],
            "autoprompt_loop_seconds": loop_seconds, "shared_prefix_seconds": ours_seconds, "shared_prefix_all_seconds": ours_times,
            "scoring_speedup": loop_seconds / ours_seconds,
            "step_seconds": {"autoprompt_loop": loop_step, "ours_warm_prefix": warm_seconds, "ours_cold_prefix": cold_seconds},
            "step_speedup_warm": loop_step / warm_seconds, "step_speedup_cold": loop_step / cold_seconds,
            "max_abs_loss_difference": float((ours - loop).abs().max()),
            "chosen_token": {name: tokenizer.decode([token]) for name, token in chosen.items()},
            "same_chosen_token": chosen["ours"] == chosen["loop"],
        })
        print(f"trigger {index}: candidates: loop {loop_seconds:.1f} s, ours {ours_seconds:.2f} s ({loop_seconds / ours_seconds:.1f}x); "
              f"step: loop {loop_step:.1f} s, ours {warm_seconds:.2f} s warm / {cold_seconds:.2f} s cold; "
              f"max diff {positions[-1]['max_abs_loss_difference']:.1e}; same token {positions[-1]['same_chosen_token']}", flush=True)

    report = {
        "benchmark": "trigger_search_step",
        "dataset": {"name": "mr", "split": "train_pool", "k_per_class": args.examples // 2, "seed": args.seed,
                    "n": len(texts), "content_hash": train.content_hash()},
        "model": {"name": "smollm2-135m", "weights_sha256": backend.weights_hash, "dtype": str(backend.model.dtype)},
        "template": TEMPLATE, "label_words": WORDS, "current_triggers": [tokenizer.decode([t]) for t in triggers], "current_loss": loss,
        "full_gradient_seconds": full_gradient_seconds, "rows_per_pass": objective.rows_per_pass, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "positions": positions,
        "mean_scoring_speedup": float(np.mean([p["scoring_speedup"] for p in positions])),
        "mean_step_speedup_warm": float(np.mean([p["step_speedup_warm"] for p in positions])),
        "mean_step_speedup_cold": float(np.mean([p["step_speedup_cold"] for p in positions])),
        "max_abs_loss_difference": max(p["max_abs_loss_difference"] for p in positions),
        "same_chosen_token_everywhere": all(p["same_chosen_token"] for p in positions),
        "batched_without_shared_prefix_position_0": batched_only,
        "provenance": stamp(),
    }
    atomic_write_json(args.out, report)
    print(f"mean over positions: {report['mean_scoring_speedup']:.1f}x candidate scoring, {report['mean_step_speedup_warm']:.1f}x step "
          f"({report['mean_step_speedup_cold']:.1f}x with the text's cache computed in the step)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
