"""The search job end to end on a tiny model: outputs, reproducibility, resume, interruption."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from autoprompt_search import data, load
from autoprompt_search.calibration import Calibration
from autoprompt_search.cli.main import main
from autoprompt_search.optuna_internals import TrialSeededTPESampler
from autoprompt_search.study import STUDY_NAME, leaderboard
from autoprompt_search.testing import write_tiny_space


@pytest.fixture
def space(tmp_path, tiny_causal_lm, isolated_cache) -> Path:
    return write_tiny_space(tmp_path, tiny_causal_lm)


def _run(space: Path, out: Path, *extra: str) -> int:
    return main(["search", str(space), "--out", str(out), "--batch-size", "8", *extra])


def test_search_writes_every_output_with_provenance(space, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert _run(space, out) == 0
    for name in ("best.json", "ensemble.json", "trials.csv", "manifest.json", "results.json", "pools.json", "study.db"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["seed"] == 13
    assert set(manifest["dataset"]["splits"]) == {"train", "dev", "test"}
    assert all(len(split["content_hash"]) == 64 for split in manifest["dataset"]["splits"].values())
    assert len(manifest["model"]["weights_sha256"]) == 64
    assert {"torch", "transformers", "optuna"} <= set(manifest["provenance"]["versions"])
    assert manifest["provenance"]["command"]
    with open(out / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    pools = json.loads((out / "pools.json").read_text())
    assert len(rows) == len(pools["manual"]) + len(pools["proposals"]) + 6 and pools["proposals"]  # the trigger templates, tried first
    assert sum(row["manual"] == "True" for row in rows) == len(pools["manual"])
    printed = capsys.readouterr().out
    assert "Leaderboard" in printed and "held-out estimate" in printed
    results = json.loads((out / "results.json").read_text())
    for choice in (results["best"], results["ensemble"]):
        estimate = choice["estimate"]
        assert estimate["n"] == manifest["dataset"]["splits"]["dev"]["n"] and 0 <= estimate["interval"][0] <= estimate["accuracy"]
        assert estimate["accuracy"] <= estimate["interval"][1] <= 1
        assert estimate["includes_chance"] == (estimate["interval"][0] <= estimate["chance"])
    assert json.loads((out / "best.json").read_text())["scores"]["estimate"] == results["best"]["estimate"]
    assert json.loads((out / "ensemble.json").read_text())["scores"]["estimate"] == results["ensemble"]["estimate"]


def test_loaded_prompt_reproduces_the_reported_test_scores(space, tmp_path) -> None:
    out = tmp_path / "run"
    assert _run(space, out) == 0
    results = json.loads((out / "results.json").read_text())
    test = data.load_split(str(tmp_path / "tiny.csv"), "test", labels=["negative", "positive"], test_fraction=0.3)
    texts = [example.text for example in test.examples]
    gold = [example.label for example in test.examples]
    best = load(out / "best.json")
    assert best.score(texts, gold) == results["best"]["test"]["accuracy"]
    ensemble = load(out / "ensemble.json")
    assert ensemble.score(texts, gold) == results["ensemble"]["test"]["accuracy"]
    assert np.allclose(ensemble.predict_proba(texts).sum(axis=1), 1)


def test_the_same_seed_gives_the_same_best_prompt(space, tmp_path) -> None:
    assert _run(space, tmp_path / "a") == 0
    assert _run(space, tmp_path / "b", "--no-cache") == 0
    first, second = (json.loads((tmp_path / name / "best.json").read_text())["prompt"] for name in ("a", "b"))
    assert first == second


def test_resume_continues_without_redoing_finished_trials(space, tmp_path) -> None:
    out = tmp_path / "run"
    assert _run(space, out, "--trials", "2") == 0
    storage = f"sqlite:///{out / 'study.db'}"
    before = {t.number: t.value for t in optuna.load_study(study_name=STUDY_NAME, storage=storage).trials}
    assert _run(space, out, "--trials", "5", "--resume") == 0
    after = optuna.load_study(study_name=STUDY_NAME, storage=storage).trials
    assert {t.number: t.value for t in after if t.number in before} == before
    pools = json.loads((out / "pools.json").read_text())
    assert len(after) == len(pools["manual"]) + len(pools["proposals"]) + 5


def test_a_non_empty_run_folder_needs_resume(space, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert _run(space, out, "--trials", "1") == 0
    assert _run(space, out, "--trials", "1") == 2
    assert "--resume" in capsys.readouterr().err
    # A run cut off before its study existed is resumed as a fresh start.
    assert _run(space, tmp_path / "fresh", "--trials", "1", "--resume") == 0


def test_resume_refuses_other_settings(space, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert _run(space, out, "--trials", "1") == 0
    assert _run(space, out, "--trials", "2", "--seed", "21", "--resume") == 2
    assert "seed" in capsys.readouterr().err


def test_the_space_sets_the_prompt_length_and_the_command_line_overrides_it(tmp_path, tiny_causal_lm, isolated_cache,
                                                                          capsys) -> None:
    space = write_tiny_space(tmp_path, tiny_causal_lm, trials=1, extra="max_length: 24\n")
    assert _run(space, tmp_path / "space") == 0
    assert _run(space, tmp_path / "flag", "--max-length", "32") == 0
    for run, length in (("space", 24), ("flag", 32)):
        assert json.loads((tmp_path / run / "manifest.json").read_text())["model"]["max_length"] == length
        assert json.loads((tmp_path / run / "best.json").read_text())["model"]["max_length"] == length
        assert load(tmp_path / run / "best.json").scorer.backend.max_length == length
    capsys.readouterr()
    # The prompt length changes every slot distribution: a run is continued only with its own.
    assert _run(space, tmp_path / "space", "--max-length", "32", "--resume") == 2
    assert "space_sha256" in capsys.readouterr().err


def test_a_resumed_search_finds_what_an_uninterrupted_one_finds(space, tmp_path) -> None:
    assert _run(space, tmp_path / "whole", "--trials", "10") == 0
    assert _run(space, tmp_path / "parts", "--trials", "4") == 0
    assert _run(space, tmp_path / "parts", "--trials", "10", "--resume") == 0
    whole, parts = (json.loads((tmp_path / name / "best.json").read_text()) for name in ("whole", "parts"))
    assert whole["prompt"] == parts["prompt"]
    with open(tmp_path / "whole" / "trials.csv") as a, open(tmp_path / "parts" / "trials.csv") as b:
        assert [row["template"] + row["verbalizer"] for row in csv.DictReader(a)] == [
            row["template"] + row["verbalizer"] for row in csv.DictReader(b)
        ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("verbalizers: {seeds: [{negative: [bad], positive: [good]}, {negative: [good], positive: [great]}]}\n", "both"),
    ],
)
def test_bad_spaces_fail_before_any_trial(tmp_path, tiny_causal_lm, isolated_cache, capsys, extra, message) -> None:
    space = write_tiny_space(tmp_path, tiny_causal_lm, extra="")
    text = space.read_text().replace(
        "verbalizers:\n  seeds: [{negative: [bad], positive: [good]}, {negative: [terrible], positive: [great]}]\n", extra
    )
    space.write_text(text)
    assert _run(space, tmp_path / "run") == 2
    assert message in capsys.readouterr().err


def _start(space: Path, out: Path, trials: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "autoprompt_search.cli.main", "search", str(space), "--out", str(out), "--trials", str(trials)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _wait_for_finished_trials(out: Path, count: int, process: subprocess.Popen, limit: float = 120) -> None:
    """Poll the study read-only (opening it through Optuna could race the writer creating it)."""
    import sqlite3

    deadline = time.time() + limit
    while time.time() < deadline and process.poll() is None:
        try:
            with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True) as connection:
                finished = connection.execute("SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
            if finished >= count:
                return
        except sqlite3.Error:
            pass  # not created yet, or busy
        time.sleep(0.2)
    raise AssertionError(
        f"the search did not reach {count} trials: {process.poll()} {process.stderr.read() if process.poll() is not None else ''}"
    )


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_search_resumes_and_loses_no_finished_trial(space, tmp_path, how) -> None:
    out = tmp_path / "run"
    process = _start(space, out, trials=400)
    _wait_for_finished_trials(out, 12, process)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=60)
    storage = f"sqlite:///{out / 'study.db'}"
    trials = optuna.load_study(study_name=STUDY_NAME, storage=storage).trials
    finished = {t.number: (t.value, t.params) for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    done = sum(t.state.is_finished() for t in trials)
    assert len(finished) >= 5
    if how == signal.SIGINT:
        assert process.returncode == 130
        assert "--resume" in stderr and "Traceback" not in stderr
        assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    manual = len(json.loads((out / "pools.json").read_text())["manual"])
    assert _run(space, out, "--trials", str(max(done - manual, 0) + 3), "--resume") == 0
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    kept = {t.number: (t.value, t.params) for t in study.trials if t.number in finished}
    assert kept == finished
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]


def test_a_prompt_whose_scoring_raises_is_failed_for_good(space, tmp_path, monkeypatch) -> None:
    """An error while scoring is the prompt's (or the code's), not a kill's: no worker retries it."""
    from autoprompt_search.search import PromptSearch

    calls = []
    original = PromptSearch.objective_function

    def third_call_raises(self, trial):
        calls.append(trial.number)
        if len(calls) == 3:
            raise RuntimeError("scoring broke")
        return original(self, trial)

    monkeypatch.setattr(PromptSearch, "objective_function", third_call_raises)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="scoring broke"):
        _run(space, out)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[calls[2]] == optuna.trial.TrialState.FAIL
    assert optuna.trial.TrialState.RUNNING not in states.values()
    assert not any(t.user_attrs.get("retry_of") == calls[2] for t in study.get_trials(deepcopy=False))


