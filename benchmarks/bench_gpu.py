"""Throughput on an accelerator (the device machine, when a session is lent one), or on the CPU.

Measures, with SmolLM2-135M on MR:

- grid scoring: the 8 templates x 16 verbalizers of bench_openprompt.py (``benchmarks/mr_grid.yaml``)
  on ``--examples`` examples from an empty cache: prompts (template x example) per second and the
  whole grid's seconds;
- trigger candidates: one flip of ``--candidates`` HotFlip candidates on ``--trigger-examples``
  examples with the stored text prefix: candidates x examples per second;
- the share of the compute ceiling: the forward passes' useful FLOPs (2 x parameters x the tokens
  the model reads, attention and the slot's vocabulary projection included; padding counted as
  waste) per second of forward-pass time (tokenization and verbalizer readouts left out), against
  the FLOP/s of a large dense matmul in the same dtype measured on the same device.

Each ``--dtypes`` entry is measured in turn on the same loaded model. ``--random-init`` builds the
model from the folder's config.json and tokenizer with seeded random weights: the device machine
receives at most 64 MiB, less than SmolLM2's 538 MB weights file, and none of these figures depends
on the weights' values (the same shapes run the same kernels; only the trigger candidates' chosen
token changes).

Writes ``results/benchmarks/gpu.json`` (``--out``). Run it as one prepared command on the device
machine, e.g. ``python benchmarks/bench_gpu.py --device cuda --examples 2048``; on a CPU it runs
with small sizes as a check of the script itself.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from autoprompt_search import data
from autoprompt_search.assets import resolve_model
from autoprompt_search.backends import SlotQuery, load_backend
from autoprompt_search.cache import SlotCache
from autoprompt_search.candidates.triggers import TriggerObjective
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.tokenization import encode_in_context
from autoprompt_search.verbalizers import Verbalizer

GRID = yaml.safe_load((Path(__file__).parent / "mr_grid.yaml").read_text(encoding="utf-8"))  # bench_openprompt.py's grid
TEMPLATES: list[str] = GRID["templates"]
VERBALIZERS: list[tuple[str, str]] = [tuple(pair) for pair in GRID["verbalizers"]]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """Dense matmul FLOP/s: the practical compute ceiling of this device and dtype."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up: kernels chosen, memory allocated
    synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - began)


def forward_flops(model, tokens_per_sequence: list[int], slot_rows: int) -> float:
    """Useful FLOPs of a forward pass over these sequences: weights, attention, slot projection."""
    config = model.config
    embedding = model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embedding.numel()  # tied output embedding counted below
    attention = sum(4 * config.num_hidden_layers * n * n * config.hidden_size / 2 for n in tokens_per_sequence)  # causal half
    return 2 * body * sum(tokens_per_sequence) + attention + 2 * embedding.numel() * slot_rows


