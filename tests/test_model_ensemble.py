"""Ensembles of models on two tiny models (a causal and a masked one): ``run_search_models`` runs
one search per model on the same sample and combines their ensembles; ``combine_runs`` checks
what it combines and where it writes; the ``models`` prompt file loads as a predictor that
reproduces the reported figures, each part checked as any prompt file is."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from autoprompt_search import load
from autoprompt_search.cli.main import EXIT_USER_ERROR, main
from autoprompt_search.errors import UserError
from autoprompt_search.model_ensemble import ModelEnsembleResult, combine_runs
from autoprompt_search.pipeline import run_search, run_search_models
from autoprompt_search.predictor import ModelEnsemblePredictor
from autoprompt_search.prompt_file import MODELS_FORMAT_VERSION, TRAINED_PARTS_FORMAT_VERSION, parse_document
from autoprompt_search.run_folder import ENSEMBLE, PREDICTIONS, RESULTS, RunFolder
from autoprompt_search.spaces import slug
from autoprompt_search.testing import write_tiny_dataset
from autoprompt_search.training import train
from autoprompt_search.training.source import read_source

SPACE = {
    "name": "small",
    "dataset": {"path": "tiny.csv", "text_fields": ["text"], "label_field": "label", "labels": ["negative", "positive"],
                "test_fraction": 0.3},
    "few_shot": {"k": 4, "seeds": [13, 21]},
    "templates": {"seeds": ["{text} It was {mask}", "{text} Overall it was {mask}"]},
    "verbalizers": {"seeds": [{"negative": ["bad"], "positive": ["good"]}, {"negative": ["terrible"], "positive": ["great"]}]},
    "generators": {"label_words": {"enabled": False}},
    "calibration": ["none", "prior"],
    "budget": {"trials": 3},
    "pruner": {"type": "none", "chunks": 1},
    "ensemble": {"size": 2},
}


def quiet(message: str) -> None:
    """A log that drops the messages."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_tiny_dataset(folder / "tiny.csv", copies=2)
    (folder / "small.yaml").write_text(yaml.safe_dump({**SPACE, "model": "smollm2-135m"}), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOPROMPT_SEARCH_CACHE", str(folder / "cache"))
        yield folder


@pytest.fixture(scope="module")
def models(tiny_causal_lm: Path, tiny_masked_lm: Path) -> list[str]:
    return [str(tiny_causal_lm), str(tiny_masked_lm)]


@pytest.fixture(scope="module")
def combined(workspace: Path, models: list[str]) -> ModelEnsembleResult:
    return run_search_models(workspace / "small.yaml", models, seed=13, out=workspace / "both", batch_size=8, log=quiet)


def part_runs(combined: ModelEnsembleResult, models: list[str]) -> list[Path]:
    return [combined.path / slug(model) for model in models]


def test_each_model_searches_in_its_own_folder_on_the_same_sample(combined: ModelEnsembleResult, models: list[str]) -> None:
    manifests = [RunFolder(run).manifest() for run in part_runs(combined, models)]
    assert [m["status"] for m in manifests] == ["complete", "complete"]
    assert [m["model"]["name"] for m in manifests] == models
    assert manifests[0]["dataset"]["splits"] == manifests[1]["dataset"]["splits"]
    assert [part["run"] for part in combined.summary["parts"]] == [str(run.resolve()) for run in part_runs(combined, models)]


def test_each_part_is_its_run_ensemble_on_the_examples_the_run_scored(combined: ModelEnsembleResult, models: list[str]) -> None:
    """No template shows a demonstration here, so train+dev is the run's own selection set: the
    loaded ensemble gives the run's recorded figures there and on test."""
    for part, run in zip(combined.summary["parts"], part_runs(combined, models)):
        recorded = RunFolder(run).results()["ensemble"]
        for split in ("train_dev", "test"):
            assert part[split]["n"] == recorded[split]["n"]
            assert part[split]["accuracy"] == pytest.approx(recorded[split]["accuracy"], abs=1e-12)
            assert part[split]["mean_margin"] == pytest.approx(recorded[split]["mean_margin"], abs=1e-6)


def test_the_file_loads_as_the_weighted_average_of_its_parts_and_reproduces_the_test_figures(combined: ModelEnsembleResult) -> None:
    document = json.loads((combined.path / ENSEMBLE).read_text())
    assert document["kind"] == "models" and document["format_version"] == MODELS_FORMAT_VERSION
    predictor = load(combined.path / ENSEMBLE)
    assert isinstance(predictor, ModelEnsemblePredictor) and len(predictor.parts) == 2
    with open(combined.path / PREDICTIONS, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    texts = [row["text"] for row in rows]
    probabilities = predictor.predict_proba(texts)
    parts = [part.predict_proba(texts) for part in predictor.parts]
    weights = np.asarray(combined.weights)
    np.testing.assert_allclose(probabilities, np.tensordot(weights / weights.sum(), np.stack(parts), axes=1))
    accuracy = float(np.mean([p == row["gold"] for p, row in zip(predictor.predict(texts), rows)]))
    assert accuracy == combined.test_accuracy
    np.testing.assert_allclose(probabilities[:, 1], [float(row["ensemble_p_positive"]) for row in rows], rtol=1e-5)
    columns = [part["column"] for part in combined.summary["parts"]]
    np.testing.assert_allclose(parts[1][:, 0], [float(row[f"{columns[1]}_p_negative"]) for row in rows], rtol=1e-5)


def test_the_command_gives_the_library_call_result(combined: ModelEnsembleResult, models: list[str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert main(["combine", *map(str, part_runs(combined, models)), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / RESULTS).read_text())
    assert again["ensemble"]["weights"] == list(combined.weights)
    assert again["ensemble"]["test"] == combined.summary["ensemble"]["test"]
    assert "ensemble of models" in capsys.readouterr().out


def test_resuming_finishes_each_search_again_without_new_trials(combined: ModelEnsembleResult, workspace: Path,
                                                                models: list[str]) -> None:
    before = {run: len((run / "trials.csv").read_text().splitlines()) for run in part_runs(combined, models)}
    again = run_search_models(workspace / "small.yaml", models, seed=13, out=combined.path, resume=True, batch_size=8, log=quiet)
    assert {run: len((run / "trials.csv").read_text().splitlines()) for run in part_runs(combined, models)} == before
    assert again.weights == combined.weights and again.test_accuracy == combined.test_accuracy
    with pytest.raises(UserError, match="other settings"):  # a finished search resumed with another seed is refused
        run_search_models(workspace / "small.yaml", models, seed=21, out=combined.path, resume=True, batch_size=8, log=quiet)


def test_a_finished_combination_is_not_overwritten_without_resume(combined: ModelEnsembleResult, workspace: Path,
                                                                  models: list[str]) -> None:
    before = (combined.path / RESULTS).read_bytes()
    with pytest.raises(UserError, match="already holds results.json"):
        run_search_models(workspace / "small.yaml", models, seed=13, out=combined.path, batch_size=8, log=quiet)
    with pytest.raises(UserError, match="already holds results.json"):
        combine_runs(part_runs(combined, models), combined.path, log=quiet)
    assert (combined.path / RESULTS).read_bytes() == before


def test_a_search_run_folder_is_never_the_output(combined: ModelEnsembleResult, workspace: Path, models: list[str]) -> None:
    run = part_runs(combined, models)[0]
    before = (run / ENSEMBLE).read_bytes()
    for replace in (False, True):
        with pytest.raises(UserError, match="holds a search run"):
            combine_runs(part_runs(combined, models), run, replace=replace, log=quiet)
    with pytest.raises(UserError, match="holds a search run"):
        run_search_models(workspace / "small.yaml", models, seed=13, out=run, resume=True, batch_size=8, log=quiet)
    assert (run / ENSEMBLE).read_bytes() == before


def test_a_space_built_in_python_with_data_in_memory_is_combined(workspace: Path, models: list[str], tmp_path: Path) -> None:
    with open(workspace / "tiny.csv", newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    space = {key: value for key, value in SPACE.items() if key != "dataset"} | {
        "dataset": {"name": "records", "text_fields": ["text"], "label_field": "label", "labels": ["negative", "positive"],
                    "test_fraction": 0.3}, "model": models[0]}
    result = run_search_models(space, models, seed=13, out=tmp_path / "python", data=records, batch_size=8, log=quiet)
    assert (tmp_path / "python" / RESULTS).is_file() and len(result.summary["parts"]) == 2


def test_models_whose_folders_would_clash_are_refused_before_any_search(workspace: Path, tiny_causal_lm: Path,
                                                                        tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / tiny_causal_lm.name
    shutil.copytree(tiny_causal_lm, copy)
    with pytest.raises(UserError, match="different folder names"):
        run_search_models(workspace / "small.yaml", [str(tiny_causal_lm), str(copy)], seed=13, out=tmp_path / "clash", log=quiet)
    assert not (tmp_path / "clash").exists()


def test_runs_on_another_sample_are_refused_before_anything_is_written(combined: ModelEnsembleResult, workspace: Path,
                                                                       models: list[str], tmp_path: Path) -> None:
    other = run_search(workspace / "small.yaml", seed=21, out=tmp_path / "seed21", model=models[1], batch_size=8, log=quiet)
    with pytest.raises(UserError, match="differ from those of"):
        combine_runs([part_runs(combined, models)[0], other.folder.path], tmp_path / "out", log=quiet)
    assert not (tmp_path / "out").exists()


def test_a_models_file_is_checked_part_by_part(combined: ModelEnsembleResult) -> None:
    document = json.loads((combined.path / ENSEMBLE).read_text())
    origin = "models.json"
    with pytest.raises(UserError, match=r"parts: an ensemble of models needs at least 2 parts, got 1"):
        parse_document({**document, "parts": document["parts"][:1]}, origin)
    negative = json.loads(json.dumps(document))
    negative["parts"][1]["weight"] = -1
    with pytest.raises(UserError, match=r"parts\[1\]\.weight: expected a non-negative number"):
        parse_document(negative, origin)
    nested = json.loads(json.dumps(document))
    nested["parts"][0]["ensemble"] = document
    with pytest.raises(UserError, match=r"parts\[0\]\.ensemble: kind: expected 'ensemble' or 'single', got 'models'"):
        parse_document(nested, origin)
    relabelled = json.loads(json.dumps(document))
    for member in relabelled["parts"][1]["ensemble"]["members"]:
        member["prompt"]["labels"] = ["negative", "neutral"]
        member["prompt"]["verbalizer"] = {"negative": ["bad"], "neutral": ["good"]}
        member.pop("word_token_ids", None)
    with pytest.raises(UserError, match=r"parts\[1\]: its labels \['negative', 'neutral'\] differ"):
        parse_document(relabelled, origin)


def test_each_part_is_checked_against_its_model_before_it_is_loaded(combined: ModelEnsembleResult, tmp_path: Path) -> None:
    document = json.loads((combined.path / ENSEMBLE).read_text())
    document["parts"][1]["ensemble"]["model"]["weights_sha256"] = "0" * 64
    changed = tmp_path / "models.json"
    changed.write_text(json.dumps(document))
    with pytest.raises(UserError, match=r"models\.json: parts\[1\]\.ensemble: .*weights_sha256"):
        load(changed)
    escaping = json.loads((combined.path / ENSEMBLE).read_text())
    escaping["parts"][0]["ensemble"]["model"].update(name="../outside", path="../outside")
    changed.write_text(json.dumps(escaping))
    with pytest.raises(UserError, match=r"parts\[0\]\.ensemble: model"):
        load(changed)


def test_a_models_file_names_its_own_models(combined: ModelEnsembleResult, models: list[str]) -> None:
    with pytest.raises(UserError, match="an ensemble of models loads each part's own model"):
        load(combined.path / ENSEMBLE, model=models[0])


def test_training_refuses_an_ensemble_of_models(combined: ModelEnsembleResult, models: list[str]) -> None:
    run = part_runs(combined, models)[0]
    shutil.copy(combined.path / ENSEMBLE, run / "models.json")  # inside a run folder, so that only its kind is wrong
    try:
        with pytest.raises(UserError, match="kind: expected 'single' or 'ensemble', got 'models'"):
            read_source(run / "models.json")
    finally:
        (run / "models.json").unlink()


# -- trained parts ----------------------------------------------------------------------------------
TRAIN_FAST = {"epochs": 1, "learning_rate": 1e-3, "batch_size": 4, "eval_batch_size": 8, "log": quiet}


@pytest.fixture(scope="module")
def trained_combination(combined: ModelEnsembleResult, models: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a causal model trained on all weights from its run, and a masked one with LoRA
    from its run's ensemble file."""
    folder = tmp_path_factory.mktemp("trained") / "combination"
    causal, masked = part_runs(combined, models)
    train(causal, "full", out=folder / "causal-full", **TRAIN_FAST)
    train(masked / ENSEMBLE, "lora", out=folder / "masked-lora", **TRAIN_FAST)
    return folder


def test_trained_models_and_a_frozen_run_combine_with_equal_weights(trained_combination: Path, combined: ModelEnsembleResult,
                                                                   models: list[str], tmp_path: Path) -> None:
    """Trained parts have learned train+dev, so the average is uniform; the file names their models
    relative to itself, so the folder moves as one piece and still reproduces the figures."""
    folder = trained_combination
    parts = [folder / "causal-full", folder / "masked-lora", part_runs(combined, models)[0]]
    result = combine_runs(parts, folder, log=quiet)
    assert result.weights == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert result.summary["ensemble"]["weights_fit"]["method"].startswith("uniform")
    dev_n = len(read_source(parts[2]).splits.dev)
    assert result.summary["scored_train_dev_rows"] == dev_n  # every train example was trained on
    assert [part["model"].get("trained", {}).get("method") for part in result.summary["parts"]] == ["full", "lora", None]
    rows = _predictions(folder)
    texts, gold = [row["text"] for row in rows], [row["gold"] for row in rows]
    for column, part in zip((p["column"] for p in result.summary["parts"]), parts[:2]):
        alone = load(part).predict_proba(texts)  # the train output as a user loads it
        np.testing.assert_allclose(alone[:, 1], [float(row[f"{column}_p_positive"]) for row in rows], rtol=1e-5)
    moved = tmp_path / "moved"
    shutil.move(str(folder), moved)
    try:
        document = json.loads((moved / ENSEMBLE).read_text())
        assert document["format_version"] == TRAINED_PARTS_FORMAT_VERSION
        assert document["parts"][0]["ensemble"]["model"]["path"] == "causal-full/model"
        assert document["weights_fit"]["trained_parts"] == ["causal-full", "masked-lora"]
        assert document["parts"][1]["ensemble"]["model"]["adapter"]["path"] == "masked-lora/adapter"
        predictor = load(moved / ENSEMBLE)
        assert isinstance(predictor, ModelEnsemblePredictor) and len(predictor.parts) == 3
        accuracy = float(np.mean([p == g for p, g in zip(predictor.predict(texts), gold)]))
        assert accuracy == result.test_accuracy
        np.testing.assert_allclose(predictor.predict_proba(texts)[:, 1], [float(row["ensemble_p_positive"]) for row in rows], rtol=1e-5)
    finally:
        shutil.move(str(moved), folder)
    arguments = ["combine", str(parts[0]), str(parts[1]), "--out", str(folder)]  # another choice of parts, over the first
    assert main(arguments) == EXIT_USER_ERROR and main([*arguments, "--replace"]) == 0
    assert len(json.loads((folder / RESULTS).read_text())["parts"]) == 2


def test_prompts_of_one_run_trained_with_member_combine_as_an_average(combined: ModelEnsembleResult, models: list[str],
                                                                      tmp_path: Path) -> None:
    """PET's recipe: several prompts of one run's ensemble trained (``member``) and averaged with equal weights."""
    run = part_runs(combined, models)[0]
    folder = tmp_path / "prompts"
    outputs = [train(run, "lora", member=number, out=folder / f"prompt{number}", **TRAIN_FAST).folder for number in (1, 2)]
    trained = [json.loads((output / "training.json").read_text())["source"] for output in outputs]
    assert (trained[0]["template"], trained[0]["verbalizer"]) != (trained[1]["template"], trained[1]["verbalizer"])
    result = combine_runs(outputs, folder, log=quiet)
    assert result.weights == pytest.approx((0.5, 0.5))
    rows = _predictions(folder)
    columns = [part["column"] for part in result.summary["parts"]]
    assert len(set(columns)) == 2
    average = np.mean([[float(row[f"{column}_p_positive"]) for row in rows] for column in columns], axis=0)
    np.testing.assert_allclose(average, [float(row["ensemble_p_positive"]) for row in rows], rtol=1e-5)


def test_runs_and_trained_parts_moved_together_still_combine(combined: ModelEnsembleResult, models: list[str],
                                                             tmp_path: Path) -> None:
    """A train output records where its source lies seen from itself too, so a tree holding both
    (copied to another folder or machine) combines where the absolute path no longer leads."""
    tree = tmp_path / "tree"
    run = tree / "runs" / "causal"
    shutil.copytree(part_runs(combined, models)[0], run)
    trained = train(run, "lora", out=tree / "both" / "lora", **TRAIN_FAST).folder
    assert json.loads((trained / "training.json").read_text())["source"]["path_from_output"] == "../../runs/causal"
    before = combine_runs([trained, run], tree / "both", log=quiet)
    moved = tmp_path / "moved"
    shutil.move(str(tree), moved)
    after = combine_runs([moved / "both" / "lora", moved / "runs" / "causal"], moved / "both", replace=True, log=quiet)
    assert after.test_accuracy == before.test_accuracy
    assert after.summary["parts"][0]["test"] == before.summary["parts"][0]["test"]
    record = json.loads((moved / "both" / "lora" / "training.json").read_text())
    record["options"]["source"]["path"] = str(part_runs(combined, models)[1])  # the other model's run, on the same sample
    (moved / "both" / "lora" / "training.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="is a run of another model"):
        combine_runs([moved / "both" / "lora", part_runs(combined, models)[1]], moved / "both", replace=True, log=quiet)
    record["options"]["source"]["path"] = str(tmp_path / "tree" / "runs" / "causal")
    (moved / "both" / "lora" / "training.json").write_text(json.dumps(record))
    shutil.rmtree(moved / "runs")
    with pytest.raises(UserError, match=r"is needed for its examples .*; nor is it at \.\./\.\./runs/causal seen from the train output"):
        combine_runs([moved / "both" / "lora", part_runs(combined, models)[1]], moved / "both", replace=True, log=quiet)


def test_a_trained_part_outside_the_output_folder_or_without_a_prompt_is_refused(trained_combination: Path,
                                                                                 combined: ModelEnsembleResult, models: list[str],
                                                                                 tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = part_runs(combined, models)[0]
    with pytest.raises(UserError, match="must lie inside the output folder"):
        combine_runs([trained_combination / "causal-full", run], tmp_path / "elsewhere", log=quiet)
    head = train(run, "head", out=trained_combination / "causal-head", **TRAIN_FAST)
    with pytest.raises(UserError, match="a classification-head model has no prompt"):
        combine_runs([head.folder, run], trained_combination, replace=True, log=quiet)
    shutil.copytree(trained_combination / "causal-full", trained_combination / "stripped", ignore=shutil.ignore_patterns("model"))
    try:
        with pytest.raises(UserError, match=r"model\.path: the trained weights' folder .* is missing"):
            combine_runs([trained_combination / "stripped", run], trained_combination, replace=True, log=quiet)
    finally:
        shutil.rmtree(trained_combination / "stripped")
    moved_run = tmp_path / "gone"
    shutil.move(str(run), moved_run)
    try:
        with pytest.raises(UserError, match="the run the model was trained from is needed"):
            combine_runs([trained_combination / "causal-full", part_runs(combined, models)[1]], trained_combination, replace=True,
                         log=quiet)
    finally:
        shutil.move(str(moved_run), run)
    assert main(["combine", str(trained_combination / "causal-full"), str(run), "--out", str(tmp_path / "cli")]) == EXIT_USER_ERROR
    assert "must lie inside the output folder" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "cli").exists()


def _predictions(folder: Path) -> list[dict[str, str]]:
    with open(folder / PREDICTIONS, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