def test_a_retried_baseline_whose_prompt_was_scored_meanwhile_is_not_scored_again(space, tmp_path) -> None:
    """A sampled trial waiting for a cut-off baseline of its prompt scores the prompt itself once the
    baseline is failed; the baseline's retry then takes that score, and the prompt stays manual."""
    out = tmp_path / "run"
    assert _run(space, out) == 0
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    sampled = next(t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                   if not t.user_attrs.get("manual") and not t.user_attrs.get("proposal") and "repeat_of" not in t.user_attrs)
    assert not next(r for r in leaderboard(study) if r.number == sampled.number).manual
    study.enqueue_trial(sampled.params, user_attrs={"manual": True, "retry_of": 0, "retries": 1})
    assert _run(space, out, "--resume") == 0
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    retry = next(t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("retry_of") == 0)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.user_attrs["repeat_of"] == sampled.number
    assert retry.value == sampled.value
    assert next(r for r in leaderboard(study) if r.number == sampled.number).manual


def test_unlabelled_texts_fit_the_prior_and_measure_each_trial(tmp_path, tiny_causal_lm, isolated_cache, monkeypatch) -> None:
    """``unlabelled.texts`` draws texts of the train pool that the few-shot splits do not hold;
    ``prior`` is fitted on them, each trial records its mutual information on them, and the run's
    record of them is checked when it is read back."""
    from autoprompt_search.analysis import FinishedRun
    from autoprompt_search.verbalizers import Verbalizer

    space = write_tiny_space(tmp_path, tiny_causal_lm, extra="unlabelled: {texts: 6}\n")
    out = tmp_path / "run"
    assert _run(space, out) == 0
    run = FinishedRun(out)
    unlabelled = run.splits.unlabelled
    assert len(unlabelled) == 6
    recorded = json.loads((out / "manifest.json").read_text())["dataset"]["splits"]["unlabelled"]
    assert recorded == {"n": 6, "content_hash": unlabelled.content_hash()}
    texts = {e.fields["text"] for e in unlabelled.examples}
    assert not texts & {e.fields["text"] for split in (run.train, run.dev, run.test) for e in split.examples}
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert done and all(0.0 <= t.user_attrs["unlabelled_mi"] <= np.log(2) + 1e-6 for t in done)
    prior = next(r for r in run.board if r.calibration.method == "prior")
    scorer = run.scorer
    raw = scorer.class_scores(scorer.prepare(prior.template, [e.fields for e in unlabelled.examples]).prompts,
                              scorer.word_ids(prior.template, Verbalizer.parse(prior.verbalizer, run.dev.labels)))
    assert np.allclose(prior.calibration.bias, raw.mean(dim=0).numpy(), atol=1e-5)
    assert run.results()["best"]["selected_by"] == "labelled" and run.results()["best"]["rank"] == 1

    # a trial reads the texts once; only `prior` reads them before the labelled examples (a pruned
    # trial of another calibration never pays for them), and nothing reads them when not asked
    search, reads = run.search(), []
    read = search.unlabelled_scores
    monkeypatch.setattr(search, "unlabelled_scores", lambda *args: reads.append(args) or read(*args))
    uncalibrated = next(r for r in run.board if r.calibration.method == "none")
    assert search.evaluate(uncalibrated.params, unlabelled_probabilities=False).unlabelled is None and reads == []
    assert search.evaluate(uncalibrated.params).unlabelled.shape == (6, 2) and len(reads) == 1
    assert search.evaluate(prior.params).unlabelled.shape == (6, 2) and len(reads) == 2


