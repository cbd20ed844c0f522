"""``RunFolder``: starting a run folder, reading its JSON, telling a finished run, and deriving
its data splits again with the recorded hashes checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoprompt_search.errors import UserError
from autoprompt_search.pipeline import SearchResult, run_search
from autoprompt_search.run_folder import MANIFEST, RESULTS, TRIALS, RunFolder
from autoprompt_search.testing import write_tiny_dataset

SMALL_SPACE = """\
name: small
dataset: {{path: tiny.csv, text_fields: [text], label_field: label, labels: [negative, positive], test_fraction: 0.3}}
model: {model}
few_shot: {{k: 4, seeds: [13]}}
templates: {{seeds: ["{{text}} It was {{mask}}"]}}
verbalizers: {{seeds: [{{negative: [bad], positive: [good]}}]}}
generators: {{label_words: {{enabled: false}}}}
calibration: [none]
budget: {{trials: 1}}
pruner: {{type: none, chunks: 1}}
ensemble: {{size: 1}}
"""


# -- start ---------------------------------------------------------------------------------------


def test_start_creates_a_missing_folder_and_accepts_an_empty_one(tmp_path: Path) -> None:
    nested = RunFolder(tmp_path / "a" / "b")
    nested.start(resume=False)
    assert nested.path.is_dir() and not nested.is_started()
    nested.start(resume=False)  # still empty: a fresh start is fine


def test_start_refuses_a_folder_holding_a_run_unless_resumed(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.start(resume=False)
    (folder.path / MANIFEST).write_text("{}")
    with pytest.raises(UserError, match="not empty") as raised:
        folder.start(resume=False)
    assert raised.value.alternatives == ("resume", "out") and str(folder.path) in str(raised.value)
    folder.start(resume=True)
    assert (folder.path / MANIFEST).read_text() == "{}"  # resuming keeps what is there


@pytest.mark.parametrize("resume", [False, True])
def test_start_refuses_a_path_that_is_a_file(tmp_path: Path, resume: bool) -> None:
    file = tmp_path / "run"
    file.write_text("not a folder")
    with pytest.raises(UserError, match="not a folder") as raised:
        RunFolder(file).start(resume=resume)
    assert raised.value.option == "out"
    assert file.read_text() == "not a folder"


def test_start_refuses_a_folder_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="file is a file, not a folder") as raised:
        RunFolder(tmp_path / "file" / "run").start(resume=False)
    assert raised.value.option == "out"


def test_a_folder_nothing_can_be_written_in_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot write in /proc") as raised:
        RunFolder("/proc/no-such-run").check_startable(resume=False)
    assert raised.value.option == "out"


# -- read_json ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "words"), [
    (b'{"status": "complete",', "not valid JSON"),
    (b"[1, 2, 3]", "expected a JSON object, found list"),
    (b'"complete"', "expected a JSON object, found str"),
    (b"\xff\xfe{}", "not UTF-8"),
], ids=["truncated", "list", "string", "binary"])
def test_read_json_names_the_file_of_a_bad_document(tmp_path: Path, content: bytes, words: str) -> None:
    folder = RunFolder(tmp_path)
    (tmp_path / RESULTS).write_bytes(content)
    with pytest.raises(UserError) as raised:
        folder.read_json(RESULTS)
    assert words in str(raised.value) and str(tmp_path / RESULTS) in str(raised.value)


def test_read_json_of_a_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        RunFolder(tmp_path).read_json(MANIFEST)


def test_read_json_returns_the_object(tmp_path: Path) -> None:
    (tmp_path / RESULTS).write_text(json.dumps({"best": {"trial": 3}}))
    assert RunFolder(tmp_path).read_json(RESULTS) == {"best": {"trial": 3}}


# -- check_finished -----------------------------------------------------------------------------


def _finished(folder: Path, status: str = "complete") -> RunFolder:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps({"status": status}))
    (folder / RESULTS).write_text("{}")
    (folder / TRIALS).write_text("number\n")
    return RunFolder(folder)


def test_check_finished_accepts_a_complete_run(tmp_path: Path) -> None:
    run = _finished(tmp_path / "run")
    run.check_finished()
    assert run.is_complete()


def test_check_finished_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such run folder"):
        RunFolder(tmp_path / "nowhere").check_finished()


def test_check_finished_names_the_missing_files(tmp_path: Path) -> None:
    run = _finished(tmp_path / "run")
    (run.path / TRIALS).unlink()
    (run.path / RESULTS).unlink()
    with pytest.raises(UserError, match="not a finished search run") as raised:
        run.check_finished()
    assert RESULTS in str(raised.value) and TRIALS in str(raised.value) and MANIFEST not in str(raised.value)


@pytest.mark.parametrize("status", ["running", "interrupted"])
def test_check_finished_refuses_an_unfinished_run(tmp_path: Path, status: str) -> None:
    run = _finished(tmp_path / "run", status)
    with pytest.raises(UserError, match=repr(status)):
        run.check_finished()
    assert not run.is_complete()


def test_check_finished_reports_a_damaged_manifest_as_a_user_error(tmp_path: Path) -> None:
    run = _finished(tmp_path / "run")
    (run.path / MANIFEST).write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        run.check_finished()


# -- splits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("space, message", [
    ({"source": None}, "space.dataset: not a record of the run's data"),
    ({"source": None, "dataset": "mr"}, "space.dataset: not a record of the run's data"),
    ({"source": None, "dataset": {"name": "mr"}}, r"space: the run's data cannot be read from its record .*pass the run's space"),
    ({"source": None, "dataset": {"name": "nope", "text_fields": ["text"], "label_field": "label"}}, "cannot be read from its record"),
    ({"source": None, "dataset": {"name": "mr", "text_fields": ["text"], "label_field": "label"}, "unlabelled": ["x"]},
     "cannot be read from its record"),
])
def test_splits_without_a_readable_record_or_space_file_are_a_user_error(tmp_path: Path, space: dict, message: str) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"seed": 13, "space": space, "dataset": {"k": 4, "splits": {}, "test_limit": None}}))
    with pytest.raises(UserError, match=message):
        RunFolder(tmp_path).splits()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_causal_lm: Path) -> Iterator[SearchResult]:
    """One finished run of a one-prompt space on the tiny model."""
    folder = tmp_path_factory.mktemp("run_folder")
    write_tiny_dataset(folder / "tiny.csv", copies=2)
    (folder / "small.yaml").write_text(SMALL_SPACE.format(model=tiny_causal_lm), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOPROMPT_SEARCH_CACHE", str(folder / "cache"))
        yield run_search(folder / "small.yaml", seed=13, out=folder / "run", batch_size=8, log=lambda message: None)


def test_splits_are_derived_again_with_the_recorded_hashes(tiny_run: SearchResult) -> None:
    folder = RunFolder(tiny_run.folder.path)
    folder.check_finished()
    splits = folder.splits()
    assert splits.describe() == tiny_run.splits.describe()
    assert splits.describe()["splits"] == folder.manifest()["dataset"]["splits"]


def test_splits_of_a_space_built_in_python_come_from_the_manifest(tiny_run: SearchResult, tmp_path: Path) -> None:
    """A run whose space has no file (``search --dataset FILE``, a mapping) is read back from the data
    its manifest records: train, combine and resume need nothing else. Examples that were given in
    memory are still asked for, and other examples are caught."""
    import csv

    manifest = json.loads((tiny_run.folder.path / MANIFEST).read_text())
    (tmp_path / "python").mkdir()
    (tmp_path / "python" / MANIFEST).write_text(json.dumps({**manifest, "space": {**manifest["space"], "source": None}}))
    assert RunFolder(tmp_path / "python").splits().describe() == tiny_run.splits.describe()

    with open(tiny_run.space.dataset.path, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    in_memory = {**manifest["space"], "source": None, "dataset": {**manifest["space"]["dataset"], "path": None, "in_memory": True}}
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / MANIFEST).write_text(json.dumps({**manifest, "space": in_memory}))
    with pytest.raises(UserError, match="given in memory: pass them again"):
        RunFolder(tmp_path / "memory").splits()
    assert RunFolder(tmp_path / "memory").splits(records=records).describe()["splits"] == tiny_run.splits.describe()["splits"]
    with pytest.raises(UserError, match="differs"):
        RunFolder(tmp_path / "memory").splits(records=records[1:])


def test_splits_detect_changed_data(tiny_run: SearchResult) -> None:
    folder = RunFolder(tiny_run.folder.path)
    data = Path(tiny_run.space.dataset.path)
    original = data.read_text(encoding="utf-8")
    test_text = tiny_run.splits.test.examples[0].fields["text"]  # its row may move to another split: any change must show
    try:
        data.write_text(original.replace(test_text, test_text + " Changed.", 1), encoding="utf-8")
        with pytest.raises(UserError, match="split of the data differs from the one the run recorded") as raised:
            folder.splits()
        assert str(folder.path) in str(raised.value)
    finally:
        data.write_text(original, encoding="utf-8")
    folder.splits()  # the data as recorded again


def test_unlabelled_texts_are_checked_like_the_splits(tiny_run: SearchResult) -> None:
    """A run that drew unlabelled texts is read back only with the same texts; one that drew none, with none."""
    import dataclasses

    without = tiny_run.splits
    assert without.unlabelled is None and "unlabelled" not in without.describe()["splits"]
    drawn = dataclasses.replace(without, unlabelled=without.train)
    drawn.check(drawn.describe(), "run")
    for splits, recorded in ((drawn, without.describe()), (without, drawn.describe()),
                             (dataclasses.replace(without, unlabelled=without.dev), drawn.describe())):
        with pytest.raises(UserError, match="run: the unlabelled split of the data differs"):
            splits.check(recorded, "run")


def test_splits_of_data_given_in_memory(tiny_run: SearchResult) -> None:
    """The run's data, given as records, derive the same splits; other records are caught."""
    import csv

    folder = RunFolder(tiny_run.folder.path)
    with open(tiny_run.space.dataset.path, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    assert folder.splits(records=records).describe() == tiny_run.splits.describe()
    flipped = [{**record, "label": "negative" if record["label"] == "positive" else "positive"} for record in records]
    with pytest.raises(UserError, match="differs"):
        folder.splits(records=flipped)
