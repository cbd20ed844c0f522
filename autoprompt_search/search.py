"""The Optuna study over frozen candidate pools.

Every candidate is generated before the first trial (templates, label-word options per class,
calibrations) and frozen into :class:`Pools`; a trial picks indices into them. The space's
manual prompts (seed templates x seed verbalizers x calibrations) are enqueued as the first
trials, so the best manual prompt is measured the same way as everything the search finds.

A trial scores its prompt on dev chunk by chunk and reports after each chunk, so a pruner can
stop a poor new template before its whole dev pass; templates already seen cost no forward pass.
Many prompts tie on a small dev set: the ranking breaks ties by the mean log-likelihood margin,
never by trial order.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import optuna
from optuna.samplers import RandomSampler, TPESampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import FrozenTrial, TrialState

from autoprompt_search.data import Dataset
from autoprompt_search.errors import UserError
from autoprompt_search.scoring import Calibration, PreparedPrompts, PromptScorer, evaluate_scores
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

STUDY_NAME = "autoprompt_search"
ENQUEUED_MARKS = ("manual", "proposal")  # user attributes of the trials enqueued before the sampler's
POOLS_FORMAT = 1


@dataclass(frozen=True)
class Pools:
    """The frozen choices of a study. ``words[c]`` lists the word options (each a list of
    words) for the c-th label; ``manual`` lists the enqueued baseline parameter sets.

    Word options only ever grow, round by round (``generators.rounds``): ``round_sizes[r][c]`` is
    how many options label c has in round r, and each round names its word parameters anew
    (:func:`word_param`), because an Optuna parameter keeps its choices for the whole study.
    Option i is the same words in every round that has it."""

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    words: tuple[tuple[tuple[str, ...], ...], ...]
    calibrations: tuple[str, ...]
    manual: tuple[dict[str, Any], ...] = ()
    origins: dict[str, Any] = field(default_factory=dict)  # where each option came from
    round_sizes: tuple[tuple[int, ...], ...] = ()  # empty: one round with every option
    proposals: tuple[dict[str, Any], ...] = ()  # generated prompts enqueued after the manual ones

    @property
    def enqueued(self) -> int:
        """How many trials are enqueued before the sampler's: the manual baselines and the proposals."""
        return len(self.manual) + len(self.proposals)

    @property
    def rounds(self) -> int:
        return max(1, len(self.round_sizes))

    def options_in_round(self, round_index: int) -> tuple[int, ...]:
        return self.round_sizes[round_index] if self.round_sizes else tuple(len(options) for options in self.words)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": POOLS_FORMAT, "labels": list(self.labels), "templates": list(self.templates),
                "words": [[list(option) for option in options] for options in self.words],
                "calibrations": list(self.calibrations), "manual": list(self.manual), "origins": self.origins,
                "round_sizes": [list(sizes) for sizes in self.round_sizes], "proposals": list(self.proposals)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Pools":
        return cls(tuple(data["labels"]), tuple(data["templates"]),
                   tuple(tuple(tuple(option) for option in options) for options in data["words"]),
                   tuple(data["calibrations"]), tuple(data.get("manual", ())), data.get("origins", {}),
                   tuple(tuple(sizes) for sizes in data.get("round_sizes", ())), tuple(data.get("proposals", ())))

    def with_round(self, words: Sequence[Sequence[tuple[str, ...]]], record: dict[str, Any]) -> "Pools":
        """These pools plus one generation round: ``words`` extends each label's options."""
        for c, options in enumerate(words):
            if tuple(options[: len(self.words[c])]) != self.words[c]:
                raise ValueError("a new round may only append word options")
        sizes = self.round_sizes or (self.options_in_round(0),)
        return replace(self, words=tuple(tuple(options) for options in words),
                       round_sizes=sizes + (tuple(len(options) for options in words),),
                       origins={**self.origins, "rounds": [*self.origins.get("rounds", []), record]})

    def word_choice(self, params: dict[str, Any], label_index: int) -> int:
        """The option index a parameter set picks for a label, whichever round named it."""
        for round_index in range(self.rounds):
            if word_param(label_index, round_index) in params:
                return params[word_param(label_index, round_index)]
        raise KeyError(f"no word parameter for label {self.labels[label_index]!r} in {params}")

    def verbalizer(self, params: dict[str, Any]) -> Verbalizer:
        return Verbalizer.parse({label: list(self.words[c][self.word_choice(params, c)]) for c, label in enumerate(self.labels)}, self.labels)

    def choice_key(self, params: dict[str, Any]) -> str:
        """The same prompt gives the same key, whichever round's parameter names chose it."""
        return json.dumps([params["template"], [self.word_choice(params, c) for c in range(len(self.labels))], params["calibration"]])

    def params_for(self, template: str, verbalizer: Verbalizer, calibration: str) -> dict[str, Any]:
        """The first round's parameter set that selects exactly these choices (they must be in its pools)."""
        params: dict[str, Any] = {"template": self.templates.index(template)}
        for c, words in enumerate(verbalizer.words):
            params[word_param(c)] = self.words[c].index(tuple(words))
        params["calibration"] = calibration
        return params


