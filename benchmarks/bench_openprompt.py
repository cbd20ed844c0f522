"""Speed against a peer: a grid of 8 templates x 16 verbalizers scored on 512 MR examples.

Three tools score the same prompts with the same model files on the same examples, one after the
other in this one run, each with the same number of CPU threads:

- ``ours``: autoprompt_search's scorer as the search's test pass uses it, from an empty in-memory
  cache: one pass over the examples for all templates (templates that open alike, ``{text} ...``
  or ``Review: {text} ...``, run their shared opening once per example), the 16 verbalizers read
  from the slot distributions;
- ``ours_uncached``: the in-repo naive baseline: every (template, verbalizer) pair rendered and
  run through the model on its own, with a fresh scorer and no cache;
- ``openprompt``: OpenPrompt 1.0.1 in its own virtual environment (``make openprompt-venv``:
  transformers 4.39), run by ``benchmarks/openprompt/grid_worker.py`` the way its tutorials do:
  one ``PromptDataLoader`` per template, one ``PromptForClassification`` per verbalizer.

Every pair of the uncached tools costs the same pass over the 512 examples whatever the
verbalizer, so ``--timed-verbalizers N`` times N verbalizers per template (each template a
different one) and the full grid's time is extrapolated as loader time + 16 x the pair times of
that template; the JSON says which figures are measured and which extrapolated. ``ours`` always
runs the full grid. Predictions are compared pair by pair: where OpenPrompt's and ours
(uncalibrated) differ on any example, the tools did not score the same thing and the script
exits 1. The grid is ``benchmarks/mr_grid.yaml``. Writes ``results/benchmarks/openprompt_grid.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from autoprompt_search import data
from autoprompt_search.backends import load_backend
from autoprompt_search.cache import SlotCache
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

GRID = yaml.safe_load((Path(__file__).parent / "mr_grid.yaml").read_text(encoding="utf-8"))  # shared with bench_gpu.py
TEMPLATES: list[str] = GRID["templates"]
VERBALIZERS: list[tuple[str, str]] = [tuple(pair) for pair in GRID["verbalizers"]]
OPENPROMPT_PYTHON = Path(".venv-openprompt/bin/python")


def timed_pairs(templates: int, verbalizers: int, per_template: int) -> dict[int, list[int]]:
    """``per_template`` verbalizers for each template, rotating so that the grid's verbalizers all appear."""
    return {t: [(t * per_template + i) % verbalizers for i in range(per_template)] for t in range(templates)}


