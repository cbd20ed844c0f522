"""``train`` on tiny models: the training objective is the search's own scoring, every method writes
files the standard libraries open and that ``load`` turns into the reported figures, a killed run
continues to the same result, and each user mistake is one clear error with nothing written."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
import weakref
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprompt_search import load
from autoprompt_search.backends import load_backend
from autoprompt_search.cache import CODE_ERROR
from autoprompt_search.cli.main import main
from autoprompt_search.errors import UserError
from autoprompt_search.pipeline import run_search
from autoprompt_search.prompt import PromptSpec
from autoprompt_search.run_folder import BEST, PREDICTIONS
from autoprompt_search.scoring import PromptScorer, trainable_class_scores
from autoprompt_search.templates import Template
from autoprompt_search.testing import MULTI_TOKEN_WORDS, TINY_CORPUS, write_tiny_dataset
from autoprompt_search.training import checkpoint as checkpoint_module
from autoprompt_search.training import train
from autoprompt_search.training.run import TRAINING
from autoprompt_search.training.source import _as_trained, read_source
from autoprompt_search.verbalizers import Verbalizer

try:
    import peft
except ImportError:  # the [train] extra; make and CI install it, so there a missing PEFT fails
    if os.environ.get("CI"):
        raise
    pytest.skip("PEFT is not installed (pip install 'autoprompt-search[train]')", allow_module_level=True)

SPACE = """\
name: tiny
dataset: {{path: tiny.csv, text_fields: [text], label_field: label, labels: [negative, positive], test_fraction: 0.3}}
model: {model}
few_shot: {{k: 4, seeds: [13]}}
templates: {{seeds: ["Review: {{text}} It was {{mask}}", "{{text}} Overall it was {{mask}}"]}}
verbalizers: {{seeds: [{{negative: [bad, awful], positive: [good, {multi}]}}]}}
generators: {{label_words: {{enabled: false}}}}
calibration: [none, prior]
budget: {{trials: 2}}
pruner: {{type: none, chunks: 1}}
ensemble: {{size: 2}}
"""
FAST = {"epochs": 2, "learning_rate": 1e-3, "batch_size": 4, "eval_batch_size": 8}


def quiet(message: str) -> None:
    """A log that drops the messages."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("training")
    write_tiny_dataset(folder / "tiny.csv", copies=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOPROMPT_SEARCH_CACHE", str(folder / "cache"))
        yield folder


def _run(workspace: Path, model: Path, name: str) -> Path:
    space = workspace / f"{name}.yaml"
    space.write_text(SPACE.format(model=model, multi=MULTI_TOKEN_WORDS[0]), encoding="utf-8")
    return run_search(space, seed=13, out=workspace / "runs" / name, batch_size=8, log=quiet).folder.path


@pytest.fixture(scope="module")
def causal_run(workspace: Path, tiny_causal_lm: Path) -> Path:
    return _run(workspace, tiny_causal_lm, "causal")


@pytest.fixture(scope="module")
def masked_run(workspace: Path, tiny_masked_lm: Path) -> Path:
    return _run(workspace, tiny_masked_lm, "masked")


# -- the objective is the search's scoring ------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny_causal_lm", "tiny_masked_lm"])
@pytest.mark.parametrize("soft", [False, True])
def test_trainable_scores_equal_the_search_scores(model: str, soft: bool, request: pytest.FixtureRequest) -> None:
    """Several words per label, one of several tokens: the training loss reads the same class scores."""
    backend = load_backend(request.getfixturevalue(model), device="cpu", batch_size=4)
    if soft:
        backend.soft_prompt = torch.randn(3, backend.model.get_input_embeddings().weight.shape[1]) * 0.1
    scorer = PromptScorer(backend)
    template = Template.parse("Review: {text} It was {mask}")
    verbalizer = Verbalizer.parse({"negative": ["bad", "awful"], "positive": ["good", MULTI_TOKEN_WORDS[0]]}, ["negative", "positive"])
    word_ids = scorer.word_ids(template, verbalizer)
    assert max(len(word) for words in word_ids for word in words) > 1
    prompts = scorer.render(template, [{"text": text} for text in TINY_CORPUS[:6]])
    expected = scorer.class_scores(prompts, word_ids)
    with torch.no_grad():
        got = trainable_class_scores(backend, prompts, word_ids)
    # The search reads the cache's codes: each token within CODE_ERROR of the model's log-probability.
    bound = max(len(word) for words in word_ids for word in words) * CODE_ERROR + 1e-5
    torch.testing.assert_close(got, expected, atol=bound, rtol=0)


def test_soft_prompt_equals_peft_forward(workspace: Path, tiny_causal_lm: Path) -> None:
    """Our scoring path with a saved soft prompt gives the logits PEFT's own model gives."""
    out = workspace / "peft-forward"
    backend = load_backend(tiny_causal_lm, device="cpu")
    config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, prompt_tuning_init="RANDOM")
    wrapped = peft.get_peft_model(backend.model, config)
    with torch.no_grad():
        wrapped.prompt_encoder["default"].embedding.weight.mul_(0.05)
    wrapped.save_pretrained(out)
    from transformers import AutoModelForCausalLM

    theirs = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_causal_lm), out).eval()
    ours = load_backend(tiny_causal_lm, device="cpu")
    from autoprompt_search.adapters import apply_adapter

    apply_adapter(ours, out, "prompt_tuning")
    prompt = PromptScorer(ours).render(Template.parse("{text} It was {mask}"), [{"text": TINY_CORPUS[0]}])
    with torch.no_grad():
        expected = theirs(input_ids=torch.tensor([list(prompt[0].before)])).logits[0, -1]
        got = ours.forward_slot_logits(ours.assemble(prompt))[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_exported_peft_form_is_accepted_by_peft_as_it_is(causal_run: Path, tiny_causal_lm: Path, tmp_path: Path) -> None:
    """best.json's exports.peft names the tokenizer portably (a hub id, resolved here from a Hugging
    Face cache laid out as the hub leaves it), and PEFT builds the prompt-tuning model from it unchanged."""
    from autoprompt_search.export import peft_form
    from autoprompt_search.prompt_file import read

    file = read(causal_run / BEST)
    form = peft_form(file.members[0].spec, type(file.model)("tiny-org/tiny-causal", "causal", file.model.weights_sha256),
                     load_backend(tiny_causal_lm, device="cpu").tokenizer)
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-causal" / "snapshots" / "0"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_causal_lm / name, snapshot / name)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0")
    (tmp_path / "form.json").write_text(json.dumps(form))
    # A fresh process: the hub's cache folder is read when huggingface_hub is first imported.
    check = f"""
import json, torch, peft
from transformers import AutoModelForCausalLM, AutoTokenizer
form = json.load(open({str(tmp_path / "form.json")!r}))
config = peft.PromptTuningConfig(**{{key: value for key, value in form.items() if key != "note"}})
model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained({str(tiny_causal_lm)!r}), config)
ids = AutoTokenizer.from_pretrained({str(tiny_causal_lm)!r})(form["prompt_tuning_init_text"])["input_ids"]
torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight, model.get_input_embeddings()(torch.tensor(ids)))
print("accepted", len(ids))
"""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["accepted", str(form["num_virtual_tokens"])]


