"""Scoring the trials of the Optuna study over frozen candidate pools (the study itself:
:mod:`study`).

Every candidate is generated before the first trial (templates, label-word options per class,
calibrations) and frozen into :class:`Pools`; a trial picks indices into them. The manual prompts
and the generators' proposals are the study's first trials (:func:`study.enqueue_manual`), so the
best manual prompt is measured the same way as everything the search finds.

A trial scores its prompt on dev chunk by chunk and reports after each chunk, so a pruner can
stop a poor new template before its whole dev pass; templates already seen cost no forward pass.
Many prompts tie on a small dev set: the ranking breaks ties by the mean log-likelihood margin,
never by trial order.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autoprompt_search.calibration import Calibration
from autoprompt_search.candidates.pools import Pools, word_param
from autoprompt_search.data import Dataset
from autoprompt_search.errors import UserError
from autoprompt_search.label_free import mutual_information
from autoprompt_search.scoring import PreparedPrompts, PromptScore, PromptScorer, evaluate_scores
from autoprompt_search.study import (
    ENQUEUED_MARKS,
    count_finished,
    enqueued,
    first_run_of_enqueued,
    heartbeat,
    retry_dead_trials,
    running_trials,
)
from autoprompt_search.verbalizers import Verbalizer

DRAWING_POLL_SECONDS = 0.05  # an earlier trial drawing its parameters is done within moments


class Evaluation(NamedTuple):
    """A prompt's scores on the scored few-shot examples: all of them (``selection``, what the
    objective reads) and dev alone; its fitted calibration; and its calibrated class probabilities
    ``[texts, classes]`` on the unlabelled texts (None without them)."""

    selection: PromptScore
    dev: PromptScore
    calibration: Calibration
    unlabelled: np.ndarray | None


class PromptSearch:
    """Scores trials of one study: one frozen model, one few-shot split, frozen pools.

    A trial is judged on all labelled few-shot examples, train and dev (64 for K=16 and two
    classes): on so few examples the selection noise of dev alone (32) dominates what the search
    can gain. Train texts also fit the ``prior`` calibration, without their labels.

    Train is one piece, rendered exactly as the label-word generator renders it, so its slot
    distributions are computed once for both; dev is scored in chunks so a pruner can stop early.
    """

    def __init__(self, scorer: PromptScorer, train: Dataset, dev: Dataset, pools: Pools, *,
                 objective: str = "accuracy", pruner: str = "median", chunks: int = 4, unlabelled: Dataset | None = None) -> None:
        self.scorer = scorer
        self.unlabelled = unlabelled
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
        self._prepared: dict[int, list[PreparedPrompts]] = {}
        self._prepared_unlabelled: dict[int, PreparedPrompts] = {}

    def use_pools(self, pools: Pools) -> None:
        """Continue with the pools of a new generation round (same templates, more word options)."""
        if pools.templates != self.pools.templates or pools.labels != self.pools.labels:
            raise ValueError("a new round may not change the templates or the labels")
        self.pools = pools

    def prepared(self, template_index: int) -> list[PreparedPrompts]:
        """The template rendered on each piece (train first); rendering is kept per template."""
        if template_index not in self._prepared:
            template = self.pools.templates[template_index]
            self._prepared[template_index] = [self.scorer.prepare(template, self._texts[a:b]) for a, b in self.pieces]
        return self._prepared[template_index]

    def prepared_unlabelled(self, template_index: int) -> PreparedPrompts | None:
        """The template rendered on the unlabelled texts (None without them)."""
        if self.unlabelled is None:
            return None
        if template_index not in self._prepared_unlabelled:
            texts = [example.fields for example in self.unlabelled.examples]
            self._prepared_unlabelled[template_index] = self.scorer.prepare(self.pools.templates[template_index], texts)
        return self._prepared_unlabelled[template_index]

    def unlabelled_scores(self, template_index: int, verbalizer: Verbalizer) -> torch.Tensor | None:
        """Raw class scores ``[texts, classes]`` on the unlabelled texts (None without them)."""
        prepared = self.prepared_unlabelled(template_index)
        if prepared is None:
            return None
        with self.scorer.progress_bar(len(prepared.prompts), "unlabelled texts"):  # a new template: minutes on a CPU
            return self.scorer.class_scores(prepared.prompts, self.scorer.word_ids(prepared.template, verbalizer))

    def calibration(self, method: str, template_index: int, verbalizer: Verbalizer,
                    unlabelled_scores: torch.Tensor | None = None) -> Calibration:
        """Fitted without labels: content-free inputs, or the mean class scores of the unlabelled
        texts (batch calibration; ``unlabelled_scores`` when already read), or of the train texts when there are none."""
        if method == "prior" and self.unlabelled is not None:
            if unlabelled_scores is None:
                unlabelled_scores = self.unlabelled_scores(template_index, verbalizer)
            return Calibration.prior_from(unlabelled_scores)
        word_ids = self.scorer.word_ids(self.pools.templates[template_index], verbalizer)
        return self.scorer.fit_calibration(method, self.prepared(template_index)[0], word_ids)

    def evaluate(self, params: dict[str, Any], trial: optuna.Trial | None = None, *, unlabelled_probabilities: bool = True) -> Evaluation:
        """A parameter set's scores and calibration, and (``unlabelled_probabilities``) its
        probabilities on the unlabelled texts; reports to ``trial``. The texts are read before
        the labelled examples only for ``prior``, which is fitted on them: a pruned trial of
        another calibration never pays for them."""
        template_index = params["template"]
        verbalizer = self.pools.verbalizer(params)
        unlabelled = self.unlabelled_scores(template_index, verbalizer) if params["calibration"] == "prior" else None
        calibration = self.calibration(params["calibration"], template_index, verbalizer, unlabelled)
        word_ids = self.scorer.word_ids(self.pools.templates[template_index], verbalizer)
        scores = []
        prunable = trial is not None and not enqueued(trial)
        for step, piece in enumerate(self.prepared(template_index)):
            _stop_if_interrupted()
            scores.append(calibration.apply(self.scorer.class_scores(piece.prompts, word_ids)))
            if trial is not None:
                self._report(trial, step, torch.cat(scores).numpy())
                if prunable and step < len(self.pieces) - 1 and trial.should_prune():
                    raise optuna.TrialPruned()
        everything = torch.cat(scores)
        dev_rows = slice(len(self.train), len(self.gold))
        if unlabelled is None and unlabelled_probabilities:
            unlabelled = self.unlabelled_scores(template_index, verbalizer)
        return Evaluation(evaluate_scores(everything, self.gold, calibration),
                          evaluate_scores(everything[dev_rows], self.gold[dev_rows], calibration), calibration,
                          None if unlabelled is None or not unlabelled_probabilities
                          else torch.softmax(calibration.apply(unlabelled), dim=1).numpy())

    def objective_function(self, trial: optuna.Trial) -> float:
        params = self.suggest(trial)
        evaluation = self.evaluate(params, trial)
        result = evaluation.selection
        trial.set_user_attr("accuracy", result.accuracy)
        trial.set_user_attr("macro_f1", result.macro_f1)
        trial.set_user_attr("mean_margin", result.mean_margin)
        trial.set_user_attr("dev_accuracy", evaluation.dev.accuracy)
        trial.set_user_attr("template_text", self.pools.templates[params["template"]].source)
        trial.set_user_attr("verbalizer", self.pools.verbalizer(params).to_dict())
        trial.set_user_attr("calibration_bias", list(evaluation.calibration.bias))
        if evaluation.unlabelled is not None:
            trial.set_user_attr("unlabelled_mi", mutual_information(evaluation.unlabelled))
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
            callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (), max_repeats: int = 200,
            shared: bool = False) -> None:
        """Run until the study holds ``planned`` finished distinct prompts and no enqueued trial
        waits (or until ``timeout``); the count is the study's, so several workers on one storage
        share the budget.

        TPE proposes the same categorical choices again and again once it has converged; a repeat
        is answered from the earlier trial without counting towards the budget, and the search
        stops after ``max_repeats`` repeats in a row (the sampler has nothing new to try).

        Ctrl-C stops the search at the next safe point (before a trial, or between the dev chunks
        of one), never inside a write to the storage; a second Ctrl-C stops it at once.

        On a ``shared`` storage, other workers' finished trials count as seen, a prompt another
        worker is scoring right now is waited for rather than scored twice, and the trials of
        workers that died are retried (:func:`study.retry_dead_trials`).
        """
        with _interrupt_between_steps():
            self._run(study, planned, timeout, callbacks, max_repeats, shared)

    def _run(self, study, planned, timeout, callbacks, max_repeats, shared) -> None:
        seen: dict[str, FrozenTrial] = {}  # a scored trial per prompt
        began, repeats = time.perf_counter(), 0
        while True:
            trials = study.get_trials(deepcopy=False)  # one read of the storage per trial
            if shared:
                retry_dead_trials(study, trials)
            seen.update((self.pools.choice_key(t.params), t) for t in trials
                        if t.state == TrialState.COMPLETE and "repeat_of" not in t.user_attrs)
            # enqueued trials (baselines, proposals, retries of cut-off ones) are run even past the budget
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if (planned is not None and count_finished(trials) >= planned and not waiting) or repeats >= max_repeats:
                break
            _stop_if_interrupted()
            if timeout is not None and time.perf_counter() - began > timeout:
                break
            trial = study.ask()
            try:
                with heartbeat(study, trial):
                    frozen, repeated = self._settle(study, trial, seen, shared)
            except UpdateFinishedTrialError:  # its worker was taken for dead and the trial retried elsewhere
                continue
            repeats = repeats + 1 if repeated else 0
            for callback in callbacks:
                callback(study, frozen)

    def _settle(self, study: optuna.Study, trial: optuna.Trial, seen: dict[str, FrozenTrial], shared: bool) -> tuple[FrozenTrial, bool]:
        """Score one asked trial, or answer it from an earlier trial of the same prompt; returns the
        finished trial and whether it was such a repeat."""
        params = self.suggest(trial)
        key = self.pools.choice_key(params)
        answerable = not first_run_of_enqueued(trial)
        if shared and answerable and key not in seen:
            twin = _wait_for_twin(study, trial, self.pools.choice_key, params)
            if twin is not None:
                seen[key] = twin
        if key in seen and answerable:
            earlier = seen[key]
            for name, value in earlier.user_attrs.items():
                trial.set_user_attr(name, value)
            trial.set_user_attr("repeat_of", earlier.number)
            return study.tell(trial, earlier.value), True
        try:
            value = self.objective_function(trial)
        except optuna.TrialPruned:
            return study.tell(trial, state=TrialState.PRUNED), False
        except (KeyboardInterrupt, UserError):
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(params, user_attrs={k: v for k, v in trial.user_attrs.items() if k in ENQUEUED_MARKS})
            raise
        except Exception:  # a bug or a resource error: failed for good, so that no other worker retries it and fails too
            study.tell(trial, state=TrialState.FAIL)
            raise
        frozen = study.tell(trial, value)
        seen[key] = frozen
        return frozen, False


def _wait_for_twin(study: optuna.Study, trial: optuna.Trial, choice_key: Callable[[dict], str], params: dict[str, Any],
                   poll: float = 1.0) -> FrozenTrial | None:
    """Wait while another worker scores the same prompt in an earlier trial (of several trials of
    one prompt the earliest is scored, the later ones wait for it); then the study's completed trial
    of that prompt, if any (None when there is none: no twin, or it ended otherwise: pruned, or
    failed with its worker). An earlier trial still drawing its parameters is waited for too: it may
    turn out to be the same prompt."""
    def key_of(other: FrozenTrial) -> str | None:
        try:
            return choice_key(other.params)
        except (KeyError, IndexError):  # still drawing its parameters
            return None

    key, twins = choice_key(params), set()
    while True:
        earlier = {t.number: key_of(t) for t in running_trials(study) if t.number < trial.number}
        running_twins = {number for number, other in earlier.items() if other == key}
        twins |= running_twins
        if not running_twins and None not in earlier.values():
            break
        _stop_if_interrupted()
        time.sleep(poll if running_twins else DRAWING_POLL_SECONDS)
        retry_dead_trials(study)
    # A twin may also have completed between this worker's last read of the study and its ask.
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "repeat_of" not in t.user_attrs and (t.number in twins or key_of(t) == key)]
    return done[0] if done else None


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
