"""The run report: written by every search, rebuilt by ``autoprompt-search report``, readable in a browser."""

from __future__ import annotations

import base64
import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autoprompt_search.cli.main import main
from autoprompt_search.report import SECTIONS, leaderboard_rows, read_run
from autoprompt_search.run_folder import PREDICTIONS as PREDICTIONS_NAME
from autoprompt_search.run_folder import REPORT as REPORT_NAME
from autoprompt_search.testing import write_tiny_space


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_causal_lm) -> Path:
    folder = tmp_path_factory.mktemp("report")
    space = write_tiny_space(folder, tiny_causal_lm, trials=8)
    out = folder / "run"
    assert main(["search", str(space), "--out", str(out), "--batch-size", "8", "--no-cache"]) == 0
    return out


class _Page(HTMLParser):
    """Section ids, image sources and table cell texts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.cells: list[str] = []
        self.external: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("script", "link", "iframe", "object", "embed") or (tag == "img" and not attrs["src"].startswith("data:")):
            self.external.append(tag)
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data) -> None:
        if self._in_cell:
            self.cells[-1] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_every_search_writes_a_self_contained_report(run) -> None:
    page = _parse(run / REPORT_NAME)
    assert page.sections == list(SECTIONS)
    assert page.external == []  # nothing fetched: no script, no stylesheet link, no frame, no image file
    assert "url(" not in (run / REPORT_NAME).read_text()  # nor a stylesheet resource
    assert len(page.images) == 3  # history, ensemble weights, confusion matrices
    for source in page.images:
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    results = json.loads((run / "results.json").read_text())
    for name in ("best", "ensemble", "best_manual"):
        assert f"{results[name]['test']['accuracy']:.4f}" in page.cells


def test_the_leaderboard_follows_the_studys_ranking(run) -> None:
    import optuna

    from autoprompt_search.study import STUDY_NAME, leaderboard

    rows = leaderboard_rows(read_run(run).trials)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{run / 'study.db'}")
    assert [int(row["number"]) for row in rows] == [result.number for result in leaderboard(study)]
    results = json.loads((run / "results.json").read_text())
    assert int(rows[0]["number"]) == results["best"]["trial"]
    page = _parse(run / REPORT_NAME)
    first_row = page.cells[page.cells.index("trial") + 7:]  # the cells after the leaderboard's header
    assert first_row[:2] == ["1", rows[0]["number"]]


def test_ties_are_broken_by_the_prompt_as_in_the_search_not_by_file_order() -> None:
    row = {"state": "COMPLETE", "value": "0.75", "mean_margin": "0.5", "template": "{text} It was {mask}",
           "verbalizer": json.dumps({"negative": ["bad"], "positive": ["good"]}), "repeat_of": ""}
    rows = [{**row, "number": "0", "calibration": "none"}, {**row, "number": "1", "calibration": "contextual"},
            {**row, "number": "2", "calibration": "prior", "mean_margin": "0.6"}, {**row, "number": "3", "state": "PRUNED", "value": ""},
            {**row, "number": "4", "calibration": "prior", "repeat_of": "2"}]
    assert [r["number"] for r in leaderboard_rows(rows)] == ["2", "1", "0"]


def test_test_predictions_reproduce_the_reported_accuracies(run) -> None:
    results = json.loads((run / "results.json").read_text())
    with (run / PREDICTIONS_NAME).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == results["best"]["test"]["n"]
    for side in ("best", "ensemble"):
        accuracy = sum(row["gold"] == row[side] for row in rows) / len(rows)
        assert accuracy == pytest.approx(results[side]["test"]["accuracy"], abs=1e-12)
        labels = [column[len(side) + 3:] for column in rows[0] if column.startswith(f"{side}_p_")]
        assert all(row["text"] for row in rows)  # each prediction carries its example's text
        for row in rows:
            probabilities = [float(row[f"{side}_p_{label}"]) for label in labels]
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
            assert labels[max(range(len(labels)), key=probabilities.__getitem__)] == row[side]


def test_the_report_command_rebuilds_the_same_page(run, tmp_path, capsys) -> None:
    again = tmp_path / "again.html"
    assert main(["report", str(run), "--out", str(again)]) == 0
    assert again.read_bytes() == (run / REPORT_NAME).read_bytes()
    assert str(again) in capsys.readouterr().out


def test_an_older_run_without_predictions_still_gets_a_report(run, tmp_path) -> None:
    older = tmp_path / "older"
    older.mkdir()
    for name in ("results.json", "manifest.json", "trials.csv"):
        (older / name).write_bytes((run / name).read_bytes())
    assert main(["report", str(older)]) == 0
    page = (older / REPORT_NAME).read_text()
    assert "no confusion matrix" in page and len(_parse(older / REPORT_NAME).images) == 2


def _copy_run(run: Path, folder: Path) -> Path:
    folder.mkdir()
    for name in ("results.json", "manifest.json", "trials.csv", PREDICTIONS_NAME):
        (folder / name).write_bytes((run / name).read_bytes())
    return folder


def test_text_from_the_run_is_escaped_in_the_page_and_in_the_plots(run, tmp_path) -> None:
    """Templates and trigger tokens can hold anything: HTML must not run, and $...$ is no maths."""
    folder = _copy_run(run, tmp_path / "odd")
    nasty = "<script>alert(1)</script> $x}{$ & {text} {mask}"
    for name in ("results.json", "trials.csv"):
        text = (folder / name).read_text()
        template = json.loads((run / "results.json").read_text())["best"]["template"]
        (folder / name).write_text(text.replace(json.dumps(template)[1:-1] if name == "results.json" else template, nasty))
    assert main(["report", str(folder)]) == 0
    page = (folder / REPORT_NAME).read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; $x}{$ &amp;" in page


@pytest.mark.parametrize("damage, message", [
    (lambda folder: None, "no such run folder"),
    (lambda folder: folder.mkdir(), "not a finished search run (results.json, manifest.json, trials.csv missing)"),
    (lambda folder: (folder / "results.json").write_text("[1, 2]"), "results.json: expected a JSON object, found list"),
    (lambda folder: (folder / "results.json").write_text("{\"best\": "), "results.json: not valid JSON ("),
    (lambda folder: (folder / "results.json").write_text("{}"), "results.json: no 'best' entry"),
    (lambda folder: (folder / "manifest.json").write_text('{"status": "running"}'), "the run is not finished (status 'running')"),
    (lambda folder: (folder / "trials.csv").write_text("number,state\n0,COMPLETE\n"), "trials.csv: missing column(s) value"),
    (lambda folder: (folder / PREDICTIONS_NAME).write_text("gold,best\n"), f"{PREDICTIONS_NAME}: missing column(s) ensemble"),
    (lambda folder: (folder / "trials.csv").write_bytes(b"\xff\xfe\x00"), "trials.csv: not UTF-8 text"),
])
def test_a_damaged_or_unfinished_run_is_one_clear_error(run, tmp_path, capsys, damage, message) -> None:
    folder = tmp_path / "damaged"
    if "no such" not in message and "missing)" not in message:
        _copy_run(run, folder)
    damage(folder)
    assert main(["report", str(folder)]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error and error.count("\n") == 1
    assert not (folder / REPORT_NAME).exists()


def test_out_must_be_a_file(run, tmp_path, capsys) -> None:
    assert main(["report", str(run), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_the_report_shows_all_its_parts_in_headless_chromium(run, browser_view) -> None:
    shown = browser_view(run / REPORT_NAME)
    assert shown["sections"] == list(SECTIONS)
    assert len(shown["images"]) == 3
    assert all(image["complete"] and image["width"] > 300 and image["shown"] for image in shown["images"]), shown["images"]
    assert shown["tables"] >= 4 and re.search(r"seed \d+", shown["title"])