def word_param(label_index: int, round_index: int = 0) -> str:
    return f"words_{label_index}" if round_index == 0 else f"words_{label_index}_round{round_index}"


@dataclass(frozen=True)
class TrialResult:
    """A finished trial as the leaderboard sees it."""

    number: int
    objective: float
    accuracy: float
    macro_f1: float
    mean_margin: float
    template: str
    verbalizer: dict[str, list[str]]
    calibration: Calibration
    manual: bool
    params: dict[str, Any] = field(default_factory=dict)
    dev_accuracy: float = float("nan")

    @property
    def rank_key(self) -> tuple[float, float]:
        return (self.objective, self.mean_margin)


class TrialSeededTPESampler(TPESampler):
    """TPE whose randomness depends only on the seed and the finished history.

    Optuna does not restore a sampler's random state when a study resumes; re-seeding each trial
    from the number of finished trials (not the trial number, which an interrupted trial shifts)
    makes a resumed study draw what an uninterrupted one would have drawn from the same history.
    """

    def __init__(self, seed: int, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        trial_seed = (self._base_seed * 1_000_003 + finished) % 2**32
        self._rng = LazyRandomState(trial_seed)
        self._random_sampler = RandomSampler(seed=trial_seed)
        super().before_trial(study, trial)


def make_pruner(kind: str) -> optuna.pruners.BasePruner:
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if kind == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=8)
    return optuna.pruners.NopPruner()


