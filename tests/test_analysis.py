"""Reading finished runs back (autoprompt_search.analysis), on a tiny model, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autoprompt_search import analysis
from autoprompt_search.analysis import FinishedRun, mean_std, scored_as_trial, scorer_for, search_seed, trigger_base
from autoprompt_search.errors import UserError
from autoprompt_search.run_folder import MANIFEST, RESULTS, STUDY_DB, RunFolder
from autoprompt_search.spaces import load_space
from autoprompt_search.splits import make_splits
from autoprompt_search.testing import write_tiny_space
from autoprompt_search.verbalizers import Verbalizer


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_causal_lm) -> tuple[Path, Path, dict]:
    """One tiny search, run through search_seed: (space file, run folder, what search_seed returned)."""
    folder = tmp_path_factory.mktemp("analysis")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOPROMPT_SEARCH_CACHE", str(folder / "cache"))
        scorer_for.cache_clear()
        space = write_tiny_space(folder, tiny_causal_lm)
        results = search_seed(space, 13, folder / "run", batch_size=8, log=lambda message: None)
        yield space, folder / "run", results
    scorer_for.cache_clear()


@pytest.fixture(scope="module")
def run(finished) -> FinishedRun:
    return FinishedRun(finished[1])


def test_search_seed_runs_a_search_and_reports_its_wall_time(finished) -> None:
    _, out, results = finished
    assert RunFolder(out).is_complete()
    assert results["wall_seconds"] > 0
    assert {key: value for key, value in results.items() if key != "wall_seconds"} == RunFolder(out).results()


def test_search_seed_reuses_a_complete_run_without_searching_again(finished, monkeypatch) -> None:
    space, out, _ = finished

    def refuse(*args, **kwargs):
        raise AssertionError("a complete run was searched again")

    monkeypatch.setattr("autoprompt_search.pipeline.run_search", refuse)
    assert search_seed(space, 13, out) == RunFolder(out).results()


def test_search_seed_resumes_a_run_with_a_study_and_starts_one_without(tmp_path, monkeypatch) -> None:
    calls = []

    def fake(space, **kwargs):
        calls.append(kwargs)
        RunFolder(kwargs["out"]).write_json(RESULTS, {"best": None})

    monkeypatch.setattr("autoprompt_search.pipeline.run_search", fake)
    fresh = search_seed("space.yaml", 21, tmp_path / "fresh", test_limit=10)
    assert calls[-1] == {"seed": 21, "out": tmp_path / "fresh", "resume": False, "test_limit": 10}
    assert fresh["best"] is None and fresh["wall_seconds"] >= 0
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / STUDY_DB).write_bytes(b"")
    (tmp_path / "cut" / MANIFEST).write_text(json.dumps({"status": "interrupted"}))
    search_seed("space.yaml", 21, tmp_path / "cut")
    assert calls[-1]["resume"] is True


def test_a_finished_run_derives_its_splits_again(finished, run) -> None:
    space, out, _ = finished
    recorded = RunFolder(out).manifest()["dataset"]
    for name in ("train", "dev", "test"):
        assert getattr(run, name).content_hash() == recorded["splits"][name]["content_hash"]
    again = make_splits(load_space(space).dataset, recorded["k"], 13)
    assert run.train.examples == again.train.examples and run.test.examples == again.test.examples
    assert run.gold == [run.test.labels.index(e.label) for e in run.test.examples]
    assert run.board and run.board[0].number == RunFolder(out).results()["best"]["trial"]


@pytest.mark.parametrize("field, message", [("test", "test split"), ("train", "train split")])
def test_a_run_whose_data_changed_is_refused(finished, tmp_path, field, message) -> None:
    copy = tmp_path / "run"
    shutil.copytree(finished[1], copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["dataset"]["splits"][field]["content_hash"] = "0" * 64
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=message):
        FinishedRun(copy)


def test_a_run_of_other_weights_is_refused(finished, tmp_path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(finished[1], copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["model"]["weights_sha256"] = "0" * 64
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="weights"):
        FinishedRun(copy)


def test_on_test_reproduces_the_runs_own_test_scores(finished, run) -> None:
    reported = RunFolder(finished[1]).results()
    best = run.on_test(run.board[0])
    assert best["trial"] == reported["best"]["trial"]
    assert best["test_accuracy"] == reported["best"]["test"]["accuracy"]
    assert best["test_macro_f1"] == pytest.approx(reported["best"]["test"]["macro_f1"])
    assert best["test_n"] == reported["best"]["test"]["n"] == len(run.test)
    manual = run.best(lambda r: r.manual)
    assert manual.number == reported["best_manual"]["trial"]
    assert run.on_test(manual)["test_accuracy"] == reported["best_manual"]["test"]["accuracy"]
    assert run.best(lambda r: False) is None and run.on_test(None) is None


def test_the_runs_search_scores_a_trial_as_the_study_did(run) -> None:
    search = run.search()
    assert search is run.search()
    assert len(search.train) == len(run.pools.scored_train(run.train))
    for trial in run.board[:5]:
        result, _, calibration, _ = search.evaluate(trial.params)
        assert result.accuracy == trial.accuracy
        assert result.mean_margin == pytest.approx(trial.mean_margin)
        assert calibration.bias == pytest.approx(trial.calibration.bias)


def test_scored_as_trial_picks_the_calibration_the_study_ranks_first(run) -> None:
    manual = run.best(lambda r: r.manual)  # every calibration of a manual prompt is a trial of the study
    same_prompt = [r for r in run.board if (r.template, r.verbalizer) == (manual.template, manual.verbalizer)]
    assert {r.calibration.method for r in same_prompt} == set(run.pools.calibrations)
    scored = scored_as_trial(run.search(), run.test, manual.template, Verbalizer.parse(manual.verbalizer, run.test.labels))
    assert scored["calibration"] == manual.calibration.method == same_prompt[0].calibration.method
    assert scored["train_dev_accuracy"] == manual.accuracy
    assert scored["test_accuracy"] == run.on_test(manual)["test_accuracy"]
    for trial in same_prompt:
        assert scored["by_calibration"][trial.calibration.method]["train_dev_accuracy"] == trial.accuracy
        assert scored["by_calibration"][trial.calibration.method]["test_accuracy"] == run.on_test(trial)["test_accuracy"]


def test_trigger_base_reads_both_recorded_forms(run) -> None:
    searches = run.pools.origins["triggers"]["searches"]
    assert searches and all(trigger_base(s) == s["base"] for s in searches)
    assert all(trigger_base(s) in {t.source for t in run.pools.templates} for s in searches)  # the seed templates the triggers went into
    assert trigger_base({"template": "{text} [T] [T] It was {mask}", "base": None}) is None  # written with its slots
    # Runs made before the base was recorded: the template without its slots.
    assert trigger_base({"template": "{text} [T] [T] It was {mask}"}) == "{text} It was {mask}"
    assert trigger_base({"template": "[T] [T] {text} It was {mask}"}) == "{text} It was {mask}"


def test_mean_std() -> None:
    assert mean_std([]) == {"mean": None, "std": None, "per_seed": []}
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "per_seed": [0.5]}
    assert mean_std((0.5, 0.7)) == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414213), "per_seed": [0.5, 0.7]}


def test_search_options_pass_on_only_what_was_given() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    analysis.add_search_arguments(parser)
    assert analysis.search_options(parser.parse_args([])) == {}
    given = parser.parse_args(["--model", "m", "--test-limit", "100", "--trials", "3", "--no-cache"])
    assert analysis.search_options(given) == {"model": "m", "test_limit": 100, "trials": 3, "cache": False}
