"""What sharing templates' openings saves: the OpenPrompt grid's 8 templates x 16 verbalizers on MR
test sentences, scored as the test pass scores them (``PromptScorer.score_templates``), with the
sharing on (templates grouped by how they open, each group's opening run once per example) and
off (each template's prompts run whole), one after the other in one process, from an empty cache
each time. Same examples, model and batch size as ``bench_openprompt.py``.

Writes ``results/benchmarks/template_sharing.json``: seconds and forward passes of each, the
speed-up, the largest difference of any class log-score and whether every prediction agrees.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from autoprompt_search import backends, data
from autoprompt_search.backends import load_backend
from autoprompt_search.cache import SlotCache
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

ROOT = Path(__file__).resolve().parent.parent
GRID = yaml.safe_load((ROOT / "benchmarks" / "mr_grid.yaml").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="results/benchmarks/template_sharing.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    examples = data.sample(data.load_split("mr", "test"), args.examples, 0)
    labels = examples.labels
    gold = [labels.index(e.label) for e in examples.examples]
    texts = [e.fields for e in examples.examples]
    backend = load_backend("smollm2-135m", device="cpu", batch_size=args.batch_size)
    templates = [Template.parse(source, fields=examples.fields) for source in GRID["templates"]]
    verbalizers = [Verbalizer.parse({labels[0]: [negative], labels[1]: [positive]}, labels) for negative, positive in GRID["verbalizers"]]

    def grid(shared: bool) -> tuple[float, int, list[list]]:
        threshold = backends.TEMPLATE_SHARED_TOKENS
        backends.TEMPLATE_SHARED_TOKENS = threshold if shared else 10**9  # off: no group ever shares enough
        try:
            passes, began = backend.forward_passes, time.perf_counter()
            scorer = PromptScorer(backend, SlotCache())
            items = [(scorer.prepare(template, texts), [(verbalizer, "none") for verbalizer in verbalizers]) for template in templates]
            scores = scorer.score_templates(items, gold)
            return time.perf_counter() - began, backend.forward_passes - passes, scores
        finally:
            backends.TEMPLATE_SHARED_TOKENS = threshold

    off_seconds, off_passes, off = grid(False)
    print(f"sharing off: {off_seconds:.1f} s", flush=True)
    on_seconds, on_passes, on = grid(True)
    print(f"sharing on: {on_seconds:.1f} s", flush=True)
    pairs = [(a, b) for row_a, row_b in zip(on, off) for a, b in zip(row_a, row_b)]
    report = {
        "benchmark": "template_sharing", "dataset": "mr (test split sample, seed 0)", "examples": len(gold),
        "examples_sha256": examples.content_hash(), "model": "smollm2-135m", "model_weights_sha256": backend.weights_hash,
        "templates": GRID["templates"], "verbalizers": GRID["verbalizers"], "threads": args.threads, "batch_size": args.batch_size,
        "seconds": {"sharing_off": off_seconds, "sharing_on": on_seconds}, "speedup": off_seconds / on_seconds,
        "forward_passes": {"sharing_off": off_passes, "sharing_on": on_passes},
        "max_abs_log_score_difference": max(float(np.abs(a.log_scores - b.log_scores).max()) for a, b in pairs),
        "predictions_identical": all(np.array_equal(a.predictions, b.predictions) for a, b in pairs),
        "accuracies_identical": all(a.accuracy == b.accuracy for a, b in pairs),
        "machine_note": "the project's 2-core CPU machine, nothing else running", "provenance": stamp(),
    }
    atomic_write_json(ROOT / args.out, report)
    print(f"speed-up {report['speedup']:.2f}x; max |log-score difference| {report['max_abs_log_score_difference']:.2e}; "
          f"predictions identical: {report['predictions_identical']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