class PromptSearch:
    """Scores trials of one study: one frozen model, one few-shot split, frozen pools.

    A trial is judged on all labelled few-shot examples, train and dev (64 for K=16 and two
    classes): on so few examples the selection noise of dev alone (32) dominates what the search
    can gain. Train texts also fit the ``prior`` calibration, without their labels.

    Train is one piece, rendered exactly as the label-word generator renders it, so its slot
    distributions are computed once for both; dev is scored in chunks so a pruner can stop early.
    """

    def __init__(self, scorer: PromptScorer, train: Dataset, dev: Dataset, pools: Pools, *,
                 objective: str = "accuracy", pruner: str = "median", chunks: int = 4) -> None:
        self.scorer = scorer
        self.pools = pools
        self.objective = objective
        self.pruner = pruner
        self.train = train
        self.dev = dev.subset(_interleave_classes(dev))
        labels = list(dev.labels)
        self.gold = np.array([labels.index(e.label) for e in self.train.examples + self.dev.examples])
        n_chunks = max(1, chunks if pruner != "none" else 1)
        self.pieces = [(0, len(self.train))] + [(len(self.train) + a, len(self.train) + b)
                                                 for a, b in _piece_bounds(len(self.dev), n_chunks)]
        self._texts = [example.fields for example in self.train.examples + self.dev.examples]
        self._templates = [Template.parse(source, fields=dev.fields) for source in pools.templates]
        self._prepared: dict[int, list[PreparedPrompts]] = {}

    def use_pools(self, pools: Pools) -> None:
        """Continue with the pools of a new generation round (same templates, more word options)."""
        if pools.templates != self.pools.templates or pools.labels != self.pools.labels:
            raise ValueError("a new round may not change the templates or the labels")
        self.pools = pools

    def prepared(self, template_index: int) -> list[PreparedPrompts]:
        """The template rendered on each piece (train first); rendering is kept per template."""
        if template_index not in self._prepared:
            template = self._templates[template_index]
            self._prepared[template_index] = [self.scorer.prepare(template, self._texts[a:b]) for a, b in self.pieces]
        return self._prepared[template_index]

    def calibration(self, method: str, template_index: int, verbalizer: Verbalizer) -> Calibration:
        """Fitted without labels: content-free inputs, or the mean class scores of the train texts."""
        word_ids = self.scorer.word_ids(self._templates[template_index], verbalizer)
        return self.scorer.fit_calibration(method, self.prepared(template_index)[0], word_ids)

    def evaluate(self, params: dict[str, Any], trial: optuna.Trial | None = None) -> tuple[Any, Any, Calibration]:
        """(all-examples score, dev-only score, calibration) of a parameter set; reports to ``trial``."""
        import torch

        template_index = params["template"]
        verbalizer = self.pools.verbalizer(params)
        calibration = self.calibration(params["calibration"], template_index, verbalizer)
        word_ids = self.scorer.word_ids(self._templates[template_index], verbalizer)
        scores = []
        prunable = trial is not None and not _enqueued(trial)
        for step, piece in enumerate(self.prepared(template_index)):
            _stop_if_interrupted()
            scores.append(calibration.apply(self.scorer.class_scores(piece.prompts, word_ids)))
            if trial is not None:
                self._report(trial, step, torch.cat(scores).numpy())
                if prunable and step < len(self.pieces) - 1 and trial.should_prune():
                    raise optuna.TrialPruned()
        everything = torch.cat(scores)
        dev_rows = slice(len(self.train), len(self.gold))
        return (evaluate_scores(everything, self.gold, calibration),
                evaluate_scores(everything[dev_rows], self.gold[dev_rows], calibration), calibration)

    def objective_function(self, trial: optuna.Trial) -> float:
        params = self.suggest(trial)
        result, dev, calibration = self.evaluate(params, trial)
        trial.set_user_attr("accuracy", result.accuracy)
        trial.set_user_attr("macro_f1", result.macro_f1)
        trial.set_user_attr("mean_margin", result.mean_margin)
        trial.set_user_attr("dev_accuracy", dev.accuracy)
        trial.set_user_attr("template_text", self.pools.templates[params["template"]])
        trial.set_user_attr("verbalizer", self.pools.verbalizer(params).to_dict())
        trial.set_user_attr("calibration_bias", list(calibration.bias))
        return result.accuracy if self.objective == "accuracy" else result.macro_f1

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Choices of the pools' latest round, under that round's parameter names."""
        latest = self.pools.rounds - 1
        params: dict[str, Any] = {"template": trial.suggest_categorical("template", list(range(len(self.pools.templates))))}
        for c, size in enumerate(self.pools.options_in_round(latest)):
            params[word_param(c, latest)] = trial.suggest_categorical(word_param(c, latest), list(range(size)))
        params["calibration"] = trial.suggest_categorical("calibration", list(self.pools.calibrations))
        return params

    def _report(self, trial: optuna.Trial, step: int, scores_so_far: np.ndarray) -> None:
        gold = self.gold[: len(scores_so_far)]
        if self.pruner == "wilcoxon":
            # Per-example margins, one step per example, as WilcoxonPruner expects.
            others = scores_so_far.copy()
            others[np.arange(len(gold)), gold] = -np.inf
            margins = scores_so_far[np.arange(len(gold)), gold] - others.max(axis=1)
            for index in range(self.pieces[step][0], len(gold)):
                trial.report(float(margins[index]), int(index))
        else:
            trial.report(float((scores_so_far.argmax(axis=1) == gold).mean()), step)

    # -- the study ---------------------------------------------------------------------------
    def run(self, study: optuna.Study, planned: int | None, timeout: float | None,
            callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (), max_repeats: int = 200) -> None:
        """Run until the study holds ``planned`` finished distinct prompts (or ``timeout``); the
        count is the study's, so several workers on one storage share the budget.

        TPE proposes the same categorical choices again and again once it has converged; a repeat
        is answered from the earlier trial without counting towards the budget, and the search
        stops after ``max_repeats`` repeats in a row (the sampler has nothing new to try).

        Ctrl-C stops the search at the next safe point (before a trial, or between the dev chunks
        of one), never inside a write to the storage; a second Ctrl-C stops it at once.
        """
        with _interrupt_between_steps():
            self._run(study, planned, timeout, callbacks, max_repeats)

    def _run(self, study, planned, timeout, callbacks, max_repeats) -> None:
        from autoprompt_search.errors import UserError

        seen = {self.pools.choice_key(t.params): t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        began, repeats = time.perf_counter(), 0
        while (planned is None or finished_trials(study) < planned) and repeats < max_repeats:
            _stop_if_interrupted()
            if timeout is not None and time.perf_counter() - began > timeout:
                break
            trial = study.ask()
            params = self.suggest(trial)
            if self.pools.choice_key(params) in seen and not _enqueued(trial):
                earlier = seen[self.pools.choice_key(params)]
                for name, value in earlier.user_attrs.items():
                    trial.set_user_attr(name, value)
                trial.set_user_attr("repeat_of", earlier.number)
                frozen = study.tell(trial, earlier.value)
                repeats += 1
                continue
            repeats = 0
            try:
                value = self.objective_function(trial)
            except optuna.TrialPruned:
                frozen = study.tell(trial, state=TrialState.PRUNED)
            except (KeyboardInterrupt, UserError):
                study.tell(trial, state=TrialState.FAIL)
                study.enqueue_trial(params, user_attrs={k: v for k, v in trial.user_attrs.items() if k in ENQUEUED_MARKS})
                raise
            else:
                frozen = study.tell(trial, value)
                seen[self.pools.choice_key(params)] = frozen
            for callback in callbacks:
                callback(study, frozen)


_interrupted = threading.Event()


@contextmanager
def _interrupt_between_steps() -> Iterator[None]:
    """While the search runs (in the main thread), the first SIGINT only sets a flag that
    :func:`_stop_if_interrupted` turns into KeyboardInterrupt at a safe point."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        if _interrupted.is_set():
            raise KeyboardInterrupt
        _interrupted.set()

    _interrupted.clear()
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted.clear()


