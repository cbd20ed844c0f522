"""The generic starting space (``init``, ``search --dataset``): built from the data's labels and
fields alone, valid as written, and every user mistake one clear error with nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from autoprompt_search.cli.main import main
from autoprompt_search.errors import UserError
from autoprompt_search.spaces import load_space, space_from_mapping
from autoprompt_search.starter import label_word, options_ending, seed_verbalizer, space_for_data
from autoprompt_search.testing import write_tiny_dataset


@pytest.mark.parametrize("label, word", [("negative", "negative"), ("Positive", "positive"), ("very_negative", "very negative"),
                                         ("SciTech", "sci tech"), ("pos-label2", "pos label"), ("0", None), ("__", None)])
def test_a_label_name_reads_as_lower_case_words(label, word) -> None:
    assert label_word(label) == word


def test_the_options_ending_lists_every_label_word() -> None:
    assert options_ending(["negative", "positive"]) == "Negative or positive? {mask}"
    assert options_ending(["sport", "tech", "politics"]) == "Sport, tech or politics? {mask}"


@pytest.mark.parametrize("labels, named", [(["0", "1"], "'0', '1'"), (["Pos", "pos", "neg"], "'Pos', 'pos'")])
def test_labels_that_give_no_distinct_words_are_refused_by_name(labels, named) -> None:
    with pytest.raises(UserError, match=f"data.csv: labels {named} "):
        seed_verbalizer(labels, "data.csv")


def _write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_space_of_a_file_holds_its_labels_fields_and_nothing_hand_written(tmp_path) -> None:
    data = write_tiny_dataset(tmp_path / "reviews.csv", copies=2)
    raw = space_for_data(str(data))
    space = space_from_mapping(raw)
    assert space.name == "reviews" and space.dataset.path == data.absolute()
    assert [v.to_dict() for v in space.verbalizers.seeds] == [{"negative": ["negative"], "positive": ["positive"]}]
    sources = [t.source for t in space.templates.seeds]
    assert "{text}\nNegative or positive? {mask}" in sources and all("review" not in s.lower() for s in sources)
    assert "Negative or positive? {mask}" in space.templates.blocks.endings
    assert space.generators.label_words.enabled  # words from the model's own distribution join the label names


def test_demonstrations_are_shown_only_where_the_texts_leave_room_for_them(tmp_path) -> None:
    short = space_from_mapping(space_for_data(str(write_tiny_dataset(tmp_path / "short.csv", copies=2))))
    rows = [{"text": " ".join(["word"] * 60) + f" {i}", "label": "sport" if i % 2 else "tech"} for i in range(80)]
    long = space_from_mapping(space_for_data(str(_write(tmp_path / "long.csv", rows))))  # 61 words x (2 labels + 1) > 150
    assert short.generators.demonstrations.enabled and not long.generators.demonstrations.enabled


def test_a_file_name_without_ascii_letters_still_names_the_space(tmp_path) -> None:
    data = write_tiny_dataset(tmp_path / "отзывы.csv", copies=2)
    assert space_from_mapping(space_for_data(str(data))).name == "data"


def test_several_text_fields_all_go_into_every_template(tmp_path) -> None:
    rows = [{"premise": f"premise {i}", "hypothesis": f"claim {i}", "gold": "entailment" if i % 2 else "contradiction"}
            for i in range(80)]
    data = _write(tmp_path / "pairs.csv", rows)
    space = space_from_mapping(space_for_data(str(data), text_fields=["premise", "hypothesis"], label_field="gold"))
    assert all("{premise} {hypothesis}" in t.source for t in space.templates.seeds)
    assert space.verbalizers.seeds[0].to_dict() == {"contradiction": ["contradiction"], "entailment": ["entailment"]}


def test_init_writes_a_valid_space_beside_the_data_and_never_replaces_a_file(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "data").mkdir()
    data = write_tiny_dataset(tmp_path / "data" / "reviews.csv", copies=2)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--dataset", "data/reviews.csv"]) == 0
    written = tmp_path / "data" / "reviews.yaml"
    assert "wrote data/reviews.yaml" in capsys.readouterr().out
    text = written.read_text(encoding="utf-8")
    assert "path: reviews.csv" in text and text.startswith("# Written by `autoprompt-search init --dataset data/reviews.csv`")
    monkeypatch.chdir("/")  # the file names its data relative to itself, wherever it is read from
    assert load_space(written).dataset.path == data.absolute()
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--dataset", "data/reviews.csv", "--text-field", "text", "--labels", "negative,positive",
                 "--out", "spaces/mine/first.yaml"]) == 0
    other = (tmp_path / "spaces" / "mine" / "first.yaml").read_text(encoding="utf-8")
    assert "path: ../../data/reviews.csv" in other
    assert "init --dataset data/reviews.csv --text-field text --labels negative,positive`" in other
    monkeypatch.chdir("/")
    assert load_space(tmp_path / "spaces" / "mine" / "first.yaml").dataset.path == data.absolute()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["init", "--dataset", "data/reviews.csv"]) == 2
    assert "--out: data/reviews.yaml exists" in capsys.readouterr().err
    assert written.read_text(encoding="utf-8") == text


def test_init_refuses_an_unwritable_out(tmp_path, capsys) -> None:
    data = write_tiny_dataset(tmp_path / "reviews.csv")
    assert main(["init", "--dataset", str(data), "--out", "/proc/no-such-folder/space.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoprompt-search: error: --out: /proc/no-such-folder/space.yaml: cannot write") and "Traceback" not in err


def test_init_with_labels_that_are_not_words_writes_nothing(tmp_path, capsys) -> None:
    data = _write(tmp_path / "codes.csv", [{"text": f"text {i}", "label": str(i % 2)} for i in range(60)])
    assert main(["init", "--dataset", str(data)]) == 2
    err = capsys.readouterr().err
    assert "labels '0', '1' are not words" in err and "Traceback" not in err
    assert not (tmp_path / "codes.yaml").exists()


@pytest.mark.parametrize("argv, message", [
    (["mr", "--dataset", "mr"], "not both"),
    ([], "one of them"),
    (["mr", "--text-field", "body"], "--text-field, --label-field"),
    (["mr", "--label-field", "label"], "--text-field, --label-field"),  # the default column named is still refused
    (["mr", "--test-fraction", "2"], "--text-field, --label-field"),  # the conflict first, whatever the value
    (["--dataset", "mr", "--test-fraction", "0.2"], "error: --test-fraction is only for data files, not the registered dataset 'mr'"),
    (["--dataset", "data.csv", "--test-fraction", "1.5"], "error: --test-fraction must be between 0 and 1 (exclusive), got 1.5"),
])
def test_search_takes_a_space_or_a_dataset(argv, message, capsys) -> None:
    assert main(["search", *argv]) == 2
    assert message in capsys.readouterr().err


def test_search_runs_a_data_file_with_its_starting_space(tmp_path, tiny_causal_lm, isolated_cache, capsys) -> None:
    data = write_tiny_dataset(tmp_path / "reviews.csv", copies=2)
    out = tmp_path / "run"
    assert main(["search", "--dataset", str(data), "--model", str(tiny_causal_lm), "--trials", "3", "--batch-size", "8",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["best_manual"]["verbalizer"] == {"negative": ["negative"], "positive": ["positive"]}
    assert "Leaderboard (reviews," in capsys.readouterr().out
    # the run's data come from its manifest (no space file): train starts from it as from any run
    assert main(["train", str(out), "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "trained")]) == 0
    trained = json.loads((tmp_path / "trained" / "training.json").read_text(encoding="utf-8"))
    assert trained["dataset"]["splits"] == json.loads((out / "manifest.json").read_text(encoding="utf-8"))["dataset"]["splits"]
