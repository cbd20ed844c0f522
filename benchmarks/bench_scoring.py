"""Scoring speed and correctness against a plain Hugging Face loop, on MR with SmolLM2-135M.

Writes ``results/benchmarks/scoring.json``:

- examples/s of ``evaluate`` (uncached) against a plain loop that computes full logits;
- the accuracy of both on the same sample (they must agree), uncalibrated and with the
  prior correction (each label's mean log-probability subtracted);
- the time to score 100 verbalizers on an already cached template, against the time the
  plain loop would need for 100 passes (measured pass time x 100).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time

import numpy as np
import torch

from autoprompt_search import data
from autoprompt_search.backends import load_backend
from autoprompt_search.cache import SlotCache
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

TEMPLATE = "{text} In summary, this film is {mask}"
WORDS = {"negative": "negative", "positive": "positive"}
NEGATIVE = ["terrible", "bad", "awful", "boring", "dull", "poor", "horrible", "weak", "negative", "disappointing"]
POSITIVE = ["great", "good", "excellent", "wonderful", "brilliant", "fun", "perfect", "amazing", "positive", "beautiful"]


def plain_loop(model, tokenizer, texts: list[str], word_ids: list[int], batch_size: int) -> tuple[np.ndarray, float]:
    """What a user without this tool writes: full-sequence logits, then the last position."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = [TEMPLATE.replace("{text}", text).replace(" {mask}", "") for text in texts]
    rows = []
    began = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            inputs = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            logits = model(**inputs).logits  # [batch, length, vocab]
            rows.append(torch.log_softmax(logits[:, -1].float(), dim=-1)[:, word_ids].numpy())
    return np.concatenate(rows), time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="results/benchmarks/scoring.json")
    args = parser.parse_args()

    sample = data.sample(data.load_split("mr", "test"), args.n, args.seed)
    texts = [example.fields for example in sample.examples]
    gold = np.array([sample.labels.index(example.label) for example in sample.examples])
    backend = load_backend("smollm2-135m", device="cpu", batch_size=args.batch_size)
    tokenizer, model = backend.tokenizer, backend.model

    word_ids = [tokenizer(" " + WORDS[label], add_special_tokens=False)["input_ids"][0] for label in sample.labels]
    baseline_scores, baseline_seconds = plain_loop(model, tokenizer, [t["text"] for t in texts], word_ids, args.batch_size)

    scorer = PromptScorer(backend, SlotCache(None))  # memory only: the first pass is a real miss
    template = Template.parse(TEMPLATE)
    verbalizer = Verbalizer.parse({label: [WORDS[label]] for label in sample.labels}, sample.labels)
    began = time.perf_counter()
    prepared = scorer.prepare(template, texts)
    ours = scorer.score(prepared, verbalizer, gold)
    ours_seconds = time.perf_counter() - began
    ours_prior = scorer.score(prepared, verbalizer, gold, calibration="prior")

    pairs = list(itertools.product(NEGATIVE, POSITIVE))
    random.Random(args.seed).shuffle(pairs)
    verbalizers = [Verbalizer.parse({"negative": [n], "positive": [p]}, sample.labels) for n, p in pairs[:100]]
    passes_before = backend.forward_passes
    began = time.perf_counter()
    for candidate in verbalizers:
        scorer.score(prepared, candidate, gold, calibration="prior")
    many_seconds = time.perf_counter() - began
    forward_passes_for_100 = backend.forward_passes - passes_before

    baseline_accuracy = float((baseline_scores.argmax(1) == gold).mean())
    baseline_prior = float(((baseline_scores - baseline_scores.mean(0)).argmax(1) == gold).mean())
    report = {
        "benchmark": "scoring",
        "dataset": {"name": "mr", "split": "test", "n": len(sample), "sample_seed": args.seed, "content_hash": sample.content_hash()},
        "model": {"name": "smollm2-135m", "weights_sha256": backend.weights_hash},
        "template": TEMPLATE,
        "verbalizer": verbalizer.to_dict(),
        "batch_size": args.batch_size,
        "plain_loop": {"seconds": baseline_seconds, "examples_per_second": len(sample) / baseline_seconds,
                       "accuracy": baseline_accuracy, "accuracy_prior_calibrated": baseline_prior},
        "autoprompt_search": {"seconds": ours_seconds, "examples_per_second": len(sample) / ours_seconds,
                              "accuracy": ours.accuracy, "accuracy_prior_calibrated": ours_prior.accuracy,
                              "max_abs_logprob_difference_vs_plain": float(np.abs(
                                  ours.log_scores - torch.log_softmax(torch.tensor(baseline_scores), 1).numpy()).max())},
        "speedup": baseline_seconds / ours_seconds,
        "cached_100_verbalizers": {"seconds": many_seconds, "forward_passes": forward_passes_for_100,
                                   "plain_loop_estimate_seconds": 100 * baseline_seconds},
        "provenance": stamp(),
    }
    atomic_write_json(args.out, report)
    print(f"plain loop {report['plain_loop']['examples_per_second']:.1f} ex/s, acc {baseline_accuracy:.4f} / {baseline_prior:.4f} (prior)")
    ours_speed = report["autoprompt_search"]["examples_per_second"]
    print(f"ours       {ours_speed:.1f} ex/s, acc {ours.accuracy:.4f} / {ours_prior.accuracy:.4f} (prior)")
    print(f"100 verbalizers on the cached template: {many_seconds:.3f} s, {forward_passes_for_100} forward passes")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
