"""How many demonstrations per label? The space's first prompt with 0, 1, 2 and 4 examples per label shown.

For each seed: the space's first seed template and first seed verbalizer, alone and with the
demonstration generator of the search (``demonstration_templates``: ``per_class`` train examples
of each label shown before the query, the slot filled with the verbalizer's first word, ``--sets``
different sets). Each template is scored under every calibration of the space as a trial is:
the calibration fitted on the train examples it does not show, scored on those and dev, and the
calibration chosen by the study's ranking (``autoprompt_search.analysis.scored_as_trial``, as in
bench_trigger_templates). Test accuracy is read on the quality benchmark's 1,000-sentence test
sample (``autoprompt_search.splits.TEST_SAMPLE_SEED``, the one every search with a test limit uses).

Prompts are cut at ``--max-length`` tokens (512, so that four examples per label fit: the
generator gives demonstrations at most half of the prompt). Writes
``results/benchmarks/demonstrations_<space>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoprompt_search.analysis import mean_std, prompt_search, scored_as_trial, scorer_for
from autoprompt_search.candidates.demonstrations import demonstration_templates
from autoprompt_search.candidates.generators.demonstrations import DemonstrationsConfig
from autoprompt_search.candidates.pools import Pools
from autoprompt_search.data import Dataset
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.search import PromptSearch
from autoprompt_search.spaces import load_space
from autoprompt_search.splits import make_splits
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer


def setting_search(scorer: PromptScorer, templates: list[Template], verbalizer: Verbalizer, train: Dataset, dev: Dataset,
                   calibrations: tuple[str, ...], objective: str, shown: tuple[int, ...] = ()) -> PromptSearch:
    """A study's scorer for one setting: its templates with the fixed words in pools of their own,
    scored as a search scores its pools (on the train examples no template of the setting shows, and dev)."""
    pools = Pools(tuple(train.labels), tuple(templates), tuple((tuple(words),) for words in verbalizer.words),
                  calibrations, held_out_train_rows=shown)
    return prompt_search(scorer, pools, train, dev, objective=objective)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/mr.yaml")
    parser.add_argument("--per-class", default="1,2,4", help="examples per label shown; 0 (no demonstration) is always scored")
    parser.add_argument("--sets", type=int, default=1, help="demonstration sets per setting and seed")
    parser.add_argument("--seeds", help="default: the space's few-shot seeds")
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", help="default: results/benchmarks/demonstrations_<space>.json")
    args = parser.parse_args()
    space = load_space(args.space)
    scorer = scorer_for(space.model, args.max_length)
    base, verbalizer = space.templates.seeds[0], space.verbalizers.seeds[0]
    calibrations = tuple(space.calibration)
    settings = [int(n) for n in args.per_class.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(space.few_shot.seeds)
    per_seed = {}
    for seed in seeds:
        splits = make_splits(space.dataset, space.few_shot.k, seed, args.test_limit)  # test: the same sample for every seed
        train, dev, test = splits.train, splits.dev, splits.test
        plain = setting_search(scorer, [base], verbalizer, train, dev, calibrations, space.objective)
        rows = {"0": [{**scored_as_trial(plain, test, base, verbalizer), "scored_train": len(plain.train)}]}
        for per_class in settings:
            config = DemonstrationsConfig(enabled=True, per_class=per_class, sets=args.sets, templates=1)
            found, record = demonstration_templates(config, scorer, [(base, verbalizer)], train, seed, log=print)
            # As in a search, no prompt is scored on an example that any set of its setting shows.
            search = setting_search(scorer, [template for template, _ in found], verbalizer, train, dev, calibrations, space.objective,
                                    shown=tuple(record["shown_train_rows"]))
            rows[str(per_class)] = [{**scored_as_trial(search, test, template, verbalizer), "scored_train": len(search.train),
                                     "shown_train_rows": sorted(d["train_row"] for d in demo_set)}
                                    for (template, _), demo_set in zip(found, record["sets"])]
        per_seed[str(seed)] = rows
        print(f"seed {seed}: " + "  ".join(f"{n} per label {[round(r['test_accuracy'], 3) for r in found_rows]}"
                                           for n, found_rows in rows.items()), flush=True)
    summary = {}
    for setting in ["0", *map(str, settings)]:
        values = [r for rows in per_seed.values() for r in rows[setting]]
        summary[setting] = {"test_accuracy": mean_std([r["test_accuracy"] for r in values]),
                            **{f"test_accuracy_{method}": mean_std([r["by_calibration"][method]["test_accuracy"] for r in values])
                               for method in calibrations}}
    out = Path(args.out or f"results/benchmarks/demonstrations_{Path(args.space).stem}.json")
    atomic_write_json(out, {"benchmark": "demonstrations", "space": args.space, "template": base.source,
                            "verbalizer": verbalizer.to_dict(), "seeds": seeds, "sets": args.sets, "test_limit": args.test_limit,
                            "max_length": args.max_length, "per_seed": per_seed, "summary": summary, "provenance": stamp()})
    for setting, row in summary.items():
        print(f"{setting} per label: test {row['test_accuracy']['mean']:.4f} ± {row['test_accuracy']['std']:.4f} (calibration chosen on "
              f"train+dev); " + ", ".join(f"{m} {row[f'test_accuracy_{m}']['mean']:.4f}" for m in calibrations))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