# -- every method, its files and its figures ------------------------------------------------------
@pytest.mark.parametrize("method", ["full", "lora", "soft", "head"])
@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_method_outputs_load_and_reproduce_the_figures(method: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    run = request.getfixturevalue(f"{kind}_run")
    out = tmp_path / "out"
    result = train(run, method, out=out, log=quiet, **FAST)
    recorded = json.loads((out / TRAINING).read_text())
    assert recorded["scores"] == result.scores and recorded["best_epoch"] == result.best_epoch
    assert [row["epoch"] for row in recorded["curve"]] == [0, 1, 2] and not (out / "checkpoint").exists()
    assert recorded["source"]["calibration_dropped"] in ("none", "prior")

    predictor = load(out, device="cpu")
    with open(out / PREDICTIONS, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    texts = [row["text"] for row in rows]
    probabilities = predictor.predict_proba(texts)
    saved = np.array([[float(row[f"trained_p_{label}"]) for label in predictor.classes_] for row in rows])
    np.testing.assert_allclose(probabilities, saved, rtol=1e-5, atol=1e-6)
    gold = [row["gold"] for row in rows]
    assert predictor.score(texts, gold) == pytest.approx(result.scores["test"]["accuracy"], abs=0)

    model_folder = json.loads((out / BEST.replace("best", "prompt")).read_text())["model"] if method != "head" else None
    if method in ("full", "head"):
        from transformers import AutoConfig

        assert (out / "model" / "model.safetensors").is_file() and AutoConfig.from_pretrained(out / "model")
    else:
        config = json.loads((out / "adapter" / "adapter_config.json").read_text())
        recorded_model = json.loads((run / "manifest.json").read_text())["model"]
        assert config["base_model_name_or_path"] == recorded_model["name"]  # the name the search was given, not a cache folder
        assert f"base_model: {recorded_model['name']}" in (out / "adapter" / "README.md").read_text()
        assert model_folder["adapter"]["method"] == {"lora": "lora", "soft": "prompt_tuning"}[method]
        base = load_backend(json.loads((run / "manifest.json").read_text())["model"]["path"], device="cpu").model
        opened = peft.PeftModel.from_pretrained(base, out / "adapter")  # the standard PEFT loader opens it as it is
        assert opened.peft_config["default"].peft_type.value == {"lora": "LORA", "soft": "PROMPT_TUNING"}[method]


def test_full_fine_tuning_learns_the_train_split(causal_run: Path, tmp_path: Path) -> None:
    result = train(causal_run, "full", out=tmp_path / "out", epochs=6, learning_rate=3e-3, batch_size=4, log=quiet)
    losses = [row["train_loss"] for row in result.curve[1:]]
    assert losses[-1] < losses[0]
    assert result.scores["train"]["accuracy"] >= 0.75


@pytest.mark.parametrize(("estimate", "kept"), [(0.7, 1), (0.95, 0), (None, 0)])
def test_the_untrained_prompt_competes_with_at_most_the_searchs_held_out_estimate(
        causal_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, estimate: float | None, kept: int) -> None:
    """Epoch 0's dev accuracy is in-sample (the search chose the prompt on dev): it competes with the
    lower of that and the search's held-out estimate, so an estimate below the trained epoch's dev
    accuracy lets training win; an estimate above epoch 0's, or none, changes nothing."""
    from autoprompt_search.training import loop
    from autoprompt_search.training import run as training_run

    read = training_run.read_source
    monkeypatch.setattr(training_run, "read_source", lambda *a, **k: replace(read(*a, **k), held_out_estimate=estimate))
    scripted = iter([{"dev_accuracy": 0.9, "dev_loss": 0.3}, {"dev_accuracy": 0.8, "dev_loss": 0.4}])  # epoch 0, epoch 1
    monkeypatch.setattr(loop, "_dev_row", lambda *a: next(scripted))
    result = train(causal_run, "full", out=tmp_path / "out", epochs=1, batch_size=4, log=quiet)
    assert result.best_epoch == kept
    recorded = json.loads((tmp_path / "out" / "training.json").read_text())
    if estimate is None:
        assert "selection_accuracy" not in result.curve[0] and "epoch_zero_cap" not in recorded["options"]
        assert "held-out estimate" not in recorded["epoch_zero_note"]
    else:
        assert result.curve[0]["selection_accuracy"] == min(0.9, estimate) and recorded["options"]["epoch_zero_cap"] == estimate
        assert f"({estimate:.4f}" in recorded["epoch_zero_note"]


def test_numpy_numbers_are_taken_and_recorded_as_plain_numbers(causal_run: Path, tmp_path: Path) -> None:
    result = train(causal_run, "full", out=tmp_path / "out", epochs=np.int64(1), learning_rate=np.float32(0.001),
                   batch_size=np.int32(4), seed=np.uint32(7), log=quiet)
    options = json.loads((tmp_path / "out" / "training.json").read_text())["options"]
    assert (options["epochs"], options["batch_size"], options["seed"]) == (1, 4, 7) and len(result.curve) == 2
    assert options["learning_rate"] == pytest.approx(0.001)


def test_the_cap_is_the_estimate_the_search_wrote_for_a_prompt_it_chose(causal_run: Path) -> None:
    from autoprompt_search.training.run import epoch_zero_cap

    written = json.loads((causal_run / "best.json").read_text())["scores"]["estimate"]["accuracy"]
    source = read_source(causal_run)
    assert source.held_out_estimate == written
    assert epoch_zero_cap(source, "full", "text") == epoch_zero_cap(source, "soft", "manual") == written
    assert epoch_zero_cap(source, "head", "text") is None and epoch_zero_cap(source, "soft", "random") is None
    assert read_source(causal_run, "manual").held_out_estimate is None  # the search made no estimate of it


def test_member_trains_the_ensembles_nth_distinct_prompt_capped_by_the_searchs_estimate(causal_run: Path) -> None:
    """``member`` picks the ensemble's N-th distinct prompt in the search's ranking (from a run folder,
    its ensemble.json): members that differ only in calibration are one prompt to train. Every prompt
    the search chose competes with at most its estimate."""
    ensemble = json.loads((causal_run / "ensemble.json").read_text())["members"]
    written = json.loads((causal_run / "best.json").read_text())["scores"]["estimate"]["accuracy"]
    prompts = [(row["prompt"]["template"], row["prompt"]["verbalizer"]) for row in ensemble]
    distinct = [index for index, prompt in enumerate(prompts) if prompt not in prompts[:index]]  # first of each prompt
    assert isinstance(written, float)
    assert 2 <= len(distinct) < len(ensemble)  # the fixture's ensemble repeats prompts under another calibration
    assert distinct != list(range(len(distinct)))  # so counting members instead would pick another prompt
    for number, index in enumerate(distinct, start=1):
        for given in (causal_run, causal_run / "ensemble.json"):
            source = read_source(given, member=number)
            assert source.spec.template.source == ensemble[index]["prompt"]["template"]
            assert source.spec.verbalizer == ensemble[index]["prompt"]["verbalizer"]
            assert source.described["start"] == f"ensemble prompt {number} of {len(distinct)} distinct, asked for (members[{index}].prompt)"
            assert source.frozen_scores["source_prompt_test"] == ensemble[index]["scores"]["test"]
            assert source.held_out_estimate == written
    largest = max(range(len(ensemble)), key=lambda i: ensemble[i]["weight"])
    default = read_source(causal_run / "ensemble.json")
    assert default.spec.template.source == ensemble[largest]["prompt"]["template"]
    assert default.described["start"] == f"ensemble member of largest weight (members[{largest}].prompt)"  # as before --member
    assert default.held_out_estimate == written


def test_members_whose_label_words_differ_only_in_order_are_one_prompt(causal_run: Path, tmp_path: Path) -> None:
    """A label's words are averaged, so their order does not make another prompt to train."""
    run = tmp_path / "run"
    shutil.copytree(causal_run, run)
    document = json.loads((run / "ensemble.json").read_text())
    first = document["members"][0]["prompt"]
    first["verbalizer"] = {"negative": ["bad", "terrible"], "positive": ["good", "great"]}
    reordered = copy.deepcopy(document["members"][0])
    reordered["prompt"]["verbalizer"] = {"negative": ["terrible", "bad"], "positive": ["great", "good"]}
    document["members"].insert(1, reordered)
    (run / "ensemble.json").write_text(json.dumps(document))
    later = [row["prompt"] for row in document["members"][2:] if (row["prompt"]["template"], row["prompt"]["verbalizer"])
             != (first["template"], first["verbalizer"])]
    assert read_source(run, member=1).spec.verbalizer == first["verbalizer"]
    second = read_source(run, member=2)
    assert (second.spec.template.source, second.spec.verbalizer) == (later[0]["template"], later[0]["verbalizer"])
    triggered = [PromptSpec("{text} [T] It was {mask}", {"negative": ["bad"], "positive": ["good"]}, ("negative", "positive"),
                            ("text",), trigger_ids=ids) for ids in ((11,), (12,), (11,))]
    assert [_as_trained(spec) for spec in triggered].count(_as_trained(triggered[0])) == 2  # trigger tokens tell prompts apart


@pytest.mark.parametrize(("source", "options", "message"), [
    ("ensemble.json", {"member": 99}, r"choose a member from 1 to \d: the ensemble's \d members are \d distinct"),
    ("ensemble.json", {"member": 0}, "member must be a whole number of at least 1"),
    ("ensemble.json", {"member": True}, "member must be a whole number of at least 1"),
    ("best.json", {"member": 1}, "holds a single prompt"),
    ("", {"member": 1, "start": "manual"}, "not the manual start"),
    ("", {"member": 2, "method": "head"}, "method head trains a classification head"),
])
def test_bad_members_are_refused(causal_run: Path, tmp_path: Path, source: str, options: dict, message: str) -> None:
    method = options.pop("method", "full")
    with pytest.raises(UserError, match=message) as raised:
        train(causal_run / source, method, out=tmp_path / "out", log=quiet, **options)
    assert raised.value.option == "member" and not (tmp_path / "out").exists()


def test_member_of_a_run_without_an_ensemble_is_refused(causal_run: Path, tmp_path: Path) -> None:
    run = _copy_run(causal_run, tmp_path)
    (run / "ensemble.json").unlink()
    with pytest.raises(UserError, match="ensemble.json missing") as raised:
        train(run, "full", member=1, out=tmp_path / "out", log=quiet)
    assert raised.value.option == "member" and not (tmp_path / "out").exists()


def test_soft_prompt_inits(causal_run: Path, tiny_causal_lm: Path, tmp_path: Path) -> None:
    """text: the virtual tokens start as the embeddings of the prompt's own words (PEFT's TEXT init);
    manual: of the best manual prompt's words; random: as many tokens, not those embeddings."""
    from safetensors.torch import load_file

    from autoprompt_search.adapters import ADAPTER_WEIGHTS, PROMPT_EMBEDDINGS

    backend = load_backend(tiny_causal_lm, device="cpu")
    results = json.loads((causal_run / "results.json").read_text())
    words = {"text": " ".join(results["best"]["template"].replace("{text}", " ").replace("{mask}", " ").split()),
             "manual": " ".join(results["best_manual"]["template"].replace("{text}", " ").replace("{mask}", " ").split())}
    starts = {}
    for init in ("text", "random", "manual"):
        out = tmp_path / init
        train(causal_run, "soft", out=out, init=init, epochs=1, learning_rate=1e-12, batch_size=4, log=quiet)
        starts[init] = json.loads((out / TRAINING).read_text())["saved"]
        embeddings = load_file(str(out / "adapter" / ADAPTER_WEIGHTS))[PROMPT_EMBEDDINGS]
        if init in words:
            assert starts[init]["init_text"] == words[init]
            ids = torch.tensor(backend.tokenizer(words[init])["input_ids"])
            torch.testing.assert_close(embeddings, backend.embed(ids).detach(), atol=1e-6, rtol=0)
        else:
            assert starts[init]["init_text"] is None and embeddings.shape[0] == len(backend.tokenizer(words["text"])["input_ids"])


# -- determinism and resuming ------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "method"), [("masked", "full"), ("causal", "lora"), ("causal", "soft"), ("masked", "head")])
def test_killed_run_resumes_to_the_same_result(kind: str, method: str, request: pytest.FixtureRequest, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = request.getfixturevalue(f"{kind}_run")
    options = {**FAST, "epochs": 3}
    whole = train(run, method, out=tmp_path / "whole", log=quiet, **options)
    original_write = checkpoint_module.Checkpoint.write

    def write_then_die(self, state, *args, **kwargs):
        original_write(self, state, *args, **kwargs)
        if state.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.Checkpoint, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(run, method, out=tmp_path / "killed", log=quiet, **options)
    monkeypatch.setattr(checkpoint_module.Checkpoint, "write", original_write)
    assert not (tmp_path / "killed" / TRAINING).exists()
    with pytest.raises(UserError, match="resume"):
        train(run, method, out=tmp_path / "killed", log=quiet, **options)
    with pytest.raises(UserError, match="other settings"):
        train(run, method, out=tmp_path / "killed", resume=True, log=quiet, **{**options, "learning_rate": 2e-3})
    resumed = train(run, method, out=tmp_path / "killed", resume=True, log=quiet, **options)
    assert resumed.curve == [{**row, "seconds": resumed.curve[i]["seconds"]} for i, row in enumerate(whole.curve)]
    assert resumed.scores == whole.scores
    saved = "adapter/adapter_model.safetensors" if method in ("lora", "soft") else "model/model.safetensors"
    assert (tmp_path / "killed" / saved).read_bytes() == (tmp_path / "whole" / saved).read_bytes()


@pytest.mark.parametrize("method, init", [("full", None), ("lora", None), ("soft", "text"), ("head", None)])
def test_a_dropped_method_frees_its_model_by_reference_counting(causal_run: Path, method: str, init: str | None,
                                                                collector_off) -> None:
    """What the refit relies on to hold one model at a time: no reference cycle keeps a method's model alive."""
    from autoprompt_search.training import run as run_module
    from autoprompt_search.training.source import read_source

    trained = run_module._fresh_method(method, read_source(causal_run), "cpu", 8, seed=1, init=init)
    modules = [weakref.ref(module) for module in trained.module.modules()]
    del trained
    assert [ref for ref in modules if ref() is not None] == []


def test_refit_trains_again_on_train_and_dev_to_the_chosen_epoch(causal_run: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, collector_off) -> None:
    """--refit: the epoch is chosen on dev as usual, then the model is trained again from the source's
    weights on train+dev for that many epochs, on the schedule of the configured epochs, and that model
    is the output; a run killed in the refit resumes there to the same bytes; with epoch 0 kept there
    is nothing to refit."""
    from autoprompt_search.training import loop
    from autoprompt_search.training import run as run_module

    options = {**FAST, "epochs": 3, "learning_rate": 3e-3}
    monkeypatch.setattr(loop, "better", lambda row, best: row["epoch"] == 2)  # the selection, fixed: epoch 2 of 3
    loaded: list[list[weakref.ref]] = []
    fresh = run_module._fresh_method

    def fresh_with_the_last_model_gone(*args, **kwargs):
        if loaded:  # freed by reference counting alone (the garbage collector is off): one model in memory at a time
            assert [ref for ref in loaded[-1] if ref() is not None] == []
        method = fresh(*args, **kwargs)
        loaded.append([weakref.ref(module) for module in method.module.modules()])
        return method

    monkeypatch.setattr(run_module, "_fresh_method", fresh_with_the_last_model_gone)
    plain = train(causal_run, "full", out=tmp_path / "plain", log=quiet, **options)
    refitted = train(causal_run, "full", out=tmp_path / "refit", refit=True, log=quiet, **options)
    assert len(loaded) == 3  # the plain run's model, then the refit's: loaded again, not the selected one trained on
    recorded = json.loads((tmp_path / "refit" / TRAINING).read_text())
    assert plain.best_epoch == refitted.best_epoch == 2 and refitted.refit_curve and plain.refit_curve is None
    assert recorded["curve"] == [{**row, "seconds": recorded["curve"][i]["seconds"]} for i, row in enumerate(plain.curve)]
    refit = recorded["refit"]
    assert refit["done"] and refit["epochs"] == 2 and [row["epoch"] for row in refit["curve"]] == [0, 1, 2]
    assert refit["examples"] == refitted.scores["train"]["n"] + refitted.scores["dev"]["n"]
    steps_per_epoch = -(-refit["examples"] // options["batch_size"])
    assert refit["curve"][-1]["step"] == 2 * steps_per_epoch  # every train+dev example, twice
    weights = "model/model.safetensors"
    assert (tmp_path / "refit" / weights).read_bytes() != (tmp_path / "plain" / weights).read_bytes()
    rows = _test_rows(tmp_path / "refit")
    assert load(tmp_path / "refit", device="cpu").score([r["text"] for r in rows], [r["gold"] for r in rows]) == pytest.approx(
        refitted.scores["test"]["accuracy"], abs=0)  # the recorded figures are the saved model's

    original_write = checkpoint_module.Checkpoint.write

    def write_then_die(self, state, *args, **kwargs):
        original_write(self, state, *args, **kwargs)
        if "refit_epochs" in state.identity and state.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.Checkpoint, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(causal_run, "full", out=tmp_path / "killed", refit=True, log=quiet, **options)
    monkeypatch.setattr(checkpoint_module.Checkpoint, "write", original_write)
    # the selection's tensors went when the refit began: its state stays, its model does not
    assert sorted(path.name for path in (tmp_path / "killed" / "checkpoint").iterdir()) == ["refit", "state.json"]
    saved = json.loads((tmp_path / "killed" / "checkpoint" / "refit" / "state.json").read_text())
    last_step = steps_per_epoch - 1  # the rate of the refit's last step before the kill: decaying over all 3 epochs, not 2
    assert saved["param_groups"][0]["lr"] == pytest.approx(options["learning_rate"] * (1 - last_step / (3 * steps_per_epoch)))
    messages: list[str] = []
    models_before = len(loaded)
    resumed = train(causal_run, "full", out=tmp_path / "killed", refit=True, resume=True, log=messages.append, **options)
    assert any("resuming after epoch 1 of 2" in m for m in messages)  # the refit itself resumed, not started again
    assert len(loaded) == models_before + 1  # the refit's model only: the finished selection is not loaded again
    assert resumed.scores == refitted.scores
    assert (tmp_path / "killed" / weights).read_bytes() == (tmp_path / "refit" / weights).read_bytes()

    monkeypatch.setattr(loop, "better", lambda row, best: False)  # the untrained prompt kept
    untouched = train(causal_run, "lora", out=tmp_path / "untouched", refit=True, log=quiet, **options)
    assert untouched.best_epoch == 0 and untouched.refit_curve is None
    assert json.loads((tmp_path / "untouched" / TRAINING).read_text())["refit"]["done"] is False


def _test_rows(out: Path) -> list[dict[str, str]]:
    with open(out / PREDICTIONS, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- user mistakes ----------------------------------------------------------------------------------
def _copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("options, message", [
    ({"learning_rate": 0.0}, "learning_rate must be"),
    ({"learning_rate": float("nan")}, "learning_rate must be"),
    ({"learning_rate": 5.0}, "learning_rate must be"),
    ({"epochs": 0}, "epochs must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"eval_batch_size": 0}, "eval_batch_size must be"),
    ({"method": "adapters"}, "unknown method"),
    ({"start": "worst"}, "unknown start"),
    ({"seed": -1}, "seed must be"),
    ({"seed": 2**40}, "seed must be"),
    ({"init": "random"}, "is for soft prompts"),
])
def test_bad_options_are_refused_before_anything_is_written(causal_run: Path, tmp_path: Path, options: dict, message: str) -> None:
    method = options.pop("method", "full")
    with pytest.raises(UserError, match=message):
        train(causal_run, method, out=tmp_path / "out", log=quiet, **options)
    assert not (tmp_path / "out").exists()


def test_bad_sources_are_refused(causal_run: Path, workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match="is not a run folder"):
        train(workspace, "full", out=out, log=quiet)
    loose = tmp_path / "loose.json"
    shutil.copy(causal_run / BEST, loose)
    with pytest.raises(UserError, match="does not sit in its run folder"):
        train(loose, "full", out=out, log=quiet)
    moved = _copy_run(causal_run, tmp_path)  # the model the prompt was found on is gone
    document = json.loads((moved / BEST).read_text())
    document["model"].update(name=str(tmp_path / "gone"), path=str(tmp_path / "gone"))
    (moved / BEST).write_text(json.dumps(document))
    with pytest.raises(UserError, match="model the prompt was found on is not available"):
        train(moved, "full", out=out, log=quiet)
    assert not out.exists()


def test_changed_data_is_refused(causal_run: Path, tmp_path: Path) -> None:
    run = _copy_run(causal_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    data = tmp_path / "changed.csv"
    rows = (Path(manifest["space"]["source"]).parent / "tiny.csv").read_text().splitlines()
    data.write_text("\n".join(rows[:1] + [row.replace("great", "fine") for row in rows[1:]]) + "\n")
    manifest["space"]["dataset"]["path"] = str(data)
    space = tmp_path / "changed.yaml"
    space.write_text(Path(manifest["space"]["source"]).read_text().replace("path: tiny.csv", f"path: {data}"))
    manifest["space"]["source"] = str(space)
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="differs from the one the run recorded"):
        train(run, "full", out=tmp_path / "out", log=quiet)
    assert not (tmp_path / "out").exists()


def test_output_folder_mistakes(causal_run: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        train(causal_run, "full", out=taken, log=quiet)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(UserError, match="not a folder"):
        train(causal_run, "full", out=blocked, log=quiet)
    with pytest.raises(UserError, match="holds no training checkpoint"):
        train(causal_run, "full", out=taken, resume=True, log=quiet)
    assert (taken / "notes.txt").read_text() == "mine" and sorted(p.name for p in taken.iterdir()) == ["notes.txt"]


def test_cli(causal_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", str(causal_run), "--out", str(tmp_path / "bad"), "--learning-rate", "-1"]) == 2
    assert "--learning-rate must be" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["train", str(causal_run), "--method", "lora", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "ok")]) == 0
    printed = capsys.readouterr().out
    assert "<- kept" in printed and "test   accuracy" in printed
    recorded = json.loads((tmp_path / "ok" / "training.json").read_text())
    assert "in-sample" in recorded["epoch_zero_note"]  # the untrained prompt was chosen on dev
    assert ("kept epoch 0: " in printed) == (recorded["best_epoch"] == 0)
    assert main(["train", str(causal_run), "--out", str(tmp_path / "ok")]) == 2
    assert "finished training run" in capsys.readouterr().err
    assert main(["train", str(causal_run), "--member", "99", "--out", str(tmp_path / "member")]) == 2
    assert "--member: " in capsys.readouterr().err and not (tmp_path / "member").exists()
    assert main(["train", str(causal_run), "--member", "2", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "member")]) == 0
    recorded = json.loads((tmp_path / "member" / "training.json").read_text())
    assert recorded["source"]["start"].startswith("ensemble prompt 2 of ") and "epoch_zero_cap" in recorded["options"]