def test_select_agreement_chooses_the_best_prompt_by_the_unlabelled_texts(tmp_path, tiny_causal_lm, isolated_cache) -> None:
    """With ``unlabelled.select: agreement`` the best prompt is the near-top prompt agreeing most with
    the pseudo-labels of the top 10 on the unlabelled texts, recorded with its rank and the rule."""
    from autoprompt_search.analysis import FinishedRun
    from autoprompt_search.label_free import agreement, near_top, pseudo_labels

    space = write_tiny_space(tmp_path, tiny_causal_lm, extra="unlabelled: {texts: 6, select: agreement}\n")
    out = tmp_path / "run"
    assert _run(space, out) == 0
    run = FinishedRun(out)
    assert json.loads((out / "manifest.json").read_text())["space"]["unlabelled"] == {"texts": 6, "select": "agreement"}
    best = run.results()["best"]
    assert best["selected_by"] == "agreement"
    assert f"#{best['rank']} of the leaderboard: among the prompts within one standard error" in (out / "report.html").read_text()
    chosen = run.board[best["rank"] - 1]
    assert (chosen.template.source, chosen.verbalizer, chosen.calibration.method) == \
        (best["template"], best["verbalizer"], best["calibration"])
    search = run.search()
    probabilities = [search.evaluate(r.params).unlabelled for r in run.board]
    close = near_top([r.objective for r in run.board], len(search.gold))
    assert len(close) > 1 and best["rank"] - 1 in close  # the labels leave a choice to make
    labels = pseudo_labels(probabilities[:10])
    assert agreement(probabilities[best["rank"] - 1], labels) == max(agreement(probabilities[i], labels) for i in close)


