"""``train``: from a search's prompt to a trained model, written as files other tools load unchanged.

Output folder::

    training.json          what was trained from what, the dev curve, the chosen epoch, train/dev/test
                           scores, timings and peak memory, provenance (written last: the run is done)
    prompt.json            the trained prompt (prompt methods): ``autoprompt_search.load(folder)``
    classifier.json        the classification-head model (``head``): ``autoprompt_search.load(folder)``
    model/                 all-weights and head training: a safetensors model folder (``from_pretrained``)
    adapter/               LoRA and soft prompts: a PEFT adapter folder (``PeftModel.from_pretrained``)
    test_predictions.csv   per test example: gold, prediction and probabilities
    checkpoint/            while training: the last epoch, from which ``--resume`` continues
                           (``checkpoint/refit/``: the same for the refit on train+dev; when the refit
                           begins, the selection's tensors are deleted and its state kept)
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from autoprompt_search.arguments import positive_number, whole_number
from autoprompt_search.backends import Backend, checked_device, load_backend
from autoprompt_search.data import checked_seed
from autoprompt_search.errors import UserError
from autoprompt_search.export import write_prompt
from autoprompt_search.fileio import atomic_write_json, unwritable_reason
from autoprompt_search.logs import Log
from autoprompt_search.predictor import CHECKPOINT, CLASSIFIER_FORMAT, TRAINED_CLASSIFIER, TRAINED_PROMPT, TRAINING, load
from autoprompt_search.prompt import ModelInfo
from autoprompt_search.provenance import stamp
from autoprompt_search.run_folder import RunFolder
from autoprompt_search.scoring import PromptScore, evaluate_scores
from autoprompt_search.training.checkpoint import STATE, Checkpoint
from autoprompt_search.training.loop import FitConfig, LabelledExamples, fit
from autoprompt_search.training.methods import (
    DEFAULT_LEARNING_RATES,
    METHODS,
    FullFineTuning,
    HeadFineTuning,
    LoraTuning,
    Method,
    PromptMethod,
    SoftPromptTuning,
)
from autoprompt_search.training.source import TrainSource, read_source

REFIT = "refit"  # the refit's own checkpoint, inside the selection run's
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 8
# The search chose the starting prompt on train+dev, so the untrained prompt's dev accuracy is in-sample.
EPOCH_ZERO_NOTE = ("epoch 0 is the untrained prompt, which the search chose on these dev examples (with the train split): "
                   "its dev accuracy is in-sample and flatters it against the trained epochs")
EPOCH_ZERO_CAPPED_NOTE = (EPOCH_ZERO_NOTE + "; it competed with the lower of that and the search's held-out estimate "
                          "for its best prompt ({cap:.4f}: the search's choice repeated on folds, scored on held-out dev folds, "
                          "with the search's calibration): the curve's selection_accuracy")
SOFT_RANDOM_EPOCH_ZERO_NOTE = "epoch 0 is the prompt behind randomly initialised virtual tokens, which no search chose"


@dataclass(frozen=True)
class TrainResult:
    """A finished training run: its folder, the chosen epoch and its scores (from the saved files)."""

    folder: Path
    method: str
    best_epoch: int
    scores: dict[str, Any]  # train, dev, test: accuracy, macro_f1, n
    curve: list[dict[str, Any]]
    timings: dict[str, float]
    refit_curve: list[dict[str, Any]] | None = None  # trained again on train+dev to the chosen epoch: dev scores in-sample
    epoch_zero_note: str | None = None  # what the untrained model's dev accuracy is worth (training.json's)


def check_options(method: str, epochs: Any, learning_rate: Any, batch_size: Any, seed: Any, init: str,
                  member: Any = None) -> tuple[int, float, int, int | None, int | None]:
    """The options as plain numbers (epochs, learning rate, batch size, seed, member), or a user error naming the first bad one."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}", option="method")
    if init != "text" and method != "soft":
        raise UserError(f"init {init!r} is for soft prompts (method soft), not method {method}", option="init")
    if member is not None and method == "head":
        raise UserError("member picks a prompt to train; method head trains a classification head on the bare text", option="member")
    seed = None if seed is None else checked_seed(seed)
    epochs = whole_number(epochs, "epochs", 1)
    learning_rate = positive_number(learning_rate, "learning_rate", most=1)
    batch_size = whole_number(batch_size, "batch_size", 1)
    member = None if member is None else whole_number(member, "member", 1)
    return epochs, learning_rate, batch_size, seed, member


