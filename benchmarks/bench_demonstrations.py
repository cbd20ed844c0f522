"""How many demonstrations per label? The space's first prompt with 0, 1, 2 and 4 examples per label shown.

For each seed: the space's first seed template and first seed verbalizer, alone and with the
demonstration generator of the search (``demonstration_templates``: ``per_class`` train examples
of each label shown before the query, the slot filled with the verbalizer's first word, ``--sets``
different sets). Each template is scored under every calibration of the space as a trial is:
the calibration fitted on the train examples it does not show, scored on those and dev, and the
calibration chosen by the study's ranking. Test accuracy is read on the quality benchmark's
1,000-sentence test sample (``TEST_SAMPLE_SEED``).

Prompts are cut at ``--max-length`` tokens (512, so that four examples per label fit: the
generator gives demonstrations at most half of the prompt). Writes
``results/benchmarks/demonstrations_<space>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoprompt_search import data
from autoprompt_search.candidates.demonstrations import demonstration_templates
from autoprompt_search.cli.search_cmd import TEST_SAMPLE_SEED
from autoprompt_search.data import Dataset
from autoprompt_search.fileio import atomic_write_json
from autoprompt_search.provenance import stamp
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.search import ranking_key
from autoprompt_search.space_generators import DemonstrationsGenerator
from autoprompt_search.spaces import load_space
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import mean_std, scorer_for  # noqa: E402


def gold_of(split: Dataset) -> list[int]:
    return [split.labels.index(e.label) for e in split.examples]


def scored(scorer: PromptScorer, template: Template, verbalizer: Verbalizer, train: Dataset, dev: Dataset, test: Dataset,
           calibrations: tuple[str, ...], objective: str) -> dict:
    """The template under each calibration (fitted on ``train``, the examples it does not show),
    on train+dev and on test; the calibration the study's ranking picks on train+dev."""
    train_dev = [*train.examples, *dev.examples]
    fitted_on = scorer.prepare(template, [e.fields for e in train.examples])
    prepared = scorer.prepare(template, [e.fields for e in train_dev])
    gold = [train.labels.index(e.label) for e in train_dev]
    few_shot = scorer.score_variants(prepared, [(verbalizer, method) for method in calibrations], gold, unlabelled=fitted_on)
    on_test = scorer.score_variants(scorer.prepare(template, [e.fields for e in test.examples]),
                                    [(verbalizer, score.calibration) for score in few_shot], gold_of(test))
    by_calibration, keys = {}, {}
    for method, chosen, test_score in zip(calibrations, few_shot, on_test):
        by_calibration[method] = {"train_dev_accuracy": chosen.accuracy, "train_dev_margin": chosen.mean_margin,
                                  "test_accuracy": test_score.accuracy}
        value = chosen.accuracy if objective == "accuracy" else chosen.macro_f1
        keys[method] = ranking_key(value, chosen.mean_margin, template.source, verbalizer.to_dict(), method)
    method = min(keys, key=keys.get)
    return {"calibration": method, **by_calibration[method], "scored_train": len(train), "by_calibration": by_calibration}


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
    test = data.sample(data.load_split(space.dataset.spec, "test", **space.dataset.load_kwargs()), args.test_limit, TEST_SAMPLE_SEED)
    pool = data.load_split(space.dataset.spec, "train_pool", **space.dataset.load_kwargs())
    settings = [int(n) for n in args.per_class.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(space.few_shot.seeds)
    per_seed = {}
    for seed in seeds:
        train, dev = data.few_shot(pool, space.few_shot.k, seed)
        rows = {"0": [{"template": base.source, **scored(scorer, base, verbalizer, train, dev, test, calibrations, space.objective)}]}
        for per_class in settings:
            generator = DemonstrationsGenerator(enabled=True, per_class=per_class, sets=args.sets, templates=1)
            found, record = demonstration_templates(generator, scorer, [(base, verbalizer)], train, seed, log=print)
            # As in a search, no prompt is scored on an example that any set of its setting shows.
            unshown = train.subset(i for i in range(len(train)) if i not in set(record["shown_train_rows"]))
            rows[str(per_class)] = []
            for (template, _), demo_set in zip(found, record["sets"]):
                rows[str(per_class)].append({"template": template.source, "shown_train_rows": sorted(d["train_row"] for d in demo_set),
                                             **scored(scorer, template, verbalizer, unshown, dev, test, calibrations, space.objective)})
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
