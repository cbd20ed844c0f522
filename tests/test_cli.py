"""The command line: evaluate end to end on a tiny model, and user errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autoprompt_search.cli.main import main
from autoprompt_search.testing import write_tiny_dataset

VERBALIZER = '{"negative": ["bad"], "positive": ["good"]}'


@pytest.fixture
def dataset(tmp_path):
    return write_tiny_dataset(tmp_path / "reviews.csv")


def _evaluate(dataset, model, *extra: str) -> list[str]:
    return ["evaluate", "--dataset", str(dataset), "--model", str(model), "--no-cache", "--split", "all", *extra]


def test_evaluate_prints_one_json_object_and_writes_it_atomically(dataset, tiny_causal_lm, tmp_path, capsys) -> None:
    out = tmp_path / "report.json"
    code = main(_evaluate(dataset, tiny_causal_lm, "--template", "{text} It was {mask}", "--verbalizer", VERBALIZER,
                          "--calibrate", "prior", "--json", "--out", str(out)))
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["n"] == 40 and 0 <= report["accuracy"] <= 1 and 0 <= report["macro_f1"] <= 1
    assert report["calibration"]["method"] == "prior" and len(report["calibration"]["bias"]) == 2
    assert report["dataset"]["content_hash"] and report["model"]["weights_sha256"]
    assert json.loads(out.read_text()) == report
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_evaluate_limit_and_masked_and_seq2seq_models(dataset, tiny_masked_lm, tiny_seq2seq, capsys) -> None:
    for model in (tiny_masked_lm, tiny_seq2seq):
        assert main(_evaluate(dataset, model, "--template", "{text} It was {mask}.", "--verbalizer", VERBALIZER,
                              "--limit", "10", "--json")) == 0
        assert json.loads(capsys.readouterr().out)["n"] == 10


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--template", "{text} It was great.", "--verbalizer", VERBALIZER], "no label slot {mask}"),
        (["--template", "{review} It was {mask}", "--verbalizer", VERBALIZER], "unknown field {review}"),
        (["--template", "{text} It was {mask}", "--verbalizer", '{"negative": ["bad"], "happy": ["good"]}'], "unknown label 'happy'"),
        (["--template", "{text} It was {mask}", "--verbalizer", VERBALIZER, "--label-field", "sentiment"], "sentiment"),
        (["--template", "{text} It was {mask}.", "--verbalizer", VERBALIZER], "must be last"),
        (["--template", "{text} It was {mask}", "--verbalizer", VERBALIZER, "--limit", "0"], "--limit"),
        (["--template", "{text} It was {mask}", "--verbalizer", VERBALIZER, "--max-length", "0"], "--max-length must be at least 16"),
        (["--template", "{text} It was {mask}", "--verbalizer", VERBALIZER, "--max-length", "-5"], "--max-length must be at least 16"),
    ],
)
def test_user_errors_exit_2_with_one_clear_message(dataset, tiny_causal_lm, capsys, arguments, message) -> None:
    assert main(_evaluate(dataset, tiny_causal_lm, *arguments)) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert error.startswith("autoprompt-search: error:")


def test_a_model_folder_that_is_not_a_model(dataset, tmp_path, capsys) -> None:
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    assert main(_evaluate(dataset, folder, "--template", "{text} {mask}", "--verbalizer", VERBALIZER)) == 2
    assert str(folder) in capsys.readouterr().err


def test_missing_data_file_and_bad_space(tmp_path, capsys) -> None:
    assert main(["evaluate", "--dataset", str(tmp_path / "nope.csv"), "--template", "{text} {mask}", "--verbalizer", VERBALIZER]) == 2
    assert "nope.csv" in capsys.readouterr().err
    bad = tmp_path / "space.yaml"
    bad.write_text(
        "dataset: mr\ntemplates: {seeds: ['{text} It was {mask}']}\nverbalizers: {seeds: [{negative: bad, positive: good}]}\nbudget: {trials: 0}\n"  # noqa: E501
    )
    assert main(["search", str(bad)]) == 2
    assert "budget.trials" in capsys.readouterr().err
    assert main(["validate", str(bad)]) == 2


def test_console_script_runs_without_traceback_on_error(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoprompt_search.cli.main",
            "evaluate",
            "--dataset",
            str(tmp_path / "x.csv"),
            "--template",
            "{text} {mask}",
            "--verbalizer",
            VERBALIZER,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "x.csv" in result.stderr


@pytest.mark.parametrize("out", ["/proc/no-such-folder/report.json", "{folder}"])
def test_evaluate_refuses_an_unwritable_out_before_scoring(dataset, tiny_causal_lm, tmp_path, capsys, out) -> None:
    target = out.format(folder=tmp_path)
    code = main(_evaluate(dataset, tiny_causal_lm, "--template", "{text} It was {mask}", "--verbalizer", VERBALIZER, "--out", target))
    captured = capsys.readouterr()
    assert code == 2 and f"--out {target}" in captured.err and "Traceback" not in captured.err
    assert captured.out == ""  # refused before anything was scored or printed


def test_validate_reads_the_data(tmp_path, tiny_causal_lm, capsys) -> None:
    """validate draws the few-shot splits as a search would: sizes when they can be drawn, the search's
    own error for an empty file."""
    from autoprompt_search.testing import write_tiny_space

    space = write_tiny_space(tmp_path, tiny_causal_lm)
    assert main(["validate", str(space)]) == 0
    assert "data: 8 train + 8 dev (seed 13), 25 test examples" in capsys.readouterr().out
    (tmp_path / "tiny.csv").write_text("label,text\n", encoding="utf-8")
    assert main(["validate", str(space)]) == 2
    error = capsys.readouterr().err
    assert "tiny.csv" in error and "Traceback" not in error