def _stop_if_interrupted() -> None:
    if _interrupted.is_set():
        _interrupted.clear()
        raise KeyboardInterrupt


def _piece_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n, min(chunks, n) + 1).round().astype(int) if n else np.array([0, 0])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def open_study(storage: str | optuna.storages.BaseStorage, *, seed: int, pruner: str, resume: bool,
               exclusive: bool = True) -> tuple[optuna.Study, bool]:
    """Create a study, or load it for ``--resume``; returns (study, created).

    A study left by another run is never reused silently. With ``exclusive`` storage (the run
    folder's own), trials left RUNNING were cut off by a killed process: they are marked failed
    and enqueued again. A shared storage may hold other workers' running trials: those are left
    alone (an RDB storage fails them itself once their heartbeat stops).
    """
    sampler = TrialSeededTPESampler(seed, multivariate=True, n_startup_trials=10)
    try:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        if STUDY_NAME in names and not resume:
            raise UserError("the storage already holds this run's study: pass --resume to continue it, or --out / --storage for a new run")
        study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", sampler=sampler,
                                    pruner=make_pruner(pruner), load_if_exists=True)
    except UserError:
        raise
    except Exception as error:  # whatever the storage backend raises for a bad URL or an unreachable database
        raise UserError(f"--storage: cannot open the Optuna storage ({type(error).__name__}: {error})") from None
    if STUDY_NAME in names:
        if exclusive:
            _requeue_interrupted(study)
        else:
            optuna.storages.fail_stale_trials(study)
    return study, STUDY_NAME not in names


