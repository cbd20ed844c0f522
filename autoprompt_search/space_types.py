"""The validated form of a search space: frozen dataclasses that check their own values (each
failure names the field path: ``budget.trials must be at least 1``). Reading YAML into them is
:mod:`autoprompt_search.spaces`'s job."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from autoprompt_search import data
from autoprompt_search.asset_registry import DATASETS, DEFAULT_MODEL, MODELS
from autoprompt_search.candidates.generators import REGISTRY, Generators
from autoprompt_search.candidates.template_pool import TemplateBlocks, join_fields
from autoprompt_search.data import LMBFF_SEEDS, REGISTERED, Dataset
from autoprompt_search.errors import UserError
from autoprompt_search.space_checks import Invalid, need_choice, need_int
from autoprompt_search.templates import SLOT, Template
from autoprompt_search.verbalizers import Verbalizer

REGISTERED_FIELDS: tuple[str, ...] = ("text",)  # every registered dataset has this one field
OBJECTIVES = ("accuracy", "macro_f1")
PRUNERS = ("median", "wilcoxon", "none")
UNLABELLED_SELECTIONS = ("labelled", "agreement")
DEFAULT_CALIBRATION = ("none", "contextual", "prior")
MIN_MAX_LENGTH = 16  # room for a short template, the slot and some text
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ------------------------------------------------------------------------------- dataclasses


def absolute_path(path: str | Path | None, key: str = "path") -> Path | None:
    """A data file's path made absolute (from the working directory), as a space file's are made from
    the file: a run's manifest then names the same file from wherever it is resumed."""
    if path is None:
        return None
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise Invalid(key, f"must be a file path, got {path!r}")
    return Path(os.path.normpath(Path(path).expanduser().absolute()))


