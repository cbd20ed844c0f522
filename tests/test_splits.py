"""The run's splits: few-shot train and dev, test, and the unlabelled texts, from the train pool or a file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autoprompt_search.errors import UserError
from autoprompt_search.spaces import load_space
from autoprompt_search.splits import make_splits
from autoprompt_search.testing import write_tiny_space


def _texts(dataset) -> set[str]:
    return {e.fields["text"] for e in dataset.examples}


@pytest.fixture
def space_with_file(tmp_path, tiny_causal_lm):
    """The tiny space drawing unlabelled texts from ``texts/more.jsonl``: 12 new texts, and one text
    of every split of seed 13 (those must never be drawn)."""
    space = write_tiny_space(tmp_path, tiny_causal_lm, extra="unlabelled: {texts: 100, path: texts/more.jsonl}\n")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "more.jsonl").write_text('{"text": "a placeholder"}\n')
    plain = make_splits(load_space(space).dataset, 4, 13)
    taken = [next(iter(_texts(split))) for split in (plain.train, plain.dev, plain.test)]
    lines = [f'{{"text": "a new sentence number {i}", "score": {i}}}' for i in range(12)]
    lines += [json.dumps({"text": text}) for text in taken]
    (tmp_path / "texts" / "more.jsonl").write_text("\n".join(lines) + "\n")
    return space, taken


def test_unlabelled_texts_come_from_the_file_the_space_names_without_the_run_s_examples(space_with_file) -> None:
    path, taken = space_with_file
    space = load_space(path)
    assert space.unlabelled.path == path.parent / "texts" / "more.jsonl"  # relative to the space file
    splits = make_splits(space.dataset, 4, 13, unlabelled=space.unlabelled.texts, unlabelled_file=space.unlabelled.path)
    assert _texts(splits.unlabelled) == {f"a new sentence number {i}" for i in range(12)}
    assert not set(taken) & _texts(splits.unlabelled)
    assert splits.describe()["splits"]["unlabelled"]["n"] == 12
    few = make_splits(space.dataset, 4, 13, unlabelled=5, unlabelled_file=space.unlabelled.path)
    again = make_splits(space.dataset, 4, 13, unlabelled=5, unlabelled_file=space.unlabelled.path)
    assert len(few.unlabelled) == 5 and few.unlabelled.content_hash() == again.unlabelled.content_hash()
    assert make_splits(space.dataset, 4, 13, unlabelled=5).unlabelled.content_hash() != few.unlabelled.content_hash()


def test_a_file_without_a_text_left_over_is_a_clear_error(space_with_file, tmp_path) -> None:
    path, taken = space_with_file
    only_taken = tmp_path / "taken.jsonl"
    only_taken.write_text("".join(json.dumps({"text": text}) + "\n" for text in taken))
    with pytest.raises(UserError, match=r"unlabelled.texts: .*taken.jsonl holds no text that is not a few-shot example or a test example"):
        make_splits(load_space(path).dataset, 4, 13, unlabelled=5, unlabelled_file=only_taken)
    no_column = tmp_path / "other.csv"
    no_column.write_text("sentence\nhello\n")
    with pytest.raises(UserError, match=r"other.csv: no column 'text'; columns are: sentence"):
        make_splits(load_space(path).dataset, 4, 13, unlabelled=5, unlabelled_file=no_column)


def test_numpy_numbers_draw_the_same_splits_and_describe_them_as_json(tmp_path, tiny_causal_lm) -> None:
    dataset = load_space(write_tiny_space(tmp_path, tiny_causal_lm)).dataset
    plain = make_splits(dataset, 4, 13, test_limit=6)
    drawn = make_splits(dataset, np.int64(4), np.uint32(13), test_limit=np.int16(6))
    assert json.dumps(drawn.describe()) == json.dumps(plain.describe())
    assert (drawn.seed, drawn.k) == (13, 4) and type(drawn.seed) is int


@pytest.mark.parametrize(("arguments", "message"), [
    ((4, True), "seed must be a whole number from 0 to 2\\*\\*32 - 1, got True"),
    ((0, 13), "k must be a whole number of at least 1, got 0"),
    ((4.0, 13), "k must be a whole number of at least 1, got 4.0"),
])
def test_bad_numbers_are_refused_by_name(tmp_path, tiny_causal_lm, arguments, message: str) -> None:
    dataset = load_space(write_tiny_space(tmp_path, tiny_causal_lm)).dataset
    with pytest.raises(UserError, match=message):
        make_splits(dataset, *arguments)
    with pytest.raises(UserError, match="test_limit must be a whole number of at least 1, got 2.5"):
        make_splits(dataset, 4, 13, test_limit=2.5)
