"""The OpenPrompt form of a prompt file, loaded by OpenPrompt 1.0.1 itself: same predictions as ours?

A search writes into ``best.json`` an ``exports.openprompt`` form (template text, label words,
classes, verbalizer prefix, field map). This benchmark takes the form the library's current export
code writes for the file's prompt (``export.openprompt_form``, the same call the search makes;
the JSON records whether the file holds the same form, which it does when the file was written by
this version) and hands it, as it is, to OpenPrompt
1.0.1 in its own virtual environment (``make openprompt-venv``), run by
``benchmarks/openprompt/export_worker.py``: ``ManualTemplate`` (or ``MixedTemplate``),
``ManualVerbalizer``, ``PromptDataLoader``, ``PromptForClassification`` on the same model folder.
On ``--examples`` examples spread evenly over the run's own held-out test split (every k-th row, in
order: the split is not shuffled, so its first rows share one label), it compares:

- predictions: OpenPrompt has no calibration (the form's note says so), so its predictions are
  compared with ours *uncalibrated* (raw class log-scores); any difference exits 1;
- predictions with the file's calibration put on OpenPrompt's output: ``prompt.calibration``
  applied to OpenPrompt's class log-probabilities by ``Calibration.apply`` (``prior``: minus the
  bias; ``contextual``: log-softmax, then minus the bias), against our calibrated predictions;
- class log-probabilities (log-softmax over the classes), raw and calibrated: their largest
  absolute difference between the tools;
- the token ids each tool gives the model up to the slot, and the label words' token ids.

Writes ``results/benchmarks/openprompt_export.json``.
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

import numpy as np
import torch

import autoprompt_search
from autoprompt_search.calibration import Calibration
from autoprompt_search.fileio import atomic_write_json, read_json
from autoprompt_search.provenance import machine, stamp
from autoprompt_search.run_folder import RunFolder
from autoprompt_search.scoring import MAX_WORD_TOKENS

OPENPROMPT_PYTHON = Path(".venv-openprompt/bin/python")
WORKER = Path(__file__).parent / "openprompt" / "export_worker.py"
LENGTH_MARGIN = 8  # OpenPrompt pads to max_seq_length: room above our longest prompt, so a longer tokenization is seen, not cut


def log_probabilities(scores: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(scores.double(), dim=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="results/runs/train/mr-seed13/best.json", help="a run's best.json (a single prompt)")
    parser.add_argument("--run-folder", help="the run whose test split is used (default: the prompt file's folder)")
    parser.add_argument("--examples", type=int, default=200, help="N examples spread evenly over the run's test split")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=32, help="OpenPrompt's batch size (ours is the file's)")
    parser.add_argument("--note", default="", help="free text stored with the figures (what else ran on the machine)")
    parser.add_argument("--out", default="results/benchmarks/openprompt_export.json")
    args = parser.parse_args()
    if not OPENPROMPT_PYTHON.exists():
        raise SystemExit(f"{OPENPROMPT_PYTHON} is missing: run `make openprompt-venv` first")
    prompt_path = Path(args.prompt)
    if not prompt_path.is_file():
        raise SystemExit(f"{prompt_path}: no such prompt file; run a search first "
                         "(autoprompt-search search mr --seed 13 --test-limit 1000 --out results/runs/train/mr-seed13)")
    torch.set_num_threads(args.threads)
    document = read_json(prompt_path, "prompt file")
    if document.get("kind") != "single":
        raise SystemExit(f"{prompt_path}: a {document.get('kind')!r} prompt file; give a single prompt (best.json)")
    form = document["exports"]["openprompt"]
    calibration = Calibration.from_dict(document["prompt"]["calibration"])

    # The run's held-out test split, re-derived and checked against the run's recorded hashes.
    run = RunFolder(args.run_folder or prompt_path.parent)
    test = run.splits().test
    step = max(1, len(test) // args.examples)
    rows = test.examples[::step][: args.examples]

    # Ours: the prompt file loaded as the library's predictor; raw and calibrated class scores.
    began = time.perf_counter()
    predictor = autoprompt_search.load(prompt_path, device="cpu", cache=False)
    load_seconds = time.perf_counter() - began
    if predictor.spec.calibration != calibration:
        raise SystemExit(f"{prompt_path}: the predictor's calibration differs from prompt.calibration")
    from autoprompt_search.export import openprompt_form

    stored_form = form
    form = openprompt_form(predictor.spec, predictor.scorer.backend.tokenizer)
    classes = predictor.classes_
    if classes != form["classes"]:
        raise SystemExit(f"form classes {form['classes']} differ from the prompt's {classes}")
    gold = [classes.index(example.label) for example in rows]
    texts = [{name: example.fields[name] for name in predictor.template.fields_used} for example in rows]
    began = time.perf_counter()
    prompts = predictor.prompts(texts)
    raw = predictor.scorer.class_scores(prompts, predictor.word_ids).double()
    ours_seconds = time.perf_counter() - began
    calibrated = calibration.apply(raw)
    # The predictor's own probabilities are these calibrated scores' softmax (read from its in-memory cache).
    assert np.allclose(predictor.predict_proba(texts), torch.softmax(calibrated, dim=1).numpy(), rtol=0, atol=1e-12)

    backend = predictor.scorer.backend
    prefix = list(backend.specials.prefix)
    ours_contexts = [prefix + list(p.before) for p in prompts]
    after_slot = sum(bool(p.after) for p in prompts)
    budget = backend.max_prompt_tokens(MAX_WORD_TOKENS) + len(prefix)  # the longest sequence ours may give the model
    longest = max(len(c) for c in ours_contexts)
    max_seq_length = budget if longest >= budget else min(budget, longest + LENGTH_MARGIN)

    # OpenPrompt in its own environment, on the form as it is in the file.
    with tempfile.TemporaryDirectory() as scratch:
        job, result = Path(scratch) / "job.json", Path(scratch) / "result.json"
        job.write_text(json.dumps({
            "form": form, "model_folder": str(backend.path), "model_kind": backend.kind, "threads": args.threads,
            "batch_size": args.batch_size, "max_seq_length": max_seq_length, "examples": [example.fields for example in rows],
        }), encoding="utf-8")
        began = time.perf_counter()
        subprocess.run([str(OPENPROMPT_PYTHON), str(WORKER), str(job), str(result)], check=True,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
        worker_wall = time.perf_counter() - began
        peer = json.loads(result.read_text(encoding="utf-8"))

    theirs = torch.tensor(peer["class_logits"], dtype=torch.float64)
    theirs_calibrated = calibration.apply(theirs)  # prompt.calibration on OpenPrompt's class log-probabilities
    ours_pred, theirs_pred = raw.argmax(dim=1), theirs.argmax(dim=1)
    assert theirs_pred.tolist() == peer["predictions"]
    ours_cal_pred, theirs_cal_pred = calibrated.argmax(dim=1), theirs_calibrated.argmax(dim=1)
    n = len(rows)
    agree = int((ours_pred == theirs_pred).sum())
    agree_calibrated = int((ours_cal_pred == theirs_cal_pred).sum())
    diff = (log_probabilities(raw) - log_probabilities(theirs)).abs()
    diff_calibrated = (log_probabilities(calibrated) - log_probabilities(theirs_calibrated)).abs()
    same_context = [ours == peer_ids for ours, peer_ids in zip(ours_contexts, peer["contexts"])]
    first_other = next((i for i, same in enumerate(same_context) if not same), None)
    difference = None
    if first_other is not None:  # where the two token sequences part, shown as tokens
        ours_ids, peer_ids = ours_contexts[first_other], peer["contexts"][first_other]
        at = next((i for i, (a, b) in enumerate(zip(ours_ids, peer_ids)) if a != b), min(len(ours_ids), len(peer_ids)))
        tokens = backend.tokenizer.convert_ids_to_tokens
        difference = {"example": first_other, "token_position": at, "ours_length": len(ours_ids), "openprompt_length": len(peer_ids),
                      "ours_from_there": tokens(ours_ids[max(0, at - 3): at + 5]),
                      "openprompt_from_there": tokens(peer_ids[max(0, at - 3): at + 5]),
                      "examples_with_differing_ids": n - sum(same_context)}
    ours_words = {label: [list(ids) for ids in words] for label, words in zip(classes, predictor.word_ids)}
    theirs_words = {label: [word["token_ids"] for word in words] for label, words in peer["label_words"].items()}
    multi_token = any(len(ids) > 1 for table in (ours_words, theirs_words) for words in table.values() for ids in words)
    top_two = log_probabilities(raw).topk(2, dim=1).values  # ours: how close the closest call is

    accuracy = {name: float(np.mean([int(p) == g for p, g in zip(pred.tolist(), gold)]))
                for name, pred in (("ours_uncalibrated", ours_pred), ("ours_calibrated", ours_cal_pred),
                                   ("openprompt", theirs_pred), ("openprompt_with_file_calibration", theirs_cal_pred))}
    host = machine()
    report = {
        "benchmark": "openprompt_export",
        "prompt_file": str(prompt_path), "prompt": document["prompt"], "openprompt_form": form,
        "form_in_file_is_current": stored_form == form,
        "model": {"name": document["model"]["name"], "kind": backend.kind, "weights_sha256": backend.weights_hash,
                  "folder": str(backend.path)},
        "data": {"run_folder": str(run.path), "split": "test", "rows": f"every {step}th of {len(test)}, {n} in all, in order",
                 "examples": n, "test_split_content_hash": test.content_hash()},
        "agreement": {
            "uncalibrated": {"agree": agree, "of": n, "rate": agree / n,
                             "compared": "OpenPrompt's predictions (no calibration) with ours from raw class log-scores"},
            "with_file_calibration": {"agree": agree_calibrated, "of": n, "rate": agree_calibrated / n,
                                      "compared": "prompt.calibration applied by Calibration.apply to OpenPrompt's class "
                                                  "log-probabilities, against our calibrated predictions"},
        },
        "max_abs_log_prob_difference": {
            "uncalibrated": float(diff.max()), "with_file_calibration": float(diff_calibrated.max()),
            "what": "log-softmax over the classes of each tool's class scores, largest absolute difference over examples and classes",
        },
        "smallest_uncalibrated_margin_ours": float((top_two[:, 0] - top_two[:, 1]).min()),
        "accuracy": accuracy,
        "tokens": {
            "same_context_ids": sum(same_context), "of": n, "first_difference": difference,
            "examples_with_text_after_slot": after_slot,
            "openprompt_max_seq_length": max_seq_length, "ours_longest_sequence": longest, "ours_budget": budget,
            "label_word_ids": {"ours": ours_words, "openprompt": theirs_words, "same": ours_words == theirs_words,
                               "multi_token": multi_token, "openprompt_multi_token_handler": peer["multi_token_handler"]},
        },
        "seconds": {
            "ours_load": load_seconds, "ours_scoring": ours_seconds,
            "openprompt_setup": peer["seconds"]["setup"], "openprompt_loader": peer["seconds"]["loader"],
            "openprompt_inference": peer["seconds"]["inference"], "openprompt_worker_wall": worker_wall,
        },
        "threads": args.threads, "openprompt_batch_size": args.batch_size, "ours_batch_size": backend.batch_size,
        "machine": f"{host['cpu_count']}-core {host['processor']} CPU, accelerator {host['accelerator']}",
        "note": args.note, "openprompt_environment": peer["versions"], "provenance": stamp(),
    }
    atomic_write_json(args.out, report)
    print(f"{n} test examples of {run.path}: OpenPrompt agrees with ours uncalibrated on {agree}/{n}, "
          f"with the file's calibration on {agree_calibrated}/{n}; largest class log-prob difference "
          f"{float(diff.max()):.3g} (calibrated {float(diff_calibrated.max()):.3g}); same token ids on {sum(same_context)}/{n}; "
          f"accuracy ours {accuracy['ours_uncalibrated']:.3f} / OpenPrompt {accuracy['openprompt']:.3f} uncalibrated, "
          f"{accuracy['ours_calibrated']:.3f} / {accuracy['openprompt_with_file_calibration']:.3f} calibrated")
    print(f"wrote {args.out}")
    if agree < n:
        print("OpenPrompt's predictions differ from ours on the exported form: it does not score the prompt the file holds",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