def as_records(records: Any) -> tuple[Any, ...]:
    """Examples given in memory as a tuple of mappings (a pandas DataFrame's rows, without importing pandas)."""
    return tuple(records.to_dict("records") if hasattr(records, "to_dict") else records)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset (``path`` is None) or a data file with its column options."""

    name: str
    path: Path | None = None
    text_fields: tuple[str, ...] = REGISTERED_FIELDS
    label_field: str = "label"
    labels: tuple[str, ...] | None = None  # None: a file whose labels are read from the data
    test_fraction: float | None = None  # None: data.py's default for the dataset
    records: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)  # examples given in memory

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", absolute_path(self.path, "dataset.path"))
        if self.path is None and self.records is None:
            need_choice("dataset", self.name, tuple(sorted(REGISTERED)))
            registered = DATASETS[self.name].labels
            if self.text_fields != REGISTERED_FIELDS or self.label_field != "label" or self.labels not in (None, registered):
                raise Invalid(
                    "dataset", f"text_fields, label_field and labels are only for data files, not the registered dataset {self.name!r}"
                )
            object.__setattr__(self, "labels", registered)
        if not self.text_fields:
            raise Invalid("dataset.text_fields", "must list at least one column")
        for i, name in enumerate(self.text_fields):
            if not isinstance(name, str) or not _FIELD_NAME.match(name) or name == SLOT:
                raise Invalid(
                    f"dataset.text_fields[{i}]",
                    f"must be a name usable as a template field {{name}} (letters, digits, _; not 'mask'), got {name!r}",
                )
        if not isinstance(self.label_field, str) or not self.label_field:
            raise Invalid("dataset.label_field", f"must be a column name, got {self.label_field!r}")
        if self.labels is not None and (len(self.labels) < 2 or len(set(self.labels)) != len(self.labels)):
            raise Invalid("dataset.labels", f"must list at least two distinct labels, got {list(self.labels)}")
        fraction = self.test_fraction
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1):
            raise Invalid("dataset.test_fraction", f"must be a number between 0 and 1 (exclusive), got {fraction!r}")

    @property
    def registered(self) -> bool:
        return self.path is None and self.records is None

    def with_records(self, records: Any) -> DatasetSpec:
        """This dataset's columns over ``records`` (dicts, or a pandas DataFrame) instead of its file or name."""
        name = self.name if not self.registered else f"{self.name}-records"
        return DatasetSpec(name, None, self.text_fields, self.label_field, None if self.registered else self.labels,
                           self.test_fraction, as_records(records))

    @classmethod
    def from_record(cls, recorded: Mapping[str, Any], records: Any = None) -> DatasetSpec:
        """The dataset as a run's manifest recorded it (:meth:`SearchSpace.to_dict`), over ``records``
        when they are given (examples that were given in memory must be)."""
        if recorded.get("in_memory") and records is None:
            raise Invalid("dataset", "the examples were given in memory: pass them again (records)")
        spec = cls(recorded["name"], Path(recorded["path"]) if recorded.get("path") else None, tuple(recorded["text_fields"]),
                   recorded["label_field"], tuple(recorded["labels"]) if recorded.get("labels") else None, recorded.get("test_fraction"),
                   as_records(records) if recorded.get("in_memory") else None)  # in memory: as recorded, over the records
        return spec if records is None or recorded.get("in_memory") else spec.with_records(records)

    @property
    def spec(self) -> str:
        """What ``data.load_split`` takes: the registered name or the file path."""
        return self.name if self.path is None else str(self.path)

    def load_split(self, split: str) -> Dataset:
        """One split (``train_pool``, ``test`` or ``all``) of the registered dataset, the file or the records."""
        if self.records is None:
            return data.load_split(self.spec, split, **self.load_kwargs())
        examples = data.from_records(
            self.records,
            text_fields=self.text_fields,
            label_field=self.label_field,
            labels=self.labels,
            name=self.name,
            origin=f"data of {self.name!r}",
        )
        return data.split_dataset(examples, split, self.test_fraction)

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``data.load_split(self.spec, split, **kwargs)``."""
        kwargs: dict[str, Any] = {} if self.test_fraction is None else {"test_fraction": self.test_fraction}
        if self.path is not None:
            kwargs.update(
                text_fields=list(self.text_fields),
                label_field=self.label_field,
                name=self.name,
                labels=None if self.labels is None else list(self.labels),
            )
        return kwargs


@dataclass(frozen=True)
class FewShot:
    k: int = 16
    seeds: tuple[int, ...] = LMBFF_SEEDS

    def __post_init__(self) -> None:
        need_int("few_shot.k", self.k, 1)
        if not self.seeds:
            raise Invalid("few_shot.seeds", "must list at least one seed")
        for i, seed in enumerate(self.seeds):
            need_int(f"few_shot.seeds[{i}]", seed, 0, data.MAX_SEED)
        if len(set(self.seeds)) != len(self.seeds):
            raise Invalid("few_shot.seeds", f"must not repeat a seed, got {list(self.seeds)}")


@dataclass(frozen=True)
class TemplateSpace:
    seeds: tuple[Template, ...] = ()
    blocks: TemplateBlocks | None = None
    max_candidates: int = 40

    def __post_init__(self) -> None:
        if not self.seeds and self.blocks is None:
            raise Invalid("templates", "must give seeds, blocks or both")
        need_int("templates.max_candidates", self.max_candidates, 1)


@dataclass(frozen=True)
class VerbalizerSpace:
    seeds: tuple[Verbalizer, ...]

    def __post_init__(self) -> None:
        if not self.seeds:
            raise Invalid("verbalizers.seeds", "must list at least one verbalizer")
        for i, seed in enumerate(self.seeds[1:], start=1):
            if seed.labels != self.seeds[0].labels:
                raise Invalid(f"verbalizers.seeds[{i}]", f"has labels {list(seed.labels)}, but seeds[0] has {list(self.seeds[0].labels)}")


@dataclass(frozen=True)
class Budget:
    """Stop after ``trials`` trials or ``timeout_seconds``, whichever comes first; at least one is set."""

    trials: int | None = 60
    timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.trials is None and self.timeout_seconds is None:
            raise Invalid("budget", "must set trials, timeout_seconds or both")
        if self.trials is not None:
            need_int("budget.trials", self.trials, 1)
        timeout = self.timeout_seconds
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
            raise Invalid("budget.timeout_seconds", f"must be a number of seconds above 0 (or null), got {timeout!r}")


@dataclass(frozen=True)
class Pruner:
    type: str = "median"
    chunks: int = 4  # dev examples are scored in this many chunks; a trial may stop after each

    def __post_init__(self) -> None:
        need_choice("pruner.type", self.type, PRUNERS)
        need_int("pruner.chunks", self.chunks, 1)


@dataclass(frozen=True)
class Unlabelled:
    """Texts whose labels are not read: ``texts`` drawn with the run's seed from the train pool, or
    from the file at ``path`` (the dataset's text fields; a label column is not read), the few-shot
    examples and the test split left out. ``prior`` calibration is fitted on them (batch
    calibration) instead of on the scored train texts; 0 turns them off. ``select``: how the
    single best prompt is chosen, by the labels alone (``labelled``) or, among the prompts the
    labels cannot tell apart, by agreement with pseudo-labels on the texts (``agreement``,
    :func:`label_free.choose_by_agreement`)."""

    texts: int = 0
    select: str = "labelled"
    path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", absolute_path(self.path, "unlabelled.path"))
        need_int("unlabelled.texts", self.texts, 0)
        need_choice("unlabelled.select", self.select, UNLABELLED_SELECTIONS)
        if self.select != "labelled" and not self.texts:
            raise Invalid("unlabelled.select", f"{self.select!r} reads unlabelled texts: set unlabelled.texts above 0")
        if self.path is not None and not self.texts:
            raise Invalid("unlabelled.path", "needs unlabelled.texts above 0: how many of the file's texts to draw")

    def to_dict(self) -> dict[str, Any]:
        # only what is not the default: the record (and identity) of earlier runs stays as it was
        return {"texts": self.texts, **({"select": self.select} if self.select != "labelled" else {}),
                **({"path": str(self.path)} if self.path is not None else {})}

    @classmethod
    def from_record(cls, recorded: Mapping[str, Any]) -> Unlabelled:
        """The section as a run's manifest recorded it (:meth:`to_dict`; absent: no texts)."""
        return cls(recorded.get("texts", 0), recorded.get("select", "labelled"), Path(recorded["path"]) if recorded.get("path") else None)


@dataclass(frozen=True)
class Ensemble:
    size: int = 5  # distinct templates (each costs one pass over the test split)
    prompts_per_template: int = 3  # verbalizer/calibration variants per template, free once it is cached

    def __post_init__(self) -> None:
        need_int("ensemble.size", self.size, 1)
        need_int("ensemble.prompts_per_template", self.prompts_per_template, 1)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; ``raw`` is the merged YAML, ``source`` the file it came from."""

    name: str
    dataset: DatasetSpec
    templates: TemplateSpace
    verbalizers: VerbalizerSpace
    model: str = DEFAULT_MODEL  # a registered name or an absolute folder path
    max_length: int | None = None  # tokens per prompt (texts are cut to fit); None: the model's default
    few_shot: FewShot = FewShot()
    generators: Generators = field(default_factory=Generators)  # made per space: generators registered later count
    calibration: tuple[str, ...] = DEFAULT_CALIBRATION
    objective: str = "accuracy"
    budget: Budget = Budget()
    pruner: Pruner = Pruner()
    ensemble: Ensemble = Ensemble()
    unlabelled: Unlabelled = Unlabelled()
    description: str = ""
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        from autoprompt_search.calibration import CALIBRATION_METHODS

        if not isinstance(self.name, str) or not self.name.strip():
            raise Invalid("name", f"must be a non-empty string, got {self.name!r}")
        if not isinstance(self.description, str):
            raise Invalid("description", "must be a string")
        if self.max_length is not None:
            need_int("max_length", self.max_length, MIN_MAX_LENGTH)
        if not self.calibration:
            raise Invalid("calibration", f"must list at least one of {', '.join(CALIBRATION_METHODS)}")
        for i, method in enumerate(self.calibration):
            need_choice(f"calibration[{i}]", method, tuple(CALIBRATION_METHODS))
        if len(set(self.calibration)) != len(self.calibration):
            raise Invalid("calibration", f"must not repeat a method, got {list(self.calibration)}")
        need_choice("objective", self.objective, OBJECTIVES)
        for i, seed in enumerate(self.verbalizers.seeds):
            if self.dataset.labels is not None and set(seed.labels) != set(self.dataset.labels):
                raise Invalid(
                    f"verbalizers.seeds[{i}]", f"covers {list(seed.labels)}, but the data's labels are {list(self.dataset.labels)}"
                )
        for i, template in enumerate(self.templates.seeds):
            if template.n_triggers:
                raise Invalid(
                    f"templates.seeds[{i}]", f"{template.source!r} holds trigger slots [T]; put it under generators.triggers.templates"
                )
            unknown = [f for f in template.fields_used if f not in self.dataset.text_fields]
            if unknown:
                raise Invalid(
                    f"templates.seeds[{i}]", f"uses {{{unknown[0]}}}, not a field of the data ({', '.join(self.dataset.text_fields)})"
                )
        in_rounds = [name for name, generator in REGISTRY.items() if generator.in_rounds]
        if self.generators.rounds.count > 1 and not any(self.generators.configs[name].enabled for name in in_rounds):
            raise Invalid(
                "generators.rounds.count",
                "later rounds run the word generators again: turn on "
                f"{' or '.join(f'generators.{name}' for name in in_rounds)}, or keep one round",
            )
        for name, generator in REGISTRY.items():
            generator.check_space(self.generators.configs[name], self)
        self._check_for_model()

    def _check_for_model(self) -> None:
        """Causal models score the slot as the continuation, so nothing may follow ``{mask}``."""
        if self.model_kind != "causal":
            return
        pieces = [(f"templates.seeds[{i}]", t) for i, t in enumerate(self.templates.seeds)]
        if self.templates.blocks is not None:
            joined = join_fields(self.dataset.text_fields)
            pieces += [
                (f"templates.blocks.endings[{i}]", Template.parse(f"{joined} {e}")) for i, e in enumerate(self.templates.blocks.endings)
            ]
        for key, template in pieces:
            if template.continues_after_slot():
                raise Invalid(
                    key,
                    f"continues after the slot {{mask}} in {template.source!r}; "
                    f"the model {self.model} is causal, so {{mask}} must come last",
                )

    @property
    def model_kind(self) -> str | None:
        """``causal`` or ``masked`` for a registered model; None for a folder (known once loaded)."""
        asset = MODELS.get(self.model)
        return asset.lm_type if asset is not None else None

    @property
    def labels(self) -> tuple[str, ...]:
        """The dataset's labels, or for a file without ``labels`` those of the verbalizer seeds."""
        return self.dataset.labels or self.verbalizers.seeds[0].labels

    def with_overrides(self, model: str | None = None, trials: int | None = None, timeout: float | None = None) -> SearchSpace:
        """A copy with the command line's model or budget; ``overrides`` records what changed."""
        changes: dict[str, Any] = {}
        overrides = dict(self.overrides)
        budget = self.budget
        if model is not None:
            changes["model"] = overrides["model"] = model
        try:
            if trials is not None or timeout is not None:
                budget = Budget(trials if trials is not None else budget.trials, timeout if timeout is not None else budget.timeout_seconds)
                changes["budget"] = budget
                overrides["budget"] = dataclasses.asdict(budget)
            return dataclasses.replace(self, **changes, overrides=overrides)
        except Invalid as error:
            raise UserError(f"{self.origin}: with the model, trials or timeout overridden: {error}") from None

    def with_data(self, records: Any) -> SearchSpace:
        """A copy whose examples are ``records`` (dicts with the dataset's columns, or a pandas DataFrame)
        instead of the registered dataset or the file; the space's dataset section names the columns."""
        try:
            return dataclasses.replace(self, dataset=self.dataset.with_records(records))
        except Invalid as error:
            raise UserError(f"{self.origin}: {error}") from None

    def identity(self, max_length: int) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (with the prompt length the model applies)."""
        from autoprompt_search.backends import DEFAULT_MAX_LENGTH

        space = {key: value for key, value in self.to_dict().items() if key not in ("overrides", "budget", "source")}
        space["generators"] = self.generators.identity()
        if max_length != DEFAULT_MAX_LENGTH:  # as before spaces could set it
            space["max_length"] = max_length
        else:
            del space["max_length"]
        return space

    @property
    def origin(self) -> str:
        """What error messages name: the space's file, or its name for a space built in Python."""
        return str(self.source) if self.source is not None else f"<{self.name}>"

    def _dataset_dict(self) -> dict[str, Any]:
        """The dataset section as the manifest records it: examples given in memory are only marked."""
        dataset = {item.name: getattr(self.dataset, item.name) for item in dataclasses.fields(self.dataset) if item.name != "records"}
        dataset["path"] = str(self.dataset.path) if self.dataset.path else None
        if self.dataset.records is not None:  # only then: the record of every other space is as it was
            dataset["in_memory"] = True
        return dataset

    def to_dict(self) -> dict[str, Any]:
        """The effective space as JSON-able data (for the run manifest)."""
        result = {name: dataclasses.asdict(getattr(self, name)) for name in ("few_shot", "budget", "pruner", "ensemble")}
        result["generators"] = self.generators.to_dict()
        if self.unlabelled.texts:  # only then: the record (and identity) of every other space is as it was
            result["unlabelled"] = self.unlabelled.to_dict()
        blocks = self.templates.blocks
        return {
            "name": self.name, "description": self.description, "source": str(self.source) if self.source else None,
            "dataset": self._dataset_dict(),
            "model": self.model, "max_length": self.max_length, "labels": list(self.labels),
            "templates": {"seeds": [t.source for t in self.templates.seeds], "max_candidates": self.templates.max_candidates,
                          "blocks": dataclasses.asdict(blocks) if blocks else None},
            "verbalizers": {"seeds": [v.to_dict() for v in self.verbalizers.seeds]},
            "calibration": list(self.calibration), "objective": self.objective, **result, "overrides": dict(self.overrides),
        }  # fmt: skip