def extrapolate(pairs: list[dict], loader_seconds: dict[int, float], verbalizers: int) -> float:
    """Full-grid seconds from the timed pairs: per template, its loader time + verbalizers x its mean pair time."""
    total = 0.0
    for template, loader in loader_seconds.items():
        times = [p["seconds"] for p in pairs if p["template"] == template]
        total += loader + verbalizers * sum(times) / len(times)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--timed-verbalizers", type=int, default=len(VERBALIZERS),
                        help="verbalizers per template timed for the uncached tools (16 = the whole grid)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128, help="OpenPrompt pads every example to this length")
    parser.add_argument("--out", default="results/benchmarks/openprompt_grid.json")
    args = parser.parse_args()
    if not 1 <= args.timed_verbalizers <= len(VERBALIZERS):
        raise SystemExit(f"--timed-verbalizers must be between 1 and {len(VERBALIZERS)}")
    if not OPENPROMPT_PYTHON.exists():
        raise SystemExit(f"{OPENPROMPT_PYTHON} is missing: run `make openprompt-venv` first")
    torch.set_num_threads(args.threads)
    examples = data.sample(data.load_split("mr", "test"), args.examples, 0)
    labels = examples.labels
    gold = [labels.index(e.label) for e in examples.examples]
    texts = [e.fields for e in examples.examples]
    verbalizers = [Verbalizer.parse({labels[0]: [negative], labels[1]: [positive]}, labels) for negative, positive in VERBALIZERS]
    backend = load_backend("smollm2-135m", device="cpu", batch_size=args.batch_size)
    for negative, positive in VERBALIZERS:
        for word in (negative, positive):
            assert len(backend.tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    templates = [Template.parse(source, fields=examples.fields) for source in TEMPLATES]
    plan = timed_pairs(len(TEMPLATES), len(VERBALIZERS), args.timed_verbalizers)

    # ours: the whole grid from an empty cache, as the test pass scores it (all templates in one pass
    # over the examples; templates that open alike run their opening once).
    began = time.perf_counter()
    scorer = PromptScorer(backend, SlotCache())
    items = [(scorer.prepare(template, texts), [(verbalizer, "none") for verbalizer in verbalizers]) for template in templates]
    ours = {(t, v): score for t, scores in enumerate(scorer.score_templates(items, gold)) for v, score in enumerate(scores)}
    ours_seconds = time.perf_counter() - began
    ours_passes = backend.forward_passes
    print(f"ours: {ours_seconds:.1f} s for the {len(ours)}-prompt grid", flush=True)

    # ours, uncached: each timed pair on its own.
    naive_pairs, naive_loader = [], {}
    for t, template in enumerate(templates):
        naive_loader[t] = 0.0
        for v in plan[t]:
            began = time.perf_counter()
            fresh = PromptScorer(backend, SlotCache())
            score = fresh.score(fresh.prepare(template, texts), verbalizers[v], gold)
            naive_pairs.append({"template": t, "verbalizer": v, "seconds": time.perf_counter() - began, "accuracy": score.accuracy})
            assert list(score.predictions) == list(ours[(t, v)].predictions)
    print(f"ours uncached: {sum(p['seconds'] for p in naive_pairs):.1f} s for {len(naive_pairs)} pairs", flush=True)

    # OpenPrompt in its own environment.
    with tempfile.TemporaryDirectory() as scratch:
        job, result = Path(scratch) / "job.json", Path(scratch) / "result.json"
        job.write_text(json.dumps({
            "threads": args.threads, "model_folder": str(backend.path), "labels": labels, "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length, "templates": TEMPLATES,
            "examples": [{"text": e.fields["text"], "label": g} for e, g in zip(examples.examples, gold)],
            "verbalizers": [[[negative], [positive]] for negative, positive in VERBALIZERS],
            "pairs": {str(t): vs for t, vs in plan.items()},
        }))
        began = time.perf_counter()
        subprocess.run([str(OPENPROMPT_PYTHON), "benchmarks/openprompt/grid_worker.py", str(job), str(result)], check=True,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        openprompt_wall = time.perf_counter() - began
        peer = json.loads(result.read_text())
    peer_loader = {}
    for pair in peer["pairs"]:
        peer_loader[pair["template"]] = pair["loader_seconds"]
    agreement = [sum(a == b for a, b in zip(pair["predictions"], ours[(pair["template"], pair["verbalizer"])].predictions)) / len(gold)
                 for pair in peer["pairs"]]

    full = len(TEMPLATES) * len(VERBALIZERS)
    measured_all = args.timed_verbalizers >= len(VERBALIZERS)
    naive_grid = extrapolate(naive_pairs, naive_loader, len(VERBALIZERS))
    peer_grid = extrapolate(peer["pairs"], peer_loader, len(VERBALIZERS)) + peer["setup_seconds"]
    report = {
        "benchmark": "openprompt_grid", "dataset": "mr (test split sample, seed 0)", "examples": len(gold),
        "examples_sha256": examples.content_hash(), "model": "smollm2-135m", "model_weights_sha256": backend.weights_hash,
        "templates": TEMPLATES, "verbalizers": VERBALIZERS, "threads": args.threads, "batch_size": args.batch_size,
        "openprompt_max_seq_length": args.max_seq_length, "timed_pairs_per_template": args.timed_verbalizers,
        "grid_seconds": {
            "ours": {"seconds": ours_seconds, "measured": True, "pairs": full},
            "ours_uncached": {"seconds": naive_grid, "measured": measured_all, "timed_pairs": len(naive_pairs),
                              "timed_seconds": sum(p["seconds"] for p in naive_pairs)},
            "openprompt": {"seconds": peer_grid, "measured": measured_all, "timed_pairs": len(peer["pairs"]),
                           "timed_seconds": sum(p["seconds"] for p in peer["pairs"]) + sum(peer_loader.values()),
                           "setup_seconds": peer["setup_seconds"], "worker_wall_seconds": openprompt_wall},
        },
        "speedup": {"vs_openprompt": peer_grid / ours_seconds, "vs_ours_uncached": naive_grid / ours_seconds,
                    "from_extrapolated_times": not measured_all},
        "seconds_per_pair": {"ours_uncached": [p["seconds"] for p in naive_pairs], "openprompt": [p["seconds"] for p in peer["pairs"]]},
        "agreement_with_openprompt": {"min": min(agreement), "mean": sum(agreement) / len(agreement), "pairs": len(agreement)},
        "accuracy": {"ours": {f"{t},{v}": s.accuracy for (t, v), s in ours.items()},
                     "openprompt": {f"{p['template']},{p['verbalizer']}": p["accuracy"] for p in peer["pairs"]}},
        "forward_passes_ours": ours_passes,
        "openprompt_environment": peer["versions"], "provenance": stamp(),
    }
    atomic_write_json(args.out, report)
    word = "measured" if measured_all else f"extrapolated from {len(peer['pairs'])} timed pairs"
    print(f"grid of {full}: ours {ours_seconds:.0f} s; ours uncached {naive_grid:.0f} s ({word}); "
          f"OpenPrompt {peer_grid:.0f} s ({word}); speed-up {report['speedup']['vs_openprompt']:.1f}x vs OpenPrompt, "
          f"{report['speedup']['vs_ours_uncached']:.1f}x vs uncached; prediction agreement {min(agreement):.4f} (min over pairs)")
    print(f"wrote {args.out}")
    if min(agreement) < 1.0:  # then the two tools did not run the same model or prompts: the timing compares nothing
        print("OpenPrompt's predictions differ from ours: check the model and prompts before using these figures", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