def test_leaderboard_breaks_ties_by_margin_not_by_trial_order() -> None:
    study = optuna.create_study(direction="maximize")
    distribution = {"calibration": optuna.distributions.CategoricalDistribution(["none"])}
    for number, margin in enumerate([0.1, 0.5, 0.3]):
        study.add_trial(
            optuna.trial.create_trial(
                value=0.75,
                params={"calibration": "none"},
                distributions=distribution,
                user_attrs={
                    "accuracy": 0.75,
                    "macro_f1": 0.75,
                    "mean_margin": margin,
                    "template_text": f"t{number} {{text}} {{mask}}",
                    "verbalizer": {"a": ["x"]},
                    "calibration_bias": [],
                },
            )
        )
    board = leaderboard(study)
    assert [result.mean_margin for result in board] == [0.5, 0.3, 0.1]
    assert board[0].calibration == Calibration("none", ())


def test_trial_seeded_sampler_depends_only_on_seed_and_history() -> None:
    def suggestions(burn: int) -> list[int]:
        sampler = TrialSeededTPESampler(7, n_startup_trials=3)
        for _ in range(burn):
            sampler._rng.rng.rand()  # disturb the state, as a restart would
        study = optuna.create_study(direction="maximize", sampler=sampler)
        values = []
        for _ in range(8):
            trial = study.ask()
            values.append(trial.suggest_categorical("x", list(range(20))))
            study.tell(trial, float(values[-1] % 7))
        return values

    assert suggestions(0) == suggestions(5)


def test_the_search_reuses_the_train_pass_of_the_label_word_generator(space, tiny_causal_lm) -> None:
    from autoprompt_search.backends import load_backend
    from autoprompt_search.cache import SlotCache
    from autoprompt_search.candidates.build import build_pools
    from autoprompt_search.scoring import PromptScorer
    from autoprompt_search.search import PromptSearch
    from autoprompt_search.spaces import load_space

    loaded = load_space(space)
    pool = data.load_split(str(space.parent / "tiny.csv"), "train_pool", labels=["negative", "positive"], test_fraction=0.3)
    train, dev = data.few_shot(pool, loaded.few_shot.k, 13)
    scorer = PromptScorer(load_backend(tiny_causal_lm), SlotCache())
    pools = build_pools(loaded, scorer, train, dev, log=lambda message: None)
    search = PromptSearch(scorer, train, dev, pools)
    passes = scorer.backend.forward_passes
    scorer.slot_log_probs(search.prepared(0)[0].prompts)  # the train piece of a seed template
    assert scorer.backend.forward_passes == passes


