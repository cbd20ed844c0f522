"""Past the frozen model: every training method started from the search's prompt, five seeds.

For each few-shot seed the README's search (``--space``, default ``mr``; the space's model unless
``--model``; K=16 per class; the held-out test sample of ``--test-limit`` examples shared by all
seeds) is run (or read back: a complete run of another model is refused), then
``autoprompt-search train`` runs each method on every run, one process at a time, a method over all
seeds before the next (finished outputs are read back, so an interrupted benchmark continues):

- ``full``: prompt-based fine-tuning of all weights from the run's best prompt;
- ``lora``: the same objective with LoRA adapters (PEFT);
- ``soft_text`` / ``soft_random`` / ``soft_manual``: soft prompts on the frozen model, the virtual
  tokens started from the best prompt's words, at random (PEFT's init), or from the words of the
  run's best manual prompt;
- ``head``: standard fine-tuning with a classification head on the bare text (LM-BFF's baseline);
- ``full_refit`` / ``lora_refit``: the epoch chosen on dev as above, then the model trained again on
  train+dev to that epoch (``--refit``); its dev figure is in-sample, its test figure held out;
- ``full_memberN``, ``lora_memberN`` (N = 2 to 5): the same from the
  ensemble's N-th distinct prompt in the search's ranking (``--member``), so that several
  trained prompts can be averaged as PET does (``bench_trained_ensembles.py``; distinct from the
  best prompt where the ensemble opens with it, as a search ranked on labels does);
- ``<method>_from_manual``: the prompt method with the best mean dev accuracy, started from the
  run's best manual prompt instead of the searched one (what the search contributes).

Every method uses the defaults of ``autoprompt-search train`` (not tuned on these runs). Figures
come from each output's training.json: test accuracy of the model written (the epoch kept on dev,
or its refit), scored from the saved files; wall time and peak memory of the training process.
Beside them, the frozen figures of the same runs (best prompt and ensemble). Writes
``results/benchmarks/training_<space>.json`` (``training_<space>_<model>.json`` with ``--model``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from autoprompt_search.analysis import BENCHMARK_SEEDS, mean_std, search_seed
from autoprompt_search.assets import DEFAULT_MODEL
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import RunFolder
from autoprompt_search.spaces import slug

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("autoprompt-search"))
METHODS: dict[str, list[str]] = {
    "full": ["--method", "full"],
    "lora": ["--method", "lora"],
    "soft_text": ["--method", "soft", "--init", "text"],
    "soft_random": ["--method", "soft", "--init", "random"],
    "head": ["--method", "head"],
    "soft_manual": ["--method", "soft", "--init", "manual"],
    "full_refit": ["--method", "full", "--refit"],
    "lora_refit": ["--method", "lora", "--refit"],
    **{f"{method}_member{n}": ["--method", method, "--member", str(n)] for method in ("full", "lora") for n in (2, 3, 4, 5)},
}
DEFAULT_METHODS = ("full", "head", "lora", "soft_text", "soft_random")  # the list, headline first
PROMPT_METHODS = ("full", "lora", "soft_text", "soft_random", "soft_manual")


def train_once(run: Path, name: str, arguments: list[str], out: Path, keep: bool) -> dict[str, Any]:
    """The compacted training.json of one method on one run, training it when it is not there yet."""
    if not (out / "training.json").is_file():
        began = time.perf_counter()
        done = subprocess.run([CLI, "train", str(run), *arguments, "--out", str(out), *(["--resume"] if out.exists() else [])],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} on {run} failed:\n{done.stderr[-3000:]}")
        print(f"{out.name}: {time.perf_counter() - began:.0f} s", flush=True)
    recorded = json.loads((out / "training.json").read_text())
    if not keep:  # model folders are 0.5 GB each: the figures and the prompt file stay
        shutil.rmtree(out / "model", ignore_errors=True)
    return compact(recorded)


CURVE_KEYS = ("epoch", "train_loss", "dev_accuracy", "selection_accuracy")  # the last: epoch 0's, where capped


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """What the benchmark keeps of one output's training.json."""
    refit = record.get("refit") or {}
    return {"test_accuracy": record["scores"]["test"]["accuracy"], "dev_accuracy": record["scores"]["dev"]["accuracy"],
            "dev_in_sample": bool(refit.get("done")), "refit": {k: v for k, v in refit.items() if k != "curve"} or None,
            "best_epoch": record["best_epoch"], "options": record["options"], "timings": record["timings"],
            "curve": [{k: row[k] for k in CURVE_KEYS if k in row} for row in record["curve"]]}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"test_accuracy": mean_std([r["test_accuracy"] for r in rows]),
            "dev_accuracy": mean_std([r["dev_accuracy"] for r in rows]),
            "train_seconds": mean_std([r["timings"]["train_seconds"] for r in rows]),
            "total_seconds": mean_std([r["timings"]["total_seconds"] for r in rows]),
            "peak_memory_mib": max(r["timings"]["peak_memory_mib"] for r in rows),
            "chosen_epochs": [r["best_epoch"] for r in rows], "seeds": len(rows),
            "dev_in_sample_seeds": sum(r.get("dev_in_sample", False) for r in rows)}  # refits: dev was trained on


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mr")
    parser.add_argument("--model", help="the searches' model, e.g. gemma3-270m (default: the space's)")
    parser.add_argument("--seeds", default=",".join(map(str, BENCHMARK_SEEDS)))
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--runs", help="default: results/runs/train (train-<model> for another model)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated, in order, of " + ", ".join(METHODS))
    parser.add_argument("--no-manual", action="store_true", help="skip the runs started from the best manual prompt")
    parser.add_argument("--keep-models", action="store_true", help="keep the trained model folders")
    parser.add_argument("--out", help="default: results/benchmarks/training_<space>.json (training_<space>_<model>.json for another model)")
    args = parser.parse_args()
    name = slug(Path(args.model).name) if args.model and args.model != DEFAULT_MODEL else ""
    suffix = "_" + name.replace("-", "_") if name else ""
    out = ROOT / (args.out or f"results/benchmarks/training_{slug(Path(args.space).stem)}{suffix}.json")
    runs = ROOT / (args.runs or f"results/runs/train{'-' + name if name else ''}")
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    per_seed: dict[int, dict[str, Any]] = {}

    def write() -> None:
        by_method: dict[str, list[dict[str, Any]]] = {}
        for seed_rows in per_seed.values():
            for name, row in seed_rows["methods"].items():
                by_method.setdefault(name, []).append(row)
        frozen = {key: mean_std([s["frozen"][key] for s in per_seed.values()]) for key in ("best_prompt", "ensemble", "best_manual")}
        wins = {name: all(s["methods"][name]["test_accuracy"] > s["frozen"]["ensemble"] for s in per_seed.values()
                          if name in s["methods"]) for name in by_method}
        atomic_write_json(out, {
            "benchmark": "training", "space": args.space, "model": searched, "seeds": seeds, "test_limit": args.test_limit,
            "methods": {name: summary(rows) for name, rows in by_method.items()}, "frozen": frozen,
            "ahead_of_frozen_ensemble_on_every_seed": wins, "per_seed": per_seed,
            "machine_note": "one process at a time on the project's 2-core CPU machine", "provenance": stamp()})

    for seed in seeds:  # the searches first, then one method at a time over every seed (a method's row fills up first)
        folder = runs / f"{args.space}-seed{seed}"
        results = search_seed(args.space, seed, folder, test_limit=args.test_limit, **({"model": args.model} if args.model else {}))
        searched = RunFolder(folder).manifest()["model"]["name"]
        if args.model and searched != args.model:
            raise SystemExit(f"{folder}: a run of {searched}, not {args.model}: give another --runs folder")
        frozen = {"best_prompt": results["best"]["test"]["accuracy"], "ensemble": results["ensemble"]["test"]["accuracy"],
                  "best_manual": results["best_manual"]["test"]["accuracy"]}
        per_seed[seed] = {"frozen": frozen, "methods": {}}
    for name in methods:
        for seed in seeds:
            run = runs / f"{args.space}-seed{seed}"
            per_seed[seed]["methods"][name] = train_once(run, name, METHODS[name], runs / f"{run.name}-{name}", args.keep_models)
            write()
    if not args.no_manual:  # the prompt method best on dev over every seed, started from the manual prompt
        candidates = [m for m in PROMPT_METHODS if all(m in s["methods"] for s in per_seed.values())]
        if not candidates:
            raise SystemExit(f"no prompt method ({', '.join(PROMPT_METHODS)}) to start from the manual prompt; add one or --no-manual")
        chosen = max(candidates, key=lambda m: sum(s["methods"][m]["dev_accuracy"] for s in per_seed.values()))
        for seed in seeds:
            run = runs / f"{args.space}-seed{seed}"
            per_seed[seed]["methods"][f"{chosen}_from_manual"] = train_once(
                run, chosen, [*METHODS[chosen], "--start", "manual"], runs / f"{run.name}-{chosen}-from-manual", args.keep_models)
            write()
    write()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