def _path_from_output(source: str, out: Path) -> dict[str, str]:
    """Where the source lies seen from the output folder, so that a tree holding both can move
    (``combine`` falls back on it when the recorded absolute path is gone); nothing across drives."""
    try:
        return {"path_from_output": Path(os.path.relpath(source, out.resolve())).as_posix()}
    except ValueError:
        return {}


def check_output(out: Path, resume: bool) -> None:
    """Before any work: the output folder can be written and holds no other (or finished) run."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder", option="out")
    if reason := unwritable_reason(out):
        raise UserError(f"{out}: {reason}", option="out")
    if (out / TRAINING).is_file():
        raise UserError(f"{out}: holds a finished training run; choose another output folder", option="out")
    started = out.is_dir() and any(out.iterdir())
    if started and not resume:
        raise UserError(f"output folder {out} exists and is not empty: resume it, or choose another output folder",
                        alternatives=("resume", "out"))
    if started and not (out / CHECKPOINT / STATE).is_file():
        raise UserError(f"output folder {out} holds no training checkpoint to resume; choose another output folder", option="out")


def train(source: str | Path, method: str = "full", *, out: str | Path, epochs: int = DEFAULT_EPOCHS,
          learning_rate: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE, seed: int | None = None, start: str = "best",
          member: int | None = None, init: str = "text", refit: bool = False, resume: bool = False, device: str = "auto",
          eval_batch_size: int = 32, records: Any = None, space: Any = None, log: Log = print) -> TrainResult:
    """Train the prompt of ``source`` (a run folder or a prompt file inside one) with ``method`` on the
    run's few-shot train split, keep the epoch best on dev, write the outputs under ``out`` and score
    them, loaded back from the files, on train, dev and the run's held-out test split. ``member``: train
    the ensemble's N-th distinct prompt in the search's ranking instead (see :func:`read_source`). ``refit``: then
    train again from the start on train+dev, stopping at the chosen epoch on the same schedule, and
    keep that model (its dev score is then in-sample). A run whose examples were given in memory
    needs them again (``records``); ``space`` replaces the data the run recorded (:meth:`RunFolder.splits`)."""
    began = time.perf_counter()
    learning_rate = DEFAULT_LEARNING_RATES.get(method, 0.0) if learning_rate is None else learning_rate
    epochs, learning_rate, batch_size, seed, member = check_options(method, epochs, learning_rate, batch_size, seed, init, member)
    eval_batch_size = whole_number(eval_batch_size, "eval_batch_size", 1)
    checked_device(device)  # before any work, and not taken for a missing model by _load_model
    out = Path(out)
    check_output(out, resume)
    src = read_source(source, start, member=member, records=records, space=space)
    seed = src.splits.seed if seed is None else seed
    selection = Checkpoint(out / CHECKPOINT)
    cap = epoch_zero_cap(src, method, init)
    saved = selection.saved_identity() if resume else None
    if saved is not None and "epoch_zero_cap" not in saved:
        cap = None  # a checkpoint made before epoch 0 was capped (or without a cap): it finishes as it began
    identity = {"method": method, "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "seed": seed,
                "init": init if method == "soft" else None, "source": src.described, "model": src.model.weights_sha256,
                "splits": src.splits.describe()["splits"], **({"refit": True} if refit else {}),
                **({"epoch_zero_cap": cap} if cap is not None else {})}
    train_examples, dev_examples = _labelled(src.splits.train), _labelled(src.splits.dev)
    config = FitConfig(epochs, learning_rate, batch_size, seed, epoch_zero_cap=cap)
    state = selection.read(identity) if resume else None
    if state is None or not state.released:
        trainer = _fresh_method(method, src, device, eval_batch_size, seed=seed, init=init)
        out.mkdir(parents=True, exist_ok=True)
        state = fit(trainer, train_examples, dev_examples, config, selection, identity, eval_batch_size=eval_batch_size, log=log)
    elif refit and state.best_epoch > 0:  # as the identity check implies: only a refit releases the selection
        log(f"train: the selection on dev is done (epoch {state.best_epoch} kept); resuming the refit")
    else:
        raise UserError(f"{out / CHECKPOINT / STATE}: the selection's model was deleted for a refit that is not asked for; "
                        "train into a new output folder", option="out")
    refitted = None
    if refit and state.best_epoch > 0:
        trainer = None  # one model in memory: the refit starts again from the source's weights
        selection.release(state)  # and its model on disk is not needed either (GBs with all weights)
        trainer = _fresh_method(method, src, device, eval_batch_size, seed=seed, init=init)
        both = LabelledExamples(train_examples.fields + dev_examples.fields, train_examples.gold + dev_examples.gold)
        log(f"train: refit on train+dev ({len(both)} examples) for the {state.best_epoch} epoch(s) chosen on dev")
        refitted = fit(trainer, both, None, replace(config, stop_after=state.best_epoch), Checkpoint(out / CHECKPOINT / REFIT),
                       {**identity, "refit_epochs": state.best_epoch}, eval_batch_size=eval_batch_size, log=log)
    trained_seconds = time.perf_counter() - began
    saved = trainer.save(out)
    word_ids = trainer.word_token_ids() if isinstance(trainer, PromptMethod) else None
    del trainer  # the outputs are scored as a user loads them, from the files
    scores_began = time.perf_counter()
    scores, test_scored = _write_and_score(out, src, saved, word_ids, device=device, batch_size=eval_batch_size)
    timings = {"train_seconds": trained_seconds, "score_seconds": time.perf_counter() - scores_began,
               "total_seconds": time.perf_counter() - began,
               "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    RunFolder(out).write_predictions(src.splits.test, _labelled(src.splits.test).gold, {"trained": test_scored})
    zero_note = epoch_zero_note(method, init, cap)
    atomic_write_json(out / TRAINING, {
        "method": method, "options": identity, "source": {**src.described, **_path_from_output(src.described["path"], out)},
        "model": {**src.model.__dict__, "precision": "float32"},  # _load_model's, whatever precision the search ran in
        "dataset": src.splits.describe(), "curve": state.curve, "best_epoch": state.best_epoch, "scores": scores,
        "refit": _refit_record(refit, state.best_epoch, refitted, len(train_examples) + len(dev_examples)),
        "frozen": src.frozen_scores, "frozen_precision": src.model.precision,
        "epoch_zero_note": zero_note,
        "saved": {k: v for k, v in saved.items() if k != "adapter"}, "timings": timings,
        "machine_note": "CPU threads: " + str(torch.get_num_threads()), "provenance": stamp()})
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    log(f"train: {method} chose epoch {state.best_epoch} (dev {state.best['dev_accuracy']:.4f})"
        f"{'; refit on train+dev' if refitted else ''}; test accuracy {scores['test']['accuracy']:.4f} on {scores['test']['n']} "
        f"examples -> {out}")
    return TrainResult(out, method, state.best_epoch, scores, state.curve, timings, refitted.curve if refitted else None, zero_note)


def epoch_zero_cap(src: TrainSource, method: str, init: str) -> float | None:
    """The most epoch 0 may compete with: the search's held-out estimate for its best prompt, for
    any prompt it chose on these dev examples (its best, or an ensemble member). None for a manual
    start or a run from before estimates (no estimate), and for a new head or random virtual tokens
    (no prompt the search chose)."""
    return src.held_out_estimate if _search_chose_epoch_zero(method, init) else None


def epoch_zero_note(method: str, init: str, cap: float | None = None) -> str | None:
    """What epoch 0's dev accuracy is worth: in-sample for a prompt the search chose; None for a new head."""
    if method == "head":
        return None
    if not _search_chose_epoch_zero(method, init):
        return SOFT_RANDOM_EPOCH_ZERO_NOTE
    return EPOCH_ZERO_NOTE if cap is None else EPOCH_ZERO_CAPPED_NOTE.format(cap=cap)