def _rounds_space(space: Path, count: int = 2, trials: int = 3) -> Path:
    rounds = space.parent / "rounds.yaml"
    rounds.write_text(f"include: {space.name}\nname: tiny_rounds\ngenerators: {{rounds: {{count: {count}, trials: {trials}}}}}\n")
    return rounds


def _study_trials(out: Path) -> list:
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}").get_trials(deepcopy=False)


def test_each_generation_round_gets_parameter_names_of_its_own(space, tmp_path) -> None:
    from autoprompt_search.candidates.pools import Pools, word_param

    out = tmp_path / "run"
    assert _run(_rounds_space(space), out, "--trials", "8") == 0
    stored = json.loads((out / "pools.json").read_text())
    pools = Pools.from_dict(stored)
    assert pools.rounds == 2 and len(stored["round_sizes"]) == 2
    record = stored["origins"]["rounds"][0]
    board = leaderboard(optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}"))
    assert record["round"] == 1 and record["templates"][0] in {
        r.template.source for r in board
    }  # the study's templates, not the seeds' ranking
    assert all(pools.round_sizes[1][c] >= pools.round_sizes[0][c] for c in range(2))
    boundary = pools.enqueued + 3  # the baselines and the generated templates' proposals, then 3 sampled trials
    trials = sorted(_study_trials(out), key=lambda t: t.number)
    for trial in trials:
        round_index = 0 if trial.number < boundary else 1
        assert all(word_param(c, round_index) in trial.params for c in range(2)), (trial.number, trial.params)
        assert all(word_param(c, 1 - round_index) not in trial.params for c in range(2))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.user_attrs["verbalizer"] == pools.verbalizer(trial.params).to_dict()
    assert len(trials) >= pools.enqueued + 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pools"]["rounds"][0]["new_options"] == [pools.round_sizes[1][c] - pools.round_sizes[0][c] for c in range(2)]


def test_a_search_with_rounds_resumes_into_the_round_it_reached_and_is_reproducible(space, tmp_path) -> None:
    rounds = _rounds_space(space)
    assert _run(rounds, tmp_path / "whole", "--trials", "8") == 0
    assert _run(rounds, tmp_path / "parts", "--trials", "5") == 0  # stops in round 2, after its generation
    assert len(json.loads((tmp_path / "parts" / "pools.json").read_text())["round_sizes"]) == 2
    assert _run(rounds, tmp_path / "parts", "--trials", "8", "--resume") == 0
    whole, parts = (json.loads((tmp_path / name / "pools.json").read_text()) for name in ("whole", "parts"))
    assert whole["words"] == parts["words"] and whole["round_sizes"] == parts["round_sizes"]
    with open(tmp_path / "whole" / "trials.csv") as a, open(tmp_path / "parts" / "trials.csv") as b:
        assert [row["template"] + row["verbalizer"] for row in csv.DictReader(a)] == [
            row["template"] + row["verbalizer"] for row in csv.DictReader(b)
        ]


def test_rounds_with_a_shared_storage_are_refused(space, tmp_path, capsys) -> None:
    assert _run(_rounds_space(space), tmp_path / "run", "--storage", f"sqlite:///{tmp_path / 'shared.db'}") == 2
    assert "generators.rounds.count > 1 needs the run folder's own storage" in capsys.readouterr().err


def test_trigger_fluency_runs_on_a_causal_model_and_is_refused_on_a_masked_one(
    tmp_path, tiny_causal_lm, tiny_masked_lm, isolated_cache, capsys
) -> None:
    for name, model in (("causal", tiny_causal_lm), ("masked", tiny_masked_lm)):
        (tmp_path / name).mkdir()
        space = write_tiny_space(tmp_path / name, model)
        space.write_text(space.read_text().replace("patience: 2}", "patience: 2, fluency: 5}"))
        code = _run(space, tmp_path / name / "run", "--trials", "2")
        if name == "causal":
            assert code == 0
            pools = json.loads((tmp_path / name / "run" / "pools.json").read_text())
            assert pools["origins"]["triggers"]["settings"]["fluency"] == 5
        else:
            assert code == 2
            assert "generators.triggers.fluency" in capsys.readouterr().err
            assert not (tmp_path / name / "run" / "best.json").exists()
