"""The one owner of a search run's folder: its file names, reading and writing them (atomically),
the Optuna study inside it, and the run's data splits re-derived with their recorded hashes checked.

Layout::

    manifest.json        what produced the run (command, space, seed, model, split hashes, versions)
    pools.json           the frozen candidate pools and the run's identity (what --resume must match)
    study.db             the Optuna study (unless another storage was given)
    trials.csv           every trial
    results.json         best prompt, best manual prompt and ensemble on train+dev, dev and test
    test_predictions.csv per test example: gold, predictions and probabilities
    best.json            the best prompt, exported
    ensemble.json        the ensemble, exported
    report.html          the self-contained HTML report
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from autoprompt_search.errors import UserError
from autoprompt_search.fileio import atomic_write_json, atomic_write_text, read_json, unwritable_reason

if TYPE_CHECKING:
    import optuna

    from autoprompt_search.candidates.pools import Pools
    from autoprompt_search.data import Dataset
    from autoprompt_search.prompt_file import PromptFile
    from autoprompt_search.ranking import TrialResult
    from autoprompt_search.space_types import SearchSpace
    from autoprompt_search.splits import RunSplits

MANIFEST = "manifest.json"
POOLS = "pools.json"
STUDY_DB = "study.db"
TRIALS = "trials.csv"
RESULTS = "results.json"
PREDICTIONS = "test_predictions.csv"
BEST = "best.json"
ENSEMBLE = "ensemble.json"
REPORT = "report.html"
DEFAULT_STORAGE = "sqlite (study.db in this folder)"  # how the manifest names the run folder's own storage
TRIAL_COLUMNS = ("number", "state", "value", "accuracy", "macro_f1", "mean_margin", "calibration", "manual",
                 "template", "verbalizer", "seconds", "repeat_of", "retry_of")


class RunFolder:
    """A run folder on disk; nothing is read or written before a method asks."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # -- starting -----------------------------------------------------------------------------
    def is_started(self) -> bool:
        return self.path.is_dir() and any(self.path.iterdir())

    def check_startable(self, *, resume: bool) -> None:
        """A user error, before anything is written, when the folder cannot hold a new run: a file
        is in the way, or it holds another run that is not being resumed."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a folder", option="out")
        if reason := unwritable_reason(self.path):
            raise UserError(f"{self.path}: {reason}", option="out")
        if self.is_started() and not resume:
            raise UserError(f"run folder {self.path} is not empty: resume it, or choose another run folder", alternatives=("resume", "out"))

    def start(self, *, resume: bool) -> None:
        """Check the folder (:meth:`check_startable`) and create it."""
        self.check_startable(resume=resume)
        self.create()

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"{self.path}: cannot create the run folder ({error.strerror or error})", option="out") from None

    # -- reading ------------------------------------------------------------------------------
    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON object of the run; a missing, damaged or non-object file is a user error."""
        path = self.file(name)
        value = read_json(path)
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected a JSON object, found {type(value).__name__}")
        return value

    def read_csv(self, name: str, columns: Sequence[str]) -> list[dict[str, str]]:
        """A CSV file's rows; a file without one of ``columns`` is a user error."""
        path = self.file(name)
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                rows = list(reader)
                header = reader.fieldnames or []
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None
        absent = [column for column in columns if column not in header]
        if absent:
            raise UserError(f"{path}: missing column(s) {', '.join(absent)}")
        return rows

    def manifest(self) -> dict[str, Any]:
        return self.read_json(MANIFEST)

    def results(self) -> dict[str, Any]:
        return self.read_json(RESULTS)

    def prompt_file(self, path: str | Path, kinds: Sequence[str]) -> PromptFile:
        """A prompt file of this run (one of ``kinds``), refused if it records other data splits than the run."""
        from autoprompt_search.prompt_file import read

        file = read(path, kinds=kinds)
        if file.document.get("dataset", {}).get("splits") not in (None, self.manifest()["dataset"]["splits"]):
            raise UserError(f"{path}: its dataset splits differ from the ones of the run folder {self.path}")
        return file

    def is_complete(self) -> bool:
        return self.file(MANIFEST).is_file() and self.manifest().get("status") == "complete"

    def check_finished(self) -> None:
        """A user error unless this is a finished search run."""
        if not self.path.is_dir():
            raise UserError(f"{self.path}: no such run folder")
        missing = [name for name in (RESULTS, MANIFEST, TRIALS) if not self.file(name).is_file()]
        if missing:
            raise UserError(f"{self.path}: not a finished search run ({', '.join(missing)} missing); "
                            "an interrupted run gets its report when it finishes (resume the search)")
        status = self.manifest().get("status")
        if status != "complete":
            raise UserError(f"{self.file(MANIFEST)}: the run is not finished (status {status!r}); "
                            "finish it by resuming the search, which writes the report")

    def read_pools(self) -> tuple[Pools, dict[str, Any]] | None:
        """The frozen pools and the identity they were made under, or None before they exist."""
        from autoprompt_search.candidates.pools import Pools

        if not self.file(POOLS).is_file():
            return None
        stored = self.read_json(POOLS)
        return Pools.from_dict(stored), stored.get("run", {})

    # -- writing ------------------------------------------------------------------------------
    def write_json(self, name: str, document: dict[str, Any]) -> Path:
        return atomic_write_json(self.file(name), document)

    def write_pools(self, pools: Pools, identity: dict[str, Any]) -> Path:
        return self.write_json(POOLS, {**pools.to_dict(), "run": identity})

    def write_trials(self, study: optuna.Study) -> Path:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(TRIAL_COLUMNS)
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
                       if trial.datetime_complete and trial.datetime_start else "")
            writer.writerow([trial.number, trial.state.name, "" if trial.value is None else trial.value, attrs.get("accuracy", ""),
                             attrs.get("macro_f1", ""), attrs.get("mean_margin", ""), trial.params.get("calibration", ""),
                             bool(attrs.get("manual", False)), attrs.get("template_text", ""),
                             json.dumps(attrs.get("verbalizer", "")), seconds, attrs.get("repeat_of", ""), attrs.get("retry_of", "")])
        return atomic_write_text(self.file(TRIALS), buffer.getvalue())

    def write_predictions(self, test: Dataset, gold: Sequence[int], scored: Mapping[str, Any]) -> Path:
        """Per test example (in the order of the test split that results.json hashes): its text,
        the gold label, and for each named predictor of ``scored`` (the search: ``best`` and
        ``ensemble``; training: ``trained``; scores with ``predictions`` and ``probabilities``) its
        predicted label and class probabilities."""
        labels, fields, names = test.labels, test.fields, list(scored)
        ours = {"test_row", "gold", *names}
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["test_row", *(f"field_{f}" if f in ours or "_p_" in f else f for f in fields), "gold", *names,
                         *(f"{name}_p_{label}" for name in names for label in labels)])
        for row, (example, gold_index) in enumerate(zip(test.examples, gold)):
            writer.writerow([row, *(example.fields[field] for field in fields), labels[gold_index],
                             *(labels[scored[name].predictions[row]] for name in names),
                             *(f"{p:.6g}" for name in names for p in scored[name].probabilities[row])])
        return atomic_write_text(self.file(PREDICTIONS), buffer.getvalue())

    # -- the study ----------------------------------------------------------------------------
    def storage(self, url: str | None = None) -> Any:
        """The run's Optuna storage: its own SQLite file, or the one ``url`` names."""
        from autoprompt_search.study import open_storage

        return open_storage(url) if url else f"sqlite:///{self.file(STUDY_DB).resolve()}"

    def leaderboard(self, storage: str | None = None) -> list[TrialResult]:
        """The finished study's completed trials, best first."""
        from autoprompt_search.study import leaderboard, load_study

        recorded = self.manifest().get("storage")
        url = storage or (recorded if recorded and recorded != DEFAULT_STORAGE else None)
        return leaderboard(load_study(self.storage(url)))

    # -- the data -----------------------------------------------------------------------------
    def splits(self, records: Sequence[dict[str, Any]] | Any = None, space: SearchSpace | None = None) -> RunSplits:
        """The run's train, dev and test splits derived again from its data, K, seed and test limit,
        each checked against the content hash the run recorded. The data are those the manifest
        records (so a run whose space has no file, ``search --dataset`` or a mapping, reads back as any
        other), of the run's space file for a record an older version wrote, or of ``space`` when given.
        A run whose examples were given in memory needs them again (``records``)."""
        from autoprompt_search.space_types import DatasetSpec, Invalid, Unlabelled
        from autoprompt_search.spaces import load_space
        from autoprompt_search.splits import make_splits

        manifest = self.manifest()
        recorded, described = manifest["dataset"], manifest["space"]
        if not isinstance(described, Mapping) or not isinstance(described.get("dataset"), Mapping):
            raise UserError(f"{self.file(MANIFEST)}: space.dataset: not a record of the run's data; the manifest is damaged")
        if described["dataset"].get("in_memory") and records is None:
            raise UserError(f"{self.file(MANIFEST)}: the run's examples were given in memory: pass them again (records)")
        if space is None:  # the data as the run recorded them (absolute paths); the space file only for older records
            try:
                dataset = DatasetSpec.from_record(described["dataset"], records)
                unlabelled = Unlabelled.from_record(described.get("unlabelled") or {})
            except (Invalid, KeyError, TypeError, AttributeError) as error:
                if described.get("source") is None:
                    raise UserError(f"{self.file(MANIFEST)}: space: the run's data cannot be read from its record ({error!r}); "
                                    "from Python, pass the run's space (space=...)") from None
                space = load_space(described["source"])
        if space is not None:
            if records is not None:
                space = space.with_data(records)
            dataset, unlabelled = space.dataset, space.unlabelled
        test_limit = recorded.get("test_limit") or None  # runs of an earlier version recorded 0 for no limit
        # Runs made before TEST_SAMPLE_SEED existed sampled their test split with the run's own seed.
        sample_seed = recorded.get("test_sample_seed", manifest["seed"]) if test_limit else None
        # texts are drawn again only if the run drew some (a run of an older version may have found none left)
        texts = unlabelled.texts if "unlabelled" in recorded["splits"] else 0
        splits = make_splits(dataset, recorded["k"], manifest["seed"], test_limit, unlabelled=texts,
                             unlabelled_file=unlabelled.path, **({} if sample_seed is None else {"test_sample_seed": sample_seed}))
        splits.check(recorded, str(self.path))
        return splits