def _requeue_interrupted(study: optuna.Study) -> None:
    """Trials left RUNNING by a killed process are marked failed and enqueued again."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(trial.params or trial.system_attrs.get("fixed_params", {}), user_attrs=dict(trial.user_attrs))


def enqueue_manual(study: optuna.Study, pools: Pools) -> None:
    """The manual baselines, then the generators' proposals, as the first trials."""
    for params in pools.manual:
        study.enqueue_trial(params, user_attrs={"manual": True})
    for params in pools.proposals:
        study.enqueue_trial(params, user_attrs={"proposal": True})


def _enqueued(trial: optuna.Trial) -> bool:
    """Baselines and proposals are scored in full: the pruner judges only what the sampler picks."""
    return any(trial.user_attrs.get(mark) for mark in ENQUEUED_MARKS)


def finished_trials(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)) if "repeat_of" not in t.user_attrs)


def ranking_key(objective: float, mean_margin: float, template: str, verbalizer: dict[str, list[str]], calibration: str) -> tuple:
    """The leaderboard's order: objective, then mean margin, then the prompt's text (never trial order)."""
    return (-objective, -mean_margin, template, json.dumps(verbalizer), calibration)


def leaderboard(study: optuna.Study) -> list[TrialResult]:
    """Completed trials, best first: objective, then mean margin (identical prompts stay together)."""
    results = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if "repeat_of" in attrs:
            continue
        results.append(TrialResult(
            number=trial.number, objective=float(trial.value), accuracy=attrs["accuracy"], macro_f1=attrs["macro_f1"],
            mean_margin=attrs["mean_margin"], template=attrs["template_text"], verbalizer=attrs["verbalizer"],
            calibration=Calibration(trial.params["calibration"], tuple(attrs["calibration_bias"])),
            manual=bool(attrs.get("manual", False)), params=dict(trial.params), dev_accuracy=attrs.get("dev_accuracy", float("nan")),
        ))
    results.sort(key=lambda r: ranking_key(r.objective, r.mean_margin, r.template, r.verbalizer, r.calibration.method))
    return results


def _interleave_classes(dataset: Dataset) -> list[int]:
    """Indices in round-robin class order, so every dev chunk is close to balanced."""
    by_class = [[i for i, e in enumerate(dataset.examples) if e.label == label] for label in dataset.labels]
    order: list[int] = []
    for position in range(max((len(members) for members in by_class), default=0)):
        order.extend(members[position] for members in by_class if position < len(members))
    return order


class Progress:
    """A progress line per trial: trials done, best dev score, cache hit rate."""

    def __init__(self, scorer: PromptScorer, total: int | None) -> None:
        from tqdm import tqdm

        self.scorer = scorer
        self.bar = tqdm(total=total, desc="trials", unit="trial", dynamic_ncols=True, leave=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        best = max((t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))), default=float("nan"))
        self.bar.set_postfix(best=f"{best:.3f}", cache_hits=f"{self.scorer.cache.hit_rate:.0%}",
                             forward_s=f"{self.scorer.backend.forward_seconds:.0f}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