def _search_chose_epoch_zero(method: str, init: str) -> bool:
    """Whether epoch 0 is the prompt the search chose: not a new head, not random virtual tokens."""
    return method != "head" and not (method == "soft" and init == "random")


def _fresh_method(method: str, src: TrainSource, device: str, eval_batch_size: int, *, seed: int, init: str) -> Method:
    """The method on a freshly loaded model (the same random start under the same seed)."""
    backend = _load_model(src, device, eval_batch_size)
    torch.manual_seed(seed)
    return _method(method, backend, src, seed=seed, init=init)


def _refit_record(asked: bool, chosen_epoch: int, refitted: Any, examples: int) -> dict[str, Any] | None:
    if not asked:
        return None
    if refitted is None:
        return {"done": False, "why": "the untrained prompt (epoch 0) was kept: there is nothing to refit"}
    return {"done": True, "epochs": chosen_epoch, "examples": examples, "curve": refitted.curve,
            "dev_note": "dev is part of the refit's training data: its dev score is in-sample; test stays held out"}


def _load_model(src: TrainSource, device: str, batch_size: int) -> Backend:
    """The model the prompt was found on, located as :func:`load` does it, its weights hash checked
    before anything in its folder is opened."""
    from autoprompt_search.assets import model_weights_hash
    from autoprompt_search.predictor import recorded_model_folder

    model, prompt_file = src.model, src.described["prompt_file"]
    unavailable = f"{prompt_file}: model: the model the prompt was found on is not available"
    try:
        folder = recorded_model_folder(Path(prompt_file), model, prompt_file)
    except UserError as error:
        raise UserError(f"{unavailable} ({error})") from None
    if model_weights_hash(folder) != model.weights_sha256:
        raise UserError(f"{prompt_file}: model: the weights of {folder} differ from the ones the search used")
    try:
        return load_backend(folder, kind=model.kind, device=device, batch_size=batch_size, max_length=model.max_length)
    except UserError as error:
        raise UserError(f"{unavailable} ({error})") from None


