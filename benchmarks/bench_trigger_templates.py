"""Does a searched trigger template beat its base template? Paired, on held-out test.

For each seed it runs (or reads back, when complete) a search of ``--space`` (default
``search_spaces/mr_gradient.yaml``) and takes every template its trigger search wrote (each
restart whose triggers changed). Each is set beside its base template (the same template without
the trigger slots) with the same words: the verbalizer the triggers were searched for. Both are
scored under every calibration of the space on train+dev exactly as a trial is (calibration
fitted on the scored train examples), the calibration chosen by the study's own ranking, and test
accuracy read on the run's test sample. Per seed, the trigger template ranked best on train+dev
is the one compared.

This isolates what the triggers do. Beside it, ``with_searched_words`` sets the study's best trial
on the trigger template (its words from the whole pool, searched ones included) against the
study's best trial on the base template, as ``bench_generators.py`` does; runs made before
generated templates were enqueued have such a trial only where the sampler picked the template.

The JSON also carries each search's own test figures (best manual prompt, best single prompt,
ensemble). Writes ``results/benchmarks/trigger_templates_<space>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoprompt_search.analysis import BENCHMARK_SEEDS, FinishedRun, mean_std, scored_as_trial, search_seed, trigger_base
from autoprompt_search.analysis import REPORTED_PROMPTS as METHODS
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer


def compare(run: Path) -> list[dict]:
    """Per trigger search of the run: the base template and each written trigger template, same words."""
    trials = FinishedRun(run)
    search = trials.search()
    searches = []
    for record in trials.pools.origins.get("triggers", {}).get("searches", []):
        verbalizer = Verbalizer.parse(record["verbalizer"], trials.test.labels)
        base = trigger_base(record)
        if base is None:  # the space wrote this template with its trigger slots: there is no base to compare
            continue
        found = [{"tokens": r["tokens"], **scored_as_trial(search, trials.test, Template.parse(r["template"]), verbalizer),
                  "best_trial": trials.on_test(trials.best(lambda t, source=r["template"]: t.template.source == source))}
                 for r in record["runs"] if r["template"] and r["changed"]]
        base_trial = trials.on_test(trials.best(lambda t: t.template.source == base))
        searches.append({"verbalizer": record["verbalizer"],
                         "base": {**scored_as_trial(search, trials.test, Template.parse(base), verbalizer), "best_trial": base_trial},
                         "triggers": found})
    return searches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/mr_gradient.yaml")
    parser.add_argument("--seeds", default=",".join(map(str, BENCHMARK_SEEDS)))
    parser.add_argument("--runs", default="results/runs/quality", help="run folders are <runs>/<space name>-seed<seed>")
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--out", help="default: results/benchmarks/trigger_templates_<space>.json")
    args = parser.parse_args()
    space = Path(args.space)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    for seed in seeds:
        run = Path(args.runs) / f"{space.stem}-seed{seed}"
        results = search_seed(space, seed, run, test_limit=args.test_limit)
        searches = compare(run)
        ranked = [(trigger, search["base"]) for search in searches for trigger in search["triggers"]]
        best = max(ranked, key=lambda pair: (pair[0]["train_dev_accuracy"], pair[0]["train_dev_margin"]), default=None)
        per_seed[str(seed)] = {"run": str(run), "search_test_accuracy": {m: results[m]["test"]["accuracy"] for m in METHODS},
                               "searches": searches,
                               "compared": {"base": best[1], "triggers": best[0]} if best else None}
        for trigger, base in ranked:
            print(f"seed {seed}: {' '.join(trigger['tokens'])!r:40} test {trigger['test_accuracy']:.4f} ({trigger['calibration']}) "
                  f"against base {base['test_accuracy']:.4f} ({base['calibration']})", flush=True)
    compared = {s: row["compared"] for s, row in per_seed.items() if row["compared"]}
    searched = {s: c for s, c in compared.items() if c["triggers"]["best_trial"] and c["base"]["best_trial"]}
    summary = {
        "search_test_accuracy": {m: mean_std([row["search_test_accuracy"][m] for row in per_seed.values()]) for m in METHODS},
        "seeds_with_trigger_templates": list(compared),
        "base_test_accuracy": mean_std([c["base"]["test_accuracy"] for c in compared.values()]),
        "triggers_test_accuracy": mean_std([c["triggers"]["test_accuracy"] for c in compared.values()]),
        "triggers_beat_base": {s: c["triggers"]["test_accuracy"] > c["base"]["test_accuracy"] for s, c in compared.items()},
        "with_searched_words": {  # each template's best trial on train+dev, its words from the whole pool
            "seeds": list(searched),
            "base_test_accuracy": mean_std([c["base"]["best_trial"]["test_accuracy"] for c in searched.values()]),
            "triggers_test_accuracy": mean_std([c["triggers"]["best_trial"]["test_accuracy"] for c in searched.values()]),
            "triggers_beat_base": {s: c["triggers"]["best_trial"]["test_accuracy"] > c["base"]["best_trial"]["test_accuracy"]
                                   for s, c in searched.items()}},
        "every_trigger_template": {
            "count": sum(len(search["triggers"]) for row in per_seed.values() for search in row["searches"]),
            "beat_base": sum(t["test_accuracy"] > search["base"]["test_accuracy"]
                             for row in per_seed.values() for search in row["searches"] for t in search["triggers"])},
    }
    out = Path(args.out or f"results/benchmarks/trigger_templates_{space.stem}.json")
    atomic_write_json(out, {"benchmark": "trigger_templates", "space": str(space), "seeds": seeds, "test_limit": args.test_limit,
                            "per_seed": per_seed, "summary": summary, "provenance": stamp()})
    print(f"base {summary['base_test_accuracy']['mean']}, triggers {summary['triggers_test_accuracy']['mean']}, "
          f"beat base in {sum(summary['triggers_beat_base'].values())} of {len(compared)} seeds; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
