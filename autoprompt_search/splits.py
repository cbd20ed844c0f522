"""The three splits of one search run (few-shot train and dev, held-out test), derived from a
dataset, K and a seed, and checked again against the hashes a run recorded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from autoprompt_search import data
from autoprompt_search.arguments import whole_number
from autoprompt_search.data import Dataset
from autoprompt_search.errors import UserError
from autoprompt_search.examples import deduplicate
from autoprompt_search.label_free import unlabelled_sample

TEST_SAMPLE_SEED = 0  # a test limit draws its sample with this seed, whatever the few-shot seed
SPLIT_NAMES = ("train", "dev", "test")


@dataclass(frozen=True)
class RunSplits:
    train: Dataset
    dev: Dataset
    test: Dataset
    k: int
    seed: int
    test_limit: int | None = None
    test_sample_seed: int | None = None
    unlabelled: Dataset | None = None  # texts whose labels are not read (label_free.unlabelled_sample)

    def describe(self) -> dict[str, Any]:
        """What a run records about its data: sizes and content hashes of each split."""
        named = [("train", self.train), ("dev", self.dev), ("test", self.test)]
        if self.unlabelled is not None:
            named.append(("unlabelled", self.unlabelled))
        return {"k": self.k, "seed": self.seed,
                "splits": {name: {"n": len(split), "content_hash": split.content_hash()} for name, split in named},
                "test_limit": self.test_limit, "test_sample_seed": self.test_sample_seed}

    def check(self, recorded: Mapping[str, Any], origin: str) -> None:
        """A user error naming the first split whose content differs from the ``recorded`` one (or
        that only one of them holds)."""
        now, then = self.describe()["splits"], recorded["splits"]
        for name in dict.fromkeys([*SPLIT_NAMES, *now, *then]):
            expected = (then.get(name) or {}).get("content_hash")
            if expected is None or (now.get(name) or {}).get("content_hash") != expected:
                raise UserError(f"{origin}: the {name} split of the data differs from the one the run recorded "
                                f"(content hash {(expected or 'none')[:12]}...): the data changed since the run")


def make_splits(dataset: Any, k: int, seed: int, test_limit: int | None = None,
                test_sample_seed: int = TEST_SAMPLE_SEED, unlabelled: int = 0, unlabelled_file: Path | None = None) -> RunSplits:
    """Train and dev of K examples per label drawn from the train pool with ``seed``; the test split
    (a sample of ``test_limit``, the same for every seed, when given); ``unlabelled`` texts of the
    train pool (or of ``unlabelled_file``) that train, dev and the whole test split do not hold,
    drawn with ``seed`` (none for 0). ``dataset`` is a space's
    :class:`~autoprompt_search.space_types.DatasetSpec`."""
    seed, k = data.checked_seed(seed), whole_number(k, "k", 1)
    test_limit = None if test_limit is None else whole_number(test_limit, "test_limit", 1)
    pool, whole_test = dataset.load_split("train_pool"), dataset.load_split("test")
    # the same test sample for every few-shot seed: comparable runs and shared cache entries
    test = data.sample(whole_test, test_limit, test_sample_seed) if test_limit else whole_test
    train, dev = data.few_shot(pool, k, seed, origin=dataset.spec)
    texts = None
    if unlabelled:
        source = pool if unlabelled_file is None else deduplicate(data.load_file(
            unlabelled_file, text_fields=dataset.text_fields, label_field=None, name="unlabelled"))
        texts = unlabelled_sample(source, [train, dev, whole_test], unlabelled, seed)
        if not len(texts):
            where = unlabelled_file or f"the train pool of {dataset.spec}"
            raise UserError(f"unlabelled.texts: {where} holds no text that is not a few-shot example or a test example")
    return RunSplits(train, dev, test, k, seed, test_limit or None, test_sample_seed if test_limit else None, texts)