def _method(method: str, backend: Backend, src: TrainSource, *, seed: int, init: str) -> Method:
    if method == "full":
        return FullFineTuning(backend, src.spec)
    if method == "lora":
        return LoraTuning(backend, src.spec, src.model)
    if method == "soft":
        return SoftPromptTuning(backend, src.spec, src.model, init=init, manual=src.manual_spec)
    return HeadFineTuning(backend, src.spec.labels, src.spec.fields, seed=seed)


def _labelled(dataset) -> LabelledExamples:
    return LabelledExamples([e.fields for e in dataset.examples], [dataset.labels.index(e.label) for e in dataset.examples])


def _write_and_score(out: Path, src: TrainSource, saved: dict[str, Any], word_ids: dict[str, list[list[int]]] | None, *,
                     device: str, batch_size: int) -> tuple[dict[str, Any], PromptScore]:
    """Write the prompt file (or the classifier file of ``head``), load it back as a user would,
    score it on every split, and record the scores in the file."""
    dataset, provenance = src.folder.manifest()["dataset"], stamp()

    def write(scores: dict[str, Any]) -> None:
        if word_ids is None:
            atomic_write_json(out / TRAINED_CLASSIFIER, {
                "format": CLASSIFIER_FORMAT, "labels": list(src.spec.labels), "fields": list(src.spec.fields),
                "max_length": src.model.max_length, "batch_size": batch_size,
                "model": {"path": saved["path"], "weights_sha256": saved["weights_sha256"], "base": src.model.name},
                "scores": scores, "dataset": dataset, "provenance": provenance})
        else:
            model = ModelInfo(src.model.name, src.model.kind, saved["weights_sha256"], saved["path"], src.model.max_length,
                              saved["adapter"])
            write_prompt(out / TRAINED_PROMPT, src.spec, model, scores=scores, dataset=dataset, provenance=provenance,
                         word_token_ids=word_ids, batch_size=batch_size)

    write({})
    predictor = load(out, device=device, cache=False)
    scores: dict[str, Any] = {}
    scored: dict[str, PromptScore] = {}
    for name, split in (("train", src.splits.train), ("dev", src.splits.dev), ("test", src.splits.test)):
        examples = _labelled(split)
        with tqdm(total=len(examples), desc=f"score {name}", unit="example", leave=False) as bar:
            reporting = predictor.scorer.reporting(bar.update) if hasattr(predictor, "scorer") else nullcontext()
            with reporting:  # one call, as a user makes it: the same batches, so the same figures
                probabilities = predictor.predict_proba(examples.fields)
        scored[name] = evaluate_scores(torch.log(torch.from_numpy(probabilities)), examples.gold)
        scores[name] = scored[name].summary()
    write(scores)
    return scores, scored["test"]
