"""Do the gradient-guided generators help? MR, SmolLM2-135M, 16-shot, the five LM-BFF seeds.

For each seed it runs (or reads back, when complete) two searches: the bundled space without the
generators (``--base``, default ``search_spaces/mr.yaml``) and the same space with them
(``--space``, default ``search_spaces/mr_gradient.yaml``). It reports on the held-out test split:

- the full searches: best manual prompt, best single prompt and ensemble, with and without;
- the trigger template against the same template without triggers, each with its best trial on
  train+dev (the study's ranking): the base template with the seed verbalizers' words only, the
  base template with any word of the pool (searched words), and the trigger template with any
  word of the pool (searched triggers and words).

Writes ``results/benchmarks/generators_mr.json``; every run folder keeps its own manifest.
``--model splade-tiny --runs results/runs/generators-splade --out ...`` runs the masked path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoprompt_search.analysis import (
    BENCHMARK_SEEDS,
    FinishedRun,
    add_search_arguments,
    mean_std,
    search_options,
    search_seed,
    trigger_base,
)
from autoprompt_search.analysis import REPORTED_PROMPTS as METHODS
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import RunFolder


def template_comparison(run: Path) -> list[dict]:
    """For each trigger template of the run: its best trial and two best trials of its base template."""
    trials = FinishedRun(run)
    manual_words = {word for verbalizer in trials.space["verbalizers"]["seeds"] for words in verbalizer.values() for word in words}
    comparisons = []
    for search in trials.pools.origins.get("triggers", {}).get("searches", []):
        base = trigger_base(search)
        if base is None:  # the space wrote this template with its trigger slots: there is no base to compare
            continue
        for found in (r["template"] for r in search["runs"] if r["template"]):
            comparisons.append({
                "base_manual_words": trials.on_test(trials.best(lambda r: r.template.source == base and all(
                    w in manual_words for ws in r.verbalizer.values() for w in ws))),
                "base_searched_words": trials.on_test(trials.best(lambda r: r.template.source == base)),
                "triggers_and_searched_words": trials.on_test(trials.best(lambda r, t=found: r.template.source == t)),
            })
    return comparisons


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="search_spaces/mr.yaml")
    parser.add_argument("--space", default="search_spaces/mr_gradient.yaml")
    parser.add_argument("--seeds", default=",".join(map(str, BENCHMARK_SEEDS)))
    parser.add_argument("--runs", default="results/runs")
    parser.add_argument("--out", default="results/benchmarks/generators_mr.json")
    add_search_arguments(parser)  # --model: the model of both searches (default: the space's)
    args = parser.parse_args()
    extra = search_options(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    for seed in seeds:
        without = search_seed(Path(args.base), seed, Path(args.runs) / f"bench-{Path(args.base).stem}-seed{seed}", **extra)
        run = Path(args.runs) / f"bench-{Path(args.space).stem}-seed{seed}"
        with_generators = search_seed(Path(args.space), seed, run, **extra)
        per_seed[seed] = {"without": {m: without[m]["test"]["accuracy"] for m in METHODS},
                          "with": {m: with_generators[m]["test"]["accuracy"] for m in METHODS},
                          "wall_seconds": {"without": without.get("timings", {}).get("total_seconds"),
                                           "with": with_generators.get("timings", {}).get("total_seconds")},
                          "templates": template_comparison(run)}
        print(f"seed {seed}: without " + " ".join(f"{m} {per_seed[seed]['without'][m]:.4f}" for m in METHODS)
              + " | with " + " ".join(f"{m} {per_seed[seed]['with'][m]:.4f}" for m in METHODS), flush=True)
        for row in per_seed[seed]["templates"]:
            print("   " + " | ".join(f"{k} {v['test_accuracy']:.4f}" if v else f"{k} -" for k, v in row.items()), flush=True)

    summary = {side: {m: mean_std([per_seed[s][side][m] for s in seeds]) for m in METHODS} for side in ("without", "with")}
    # Per seed, the trigger template the search ranked highest (one that some trial picked).
    chosen = {s: max((row for row in per_seed[s]["templates"] if row["triggers_and_searched_words"]),
                     key=lambda row: row["triggers_and_searched_words"]["train_dev_accuracy"], default=None) for s in seeds}
    rows = [row for row in chosen.values() if row and row["base_manual_words"]]
    summary["template"] = {key: mean_std([row[key]["test_accuracy"] for row in rows])
                           for key in ("base_manual_words", "base_searched_words", "triggers_and_searched_words")}
    summary["template"]["seeds"] = [s for s in seeds if chosen[s] and chosen[s]["base_manual_words"]]
    summary["template"]["triggers_beat_base"] = {str(s): chosen[s]["triggers_and_searched_words"]["test_accuracy"]
                                                 > chosen[s]["base_manual_words"]["test_accuracy"] for s in summary["template"]["seeds"]}
    summary["with_beats_without"] = {m: {str(s): per_seed[s]["with"][m] > per_seed[s]["without"][m] for s in seeds}
                                     for m in ("best", "ensemble")}
    model = RunFolder(run).manifest()["model"]  # the runs' model, as recorded
    report = {"benchmark": "generators", "base_space": args.base, "space": args.space, "seeds": seeds,
              "model": model["name"], "model_weights_sha256": model["weights_sha256"],
              "per_seed": {str(s): v for s, v in per_seed.items()}, "summary": summary, "provenance": stamp()}
    atomic_write_json(args.out, report)
    for side in ("without", "with"):
        print(f"{side:8}: " + "  ".join(f"{m} {summary[side][m]['mean']:.4f} ± {summary[side][m]['std']:.4f}" for m in METHODS))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
