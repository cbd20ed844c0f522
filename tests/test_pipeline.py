"""The library entry point ``run_search`` on a tiny model: the space as a path, a loaded
:class:`SearchSpace` or a mapping, the data in memory, reproducibility, and user mistakes."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from autoprompt_search.errors import UserError
from autoprompt_search.pipeline import SearchResult, run_search
from autoprompt_search.ranking import ranking_key
from autoprompt_search.run_folder import MANIFEST, TRIALS
from autoprompt_search.spaces import SearchSpace, load_space
from autoprompt_search.templates import Template
from autoprompt_search.testing import TINY_CORPUS, write_tiny_dataset

# A small space: 2 seed templates x 2 verbalizers = 4 manual baselines, then 3 sampled trials; no
# generator, so that a run takes seconds.
SMALL_SPACE = """\
name: small
dataset: {{path: {data}, text_fields: [text], label_field: label, labels: [negative, positive], test_fraction: 0.3}}
model: {model}
few_shot: {{k: 4, seeds: [13, 21]}}
templates: {{seeds: ["{{text}} It was {{mask}}", "{{text}} Overall it was {{mask}}"]}}
verbalizers: {{seeds: [{{negative: [bad], positive: [good]}}, {{negative: [terrible], positive: [great]}}]}}
generators: {{label_words: {{enabled: false}}}}
calibration: [none]
budget: {{trials: 3}}
pruner: {{type: none, chunks: 1}}
ensemble: {{size: 2}}
"""
LABELS = ("negative", "positive")


def quiet(message: str) -> None:
    """A log that drops the messages."""


def source(template: Template | str) -> str:
    """A template's text (leaderboard rows hold parsed templates)."""
    return template if isinstance(template, str) else template.source


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_causal_lm: Path) -> Iterator[Path]:
    """A folder with the tiny data and the small space, and an empty slot cache for this module."""
    folder = tmp_path_factory.mktemp("pipeline")
    write_tiny_dataset(folder / "tiny.csv", copies=2)
    (folder / "small.yaml").write_text(SMALL_SPACE.format(data="tiny.csv", model=tiny_causal_lm), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOPROMPT_SEARCH_CACHE", str(folder / "cache"))
        yield folder


@pytest.fixture(scope="module")
def space_file(workspace: Path) -> Path:
    return workspace / "small.yaml"


@pytest.fixture(scope="module")
def path_run(workspace: Path, space_file: Path) -> SearchResult:
    """The reference run: the space given as a path, seed 13."""
    return run_search(space_file, seed=13, out=workspace / "runs" / "path", batch_size=8, log=quiet)


def trial_rows(folder: Path) -> list[dict[str, str]]:
    """trials.csv without its timing column."""
    with open(folder / TRIALS, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and "seconds" in rows[0]
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# -- a finished run ------------------------------------------------------------------------------


def test_the_leaderboard_is_sorted_by_the_ranking_key_and_best_is_its_first(path_run: SearchResult) -> None:
    board = path_run.leaderboard
    keys = [ranking_key(r.objective, r.mean_margin, source(r.template), r.verbalizer, r.calibration.method) for r in board]
    assert len(board) >= 2 and keys == sorted(keys)
    assert path_run.best["template"] == source(board[0].template) and path_run.best["trial"] == board[0].number
    assert path_run.best["verbalizer"] == board[0].verbalizer
    manual = next(r for r in board if r.manual)
    assert path_run.best_manual is not None and path_run.best_manual["trial"] == manual.number
    completed = [row for row in trial_rows(path_run.folder.path) if row["state"] == "COMPLETE" and not row["repeat_of"]]
    assert sorted(int(row["number"]) for row in completed) == sorted(r.number for r in board)


def test_the_run_folder_holds_every_output(path_run: SearchResult, workspace: Path) -> None:
    assert path_run.folder.path == workspace / "runs" / "path"
    assert set(path_run.paths) == {"best", "ensemble", "results", "trials", "predictions", "manifest", "report", "pools"}
    for name, path in path_run.paths.items():
        assert path.parent == path_run.folder.path and path.is_file() and path.stat().st_size > 0, name
    assert (path_run.folder.path / "study.db").is_file()
    manifest = json.loads(path_run.paths["manifest"].read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 13
    assert manifest["dataset"]["splits"] == path_run.splits.describe()["splits"]
    results = json.loads(path_run.paths["results"].read_text())
    assert results["best"] == path_run.best and results["ensemble"] == path_run.ensemble
    counted = [row for row in trial_rows(path_run.folder.path) if not row["repeat_of"]]  # a repeated prompt is not re-scored
    assert len(counted) == 4 + 3  # the manual baselines, then the budget
    assert sum(row["manual"] == "True" for row in counted) == 4


def test_the_same_seed_gives_the_same_trials(path_run: SearchResult, workspace: Path, space_file: Path) -> None:
    again = run_search(space_file, seed=13, out=workspace / "runs" / "again", batch_size=8, cache=False, log=quiet)
    assert trial_rows(again.folder.path) == trial_rows(path_run.folder.path)
    assert again.best == path_run.best


def test_numpy_numbers_search_as_python_numbers_do(path_run: SearchResult, workspace: Path, space_file: Path) -> None:
    """A seed or size from a numpy array (a sweep over ``np.arange``) is taken, and recorded as plain JSON."""
    result = run_search(space_file, seed=np.int64(13), out=workspace / "runs" / "numpy", batch_size=np.int32(8),
                        trials=np.int64(3), timeout=np.float32(600), log=quiet)
    assert trial_rows(result.folder.path) == trial_rows(path_run.folder.path)
    assert json.loads((result.folder.path / MANIFEST).read_text())["seed"] == 13


def test_a_loaded_space_searches_as_its_file_does(path_run: SearchResult, workspace: Path, space_file: Path) -> None:
    space = load_space(space_file)
    assert isinstance(space, SearchSpace)
    result = run_search(space, seed=13, out=workspace / "runs" / "loaded", batch_size=8, log=quiet)
    assert result.space == space
    assert trial_rows(result.folder.path) == trial_rows(path_run.folder.path)


def test_a_mapping_searches_as_the_file_does(path_run: SearchResult, workspace: Path, space_file: Path) -> None:
    mapping: dict[str, Any] = yaml.safe_load(space_file.read_text())
    mapping["dataset"]["path"] = str(workspace / "tiny.csv")  # relative paths would be to the working folder
    result = run_search(mapping, seed=13, out=workspace / "runs" / "mapping", batch_size=8, log=quiet)
    assert result.space.source is None and result.space.name == "small"
    assert trial_rows(result.folder.path) == trial_rows(path_run.folder.path)
    assert json.loads((result.folder.path / MANIFEST).read_text())["space"]["source"] is None


def test_data_given_in_memory_replace_the_space_file(workspace: Path, space_file: Path) -> None:
    records = [{"text": f"{sentence} (in memory {copy})", "label": LABELS[1 - index % 2]}
               for copy in range(2) for index, sentence in enumerate(TINY_CORPUS)]
    result = run_search(space_file, seed=13, out=workspace / "runs" / "records", data=records, batch_size=8, log=quiet)
    texts = {record["text"] for record in records}
    for split in (result.splits.train, result.splits.dev, result.splits.test):
        assert split.examples and all(example.fields["text"] in texts for example in split.examples)
    assert len(result.splits.train) == len(result.splits.dev) == 4 * len(LABELS)
    manifest = json.loads((result.folder.path / MANIFEST).read_text())
    assert manifest["dataset"]["splits"] == result.splits.describe()["splits"]
    assert result.leaderboard and result.paths["best"].is_file()
    # The run reads back only with its examples given again; other examples are caught by the hashes.
    with pytest.raises(UserError, match="given in memory"):
        result.folder.splits()
    assert result.folder.splits(records=records).describe() == result.splits.describe()
    with pytest.raises(UserError, match="differs"):
        result.folder.splits(records=[{**record, "text": record["text"] + "!"} for record in records])


# -- user mistakes ----------------------------------------------------------------------------------


def _with(space: Path, **changes: Any) -> dict[str, Any]:
    """The space file as a mapping (its data path made absolute), with ``changes``."""
    mapping = yaml.safe_load(space.read_text())
    mapping["dataset"]["path"] = str(space.parent / mapping["dataset"]["path"])
    return {**mapping, **changes}


def _no_label(index: int) -> dict[str, str]:
    return {"text": f"a sentence {index}"}


@pytest.mark.parametrize(("call", "words"), [
    (lambda space, out: run_search(space, seed=13, out=out, data=[_no_label(i) for i in range(40)], log=quiet), "label"),
    (lambda space, out: run_search(space, seed=13, out=out, trials=0, log=quiet), "trials"),
    (lambda space, out: run_search({**yaml.safe_load(space.read_text()), "budgett": {"trials": 1}}, seed=13, out=out, log=quiet),
     "budgett"),
    (lambda space, out: run_search(space, seed=13, out=out, batch_size=0, log=quiet), "batch_size must be"),
    (lambda space, out: run_search(space, seed=-1, out=out, log=quiet), "seed must be"),
    (lambda space, out: run_search(space, seed=13, out=out, max_length=0, log=quiet), "max_length must be"),
    (lambda space, out: run_search(space, seed=13, out=out, timeout=0, log=quiet), "timeout must be"),
    (lambda space, out: run_search(space, seed=13, out=out, test_limit=0, log=quiet), "test_limit must be"),
    # Found only once the model is loaded: a trigger init word that is two tokens for its tokenizer.
    (lambda space, out: run_search(_with(space, generators={"label_words": {"enabled": False},
                                                            "triggers": {"enabled": True, "init": "bad good"}}),
                                   seed=13, out=out, log=quiet), "generators.triggers.init"),
    (lambda space, out: run_search(space, seed=13, out=out, storage="postgresql+nodriver://nowhere/db", log=quiet), "cannot open"),
], ids=["record-without-label", "zero-trials", "unknown-key", "batch-size", "seed", "max-length", "timeout", "test-limit",
        "two-token-trigger-init", "bad-storage"])
def test_a_user_mistake_raises_user_error_and_leaves_no_run_folder(space_file: Path, tmp_path: Path, call, words: str) -> None:
    out = tmp_path / "runs" / "mistake"
    with pytest.raises(UserError, match=words):
        call(space_file, out)
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_resuming_with_another_seed_is_refused_and_changes_nothing(path_run: SearchResult, space_file: Path,
                                                                   tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(path_run.folder.path, folder)
    before = snapshot(folder)
    with pytest.raises(UserError, match="seed") as raised:
        run_search(space_file, seed=21, out=folder, resume=True, batch_size=8, log=quiet)
    assert raised.value.option == "resume"
    after = snapshot(folder)
    assert after[MANIFEST] == before[MANIFEST]
    assert after == before, f"changed: {sorted(name for name in after if after[name] != before.get(name))}"