def random_weights_folder(source: Path, seed: int) -> Path:
    """A temporary model folder: ``source``'s config and tokenizer with seeded random safetensors weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    target = Path(tempfile.mkdtemp(prefix="bench-gpu-model-"))
    for file in source.iterdir():
        if file.is_file() and file.suffix != ".safetensors":
            shutil.copy(file, target / file.name)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source)).save_pretrained(target, safe_serialization=True)
    return target


def measure(backend, args: argparse.Namespace, device: torch.device) -> dict:
    """The grid, the trigger candidates and the matmul ceiling, in the model's current dtype."""
    dtype = next(backend.model.parameters()).dtype
    examples = data.sample(data.load_split("mr", "test"), args.examples, 0)
    labels = examples.labels
    gold = [labels.index(e.label) for e in examples.examples]
    texts = [e.fields for e in examples.examples]
    verbalizers = [Verbalizer.parse({labels[0]: [n], labels[1]: [p]}, labels) for n, p in VERBALIZERS]

    scorer = PromptScorer(backend, SlotCache())
    scorer.score(scorer.prepare(Template.parse(TEMPLATES[0]), texts[: args.batch_size]), verbalizers[0], gold[: args.batch_size])  # warm-up
    scorer = PromptScorer(backend, SlotCache())
    tokens: list[int] = []
    synchronize(device)
    began, forward_before = time.perf_counter(), backend.forward_seconds
    for source in TEMPLATES:
        prepared = scorer.prepare(Template.parse(source), texts)
        # What the model reads: a causal model the text up to the slot; a masked one all of it and the mask
        # (special tokens left out, so the FLOPs are a slight undercount).
        tokens += [len(p.before) + (0 if backend.kind == "causal" else len(p.after) + 1) for p in prepared.prompts]
        for verbalizer in verbalizers:
            scorer.score(prepared, verbalizer, gold)
    synchronize(device)
    grid_seconds = time.perf_counter() - began
    forward_seconds = backend.forward_seconds - forward_before
    prompts = len(TEMPLATES) * len(texts)
    useful = forward_flops(backend.model, tokens, slot_rows=prompts)

    # One template's pass split: the model's forward passes alone, then with the vocabulary-wide
    # log-softmax and the copy of the distributions to host memory that the cache needs.
    rendered = scorer.render(Template.parse(TEMPLATES[0]), texts)
    query = backend.normalize(SlotQuery())
    order = sorted(rendered, key=lambda p: backend._length(p, query))
    synchronize(device)
    began = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), backend.batch_size):
            backend._forward_batch(order[start : start + backend.batch_size], query)
    synchronize(device)
    forward_only = time.perf_counter() - began
    began = time.perf_counter()
    backend.next_token_log_probs(rendered, query)
    synchronize(device)
    with_distributions = time.perf_counter() - began

    train, _ = data.few_shot(data.load_split("mr", "train_pool"), args.trigger_examples // 2, 13)
    label_tokens = [[encode_in_context(backend.tokenizer, [" " + word])[0][0]] for word in ("terrible", "great")]
    objective = TriggerObjective(backend, Template.parse("{text} [T] [T] [T] {mask}"), label_tokens)
    inputs = objective.inputs(objective.render([e.fields for e in train.examples]))
    trigger_gold = torch.tensor([train.labels.index(e.label) for e in train.examples])
    triggers = [encode_in_context(backend.tokenizer, [" the"])[0][0]] * 3
    objective.loss_and_gradient(inputs, triggers, trigger_gold)  # stores the text's key/value cache
    candidates = torch.randperm(backend.tokenizer.vocab_size, generator=torch.Generator().manual_seed(0))[: args.candidates]
    objective.candidate_losses(inputs, triggers, 2, candidates, trigger_gold)  # warm-up
    synchronize(device)
    began = time.perf_counter()
    objective.candidate_losses(inputs, triggers, 2, candidates, trigger_gold)
    synchronize(device)
    candidate_seconds = time.perf_counter() - began

    peak = matmul_peak(device, dtype, args.matmul_size or (8192 if device.type == "cuda" else 2048))
    figures = {
        "dtype": str(dtype), "examples": len(texts), "examples_sha256": examples.content_hash(),
        "grid": {"templates": len(TEMPLATES), "verbalizers": len(VERBALIZERS), "seconds": grid_seconds,
                 "prompts_per_second": prompts / grid_seconds, "tokens": sum(tokens),
                 "forward_seconds": forward_seconds, "useful_flops": useful, "useful_flops_per_second": useful / forward_seconds},
        "one_template_pass": {"prompts": len(rendered), "forward_only_seconds": forward_only,
                              "with_distributions_to_host_seconds": with_distributions},
        "trigger_candidates": {"candidates": len(candidates), "examples": len(train), "seconds": candidate_seconds,
                               "candidate_examples_per_second": len(candidates) * len(train) / candidate_seconds},
        "matmul_peak_flops_per_second": peak, "share_of_ceiling": useful / forward_seconds / peak,
    }
    print(f"{dtype}: grid {grid_seconds:.2f} s = {prompts / grid_seconds:.0f} prompts/s (forward passes {forward_seconds:.2f} s); "
          f"one template: forward {forward_only:.2f} s, with distributions to host {with_distributions:.2f} s; "
          f"trigger candidates {figures['trigger_candidates']['candidate_examples_per_second']:.0f} candidate-examples/s; "
          f"{useful / forward_seconds / 1e12:.3f} TFLOP/s useful in the forward passes = {figures['share_of_ceiling']:.1%} "
          f"of the matmul ceiling ({peak / 1e12:.2f} TFLOP/s)", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="smollm2-135m",
                        help="a registered name or a local folder (with --random-init, its config and tokenizer are enough)")
    parser.add_argument("--random-init", action="store_true", help="seeded random weights of the model's architecture (see above)")
    parser.add_argument("--dtypes", default="float32", help="comma-separated torch dtypes, measured in turn")
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--trigger-examples", type=int, default=64)
    parser.add_argument("--matmul-size", type=int, help="default: 8192 on a GPU, 2048 on a CPU")
    parser.add_argument("--out", default="results/benchmarks/gpu.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    model: str | Path = args.model
    if args.random_init:  # only the config and tokenizer are needed: a folder without weights will do
        model = random_weights_folder(Path(args.model) if Path(args.model).is_dir() else resolve_model(args.model), seed=0)
    backend = load_backend(model, device=args.device, batch_size=args.batch_size)
    weights_hash = backend.weights_hash
    if args.random_init:
        shutil.rmtree(model)  # the random weights are in memory now
    runs = []
    for name in args.dtypes.split(","):
        backend.model.to(getattr(torch, name.strip()))
        runs.append(measure(backend, args, device))
    report = {
        "benchmark": "device_throughput", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "model": args.model,
        "weights": "random, seed 0, from the model's config" if args.random_init else "the model's own",
        "model_weights_sha256": weights_hash, "runs": runs, "provenance": stamp(),
    }
    atomic_write_json(args.out, report)
    print(f"{report['device_name']}: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
