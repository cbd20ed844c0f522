"""Demonstration templates: what they show, which train examples they hold out, and the search around them."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from autoprompt_search import data
from autoprompt_search.candidates.demonstrations import choose_sets, demonstration
from autoprompt_search.cli.main import main
from autoprompt_search.spaces import load_space
from autoprompt_search.study import STUDY_NAME
from autoprompt_search.templates import Template
from autoprompt_search.testing import write_tiny_space

SHOWN = "generators: {demonstrations: {enabled: true, per_class: 1, sets: 2, templates: 2}}\n"


def _tiny(tmp_path: Path, model: Path, extra: str = SHOWN) -> Path:
    base = write_tiny_space(tmp_path, model)
    space = tmp_path / "shown.yaml"
    space.write_text(f"include: {base.name}\nname: tiny_shown\n{extra}")
    return space


def _splits(space: Path, seed: int = 13):
    loaded = load_space(space)
    pool = data.load_split(str(space.parent / "tiny.csv"), "train_pool", labels=["negative", "positive"], test_fraction=0.3)
    return loaded, *data.few_shot(pool, loaded.few_shot.k, seed)


def test_a_demonstration_is_the_template_filled_with_the_example_and_its_word() -> None:
    template = Template.parse("Review: {text}\nSentiment: {mask}")
    shown = demonstration(template, {"text": "a {braced} film"}, "great")
    assert shown == "Review: a {{braced}} film\nSentiment: great"
    parsed = Template.parse(shown + "\n\n" + template.source)  # braces stay literal: still one field and one slot
    assert parsed.fields_used == ("text",) and "a {braced} film" in parsed.segments[0].value


def test_demonstration_sets_are_balanced_disjoint_and_seeded() -> None:
    examples = [data.Example({"text": f"t{i}"}, "negative" if i % 2 else "positive") for i in range(12)]
    train = data.Dataset("toy", examples, ["negative", "positive"], ["text"])
    sets = choose_sets(train, per_class=2, sets=3, seed=7, eligible=lambda row: True)
    assert len(sets) == 3
    rows = [row for chosen in sets for row in chosen]
    assert len(rows) == len(set(rows)) == 12
    for chosen in sets:
        assert sorted(train.examples[row].label for row in chosen) == ["negative", "negative", "positive", "positive"]
    assert sets == choose_sets(train, per_class=2, sets=3, seed=7, eligible=lambda row: True)
    assert sets != choose_sets(train, per_class=2, sets=3, seed=8, eligible=lambda row: True)
    assert choose_sets(train, per_class=2, sets=3, seed=7, eligible=lambda row: row != 0) is None  # one label short


def test_pools_gain_demonstration_templates_and_propose_them(tmp_path, tiny_causal_lm, isolated_cache) -> None:
    from autoprompt_search.backends import load_backend
    from autoprompt_search.cache import SlotCache
    from autoprompt_search.candidates.build import build_pools
    from autoprompt_search.scoring import PromptScorer

    space, train, dev = _splits(_tiny(tmp_path, tiny_causal_lm))
    pools = build_pools(space, PromptScorer(load_backend(tiny_causal_lm), SlotCache()), train, dev, log=lambda message: None)
    record = pools.origins["demonstrations"]
    assert len(record["templates"]) == 4 and set(record["templates"]) <= {t.source for t in pools.templates}
    shown_rows = record["shown_train_rows"]
    assert len(shown_rows) == 4 and sorted(train.examples[r].label for r in shown_rows) == ["negative"] * 2 + ["positive"] * 2
    for source, rows in zip(record["templates"], record["sets"] * 2):
        for entry in rows:
            assert train.examples[entry["train_row"]].fields["text"] in source
        assert source.endswith(("{text} It was {mask}", "{text} All in all, the movie was {mask}"))
    # Each generated template is proposed once per calibration: a demonstration template with the
    # words it shows, a trigger template with the words its triggers were searched for.
    searches = pools.origins["triggers"]["searches"]
    # Each search records the template its slots went into: the written trigger template less the slots.
    assert all(
        search["base"] in {t.source for t in pools.templates} and search["template"].replace(" [T]", "") == search["base"]
        for search in searches
    )
    triggered = {
        run["template"]: search["verbalizer"] for search in searches for run in search["runs"] if run["template"] and run["changed"]
    }
    assert triggered  # the tiny space's trigger search changes its triggers
    assert len(pools.proposals) == (4 + len(triggered)) * len(space.calibration)
    assert len({json.dumps(params, sort_keys=True) for params in pools.proposals}) == len(pools.proposals)
    for params in pools.proposals:
        template = pools.templates[params["template"]].source
        verbalizer = pools.verbalizer(params)
        if template in triggered:
            assert verbalizer.to_dict() == triggered[template]
        else:
            assert template in record["templates"]
            assert all(f"was {words[0]}" in template for words in verbalizer.words)
    kept = pools.scored_train(train)
    assert len(kept) == len(train) - 4
    assert not {e.fields["text"] for e in kept.examples} & {train.examples[r].fields["text"] for r in shown_rows}


def test_a_trigger_template_written_by_the_space_records_no_base(tmp_path, tiny_causal_lm, isolated_cache) -> None:
    from autoprompt_search.backends import load_backend
    from autoprompt_search.cache import SlotCache
    from autoprompt_search.candidates.build import build_pools
    from autoprompt_search.scoring import PromptScorer

    space, train, dev = _splits(_tiny(tmp_path, tiny_causal_lm, "generators: {triggers: {templates: ['{text} [T] [T] It was {mask}']}}\n"))
    pools = build_pools(space, PromptScorer(load_backend(tiny_causal_lm), SlotCache()), train, dev, log=lambda message: None)
    (search,) = pools.origins["triggers"]["searches"]
    assert search["template"] == "{text} [T] [T] It was {mask}" and search["base"] is None  # no template without the slots was searched


def test_texts_too_long_to_show_add_no_template(tmp_path, tiny_causal_lm, isolated_cache) -> None:
    from autoprompt_search.backends import load_backend
    from autoprompt_search.cache import SlotCache
    from autoprompt_search.candidates.build import build_pools
    from autoprompt_search.scoring import PromptScorer

    space, train, dev = _splits(_tiny(tmp_path, tiny_causal_lm))
    backend = load_backend(tiny_causal_lm, max_length=24)  # a few tokens per demonstration: no tiny text fits
    messages: list[str] = []
    pools = build_pools(space, PromptScorer(backend, SlotCache()), train, dev, log=messages.append)
    assert pools.origins["demonstrations"]["templates"] == [] and "skipped" in pools.origins["demonstrations"]
    written = {run["template"] for search in pools.origins["triggers"]["searches"] for run in search["runs"]}
    assert all(pools.templates[params["template"]].source in written for params in pools.proposals)  # the trigger search's only
    assert pools.scored_train(train) is train
    assert any(message.startswith("demonstrations: none") for message in messages)


def test_the_search_never_scores_a_shown_example_and_resumes(tmp_path, tiny_causal_lm, isolated_cache) -> None:
    space = _tiny(tmp_path, tiny_causal_lm)
    out = tmp_path / "run"
    assert main(["search", str(space), "--out", str(out), "--batch-size", "8", "--trials", "3"]) == 0
    pools = json.loads((out / "pools.json").read_text())
    results = json.loads((out / "results.json").read_text())
    loaded, train, dev = _splits(space)
    assert results["best"]["train_dev"]["n"] == len(train) + len(dev) - len(pools["origins"]["demonstrations"]["shown_train_rows"])
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    proposed = [t for t in study.trials if t.user_attrs.get("proposal")]
    assert len(proposed) == len(pools["proposals"]) and all(t.state == optuna.trial.TrialState.COMPLETE for t in proposed)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pools"]["demonstrations"]["shown_train_rows"] == pools["origins"]["demonstrations"]["shown_train_rows"]
    assert main(["search", str(space), "--out", str(out), "--batch-size", "8", "--trials", "5", "--resume"]) == 0
    finished = [
        t
        for t in optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}").trials
        if t.state != optuna.trial.TrialState.FAIL
    ]
    assert len(finished) >= len(pools["manual"]) + len(pools["proposals"]) + 5


@pytest.mark.parametrize(
    "extra, message",
    [
        ("generators: {demonstrations: {enabled: true, per_class: 2, sets: 2}}\n", "must stay below few_shot.k (4)"),
        ("generators: {demonstrations: {enabled: true, separator: '{x}'}}\n", "generators.demonstrations.separator"),
        ("generators: {demonstrations: {enabled: yes please}}\n", "generators.demonstrations.enabled"),
        ("generators: {demonstrations: {sets: 0}}\n", "generators.demonstrations.sets"),
    ],
)
def test_bad_demonstration_settings_give_one_clear_error(tmp_path, tiny_causal_lm, capsys, extra, message) -> None:
    space = _tiny(tmp_path, tiny_causal_lm, extra)
    assert main(["validate", str(space)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_leaderboard_and_report_outline_demonstration_templates(tmp_path, tiny_causal_lm, isolated_cache, capsys) -> None:
    """A template with demonstrations is shown by its structure, not by its first demonstration's text."""
    from autoprompt_search.templates import outline

    space = _tiny(tmp_path, tiny_causal_lm)
    out = tmp_path / "run"
    assert main(["search", str(space), "--out", str(out), "--batch-size", "8", "--trials", "3"]) == 0
    printed = capsys.readouterr().out
    _, loaded_train, _ = _splits(space)
    record = json.loads((out / "pools.json").read_text())["origins"]["demonstrations"]
    assert len(record["bases"]) == len(record["templates"]) == 4
    for source, base in zip(record["templates"], record["bases"]):
        assert outline(source, record) == f"[2 demonstrations, set {base['set']}] {base['base']}"
        assert source.endswith(base["base"])
    assert {base["set"] for base in record["bases"]} == {1, 2}
    assert outline("{text} It was {mask}", record) == "{text} It was {mask}"  # not a demonstration template
    board = json.loads((out / "results.json").read_text())
    shown = [t for t in record["templates"] if t in {m["template"] for m in board["ensemble"]["members"]} | {board["best"]["template"]}]
    report = (out / "report.html").read_text()
    assert "[2 demonstrations, set " in report
    for source in shown:  # the full text stays at hand: on hover in the report, in the files
        assert f"[2 demonstrations, set {record['bases'][record['templates'].index(source)]['set']}]" in report
    leaderboard = printed[printed.index("Leaderboard"):]
    demonstration_rows = [line for line in leaderboard.splitlines() if "[2 demonstrations, set" in line]
    assert demonstration_rows
    shown_texts = [loaded_train.examples[entry["train_row"]].fields["text"] for rows in record["sets"] for entry in rows]
    assert not any(text[:20] in line for line in demonstration_rows for text in shown_texts)
