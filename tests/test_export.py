"""Prompt files: write, validate, load back as predictors that reproduce the search; export forms."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

import autoprompt_search
from autoprompt_search import export
from autoprompt_search import predictor as prompt_predictor
from autoprompt_search.backends import load_backend
from autoprompt_search.cache import SlotCache
from autoprompt_search.ensemble import combine_probabilities
from autoprompt_search.errors import UserError
from autoprompt_search.prompt import ModelInfo, PromptSpec
from autoprompt_search.prompt_file import FORMAT_VERSION, PRECISION_FORMAT_VERSION
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.testing import TINY_CORPUS
from autoprompt_search.verbalizers import Verbalizer

LABELS = ("negative", "positive")
TEXTS = TINY_CORPUS[:14]
GOLD = [i % 2 for i in range(len(TEXTS))]
TEMPLATE = "{text} All in all it was {mask}"
VERBALIZER = {"negative": ["bad", "terrible"], "positive": ["good"]}
SEARCH = {"batch_size": 4, "chunk_size": 5}  # small, so that batching and chunking are exercised


pytestmark = pytest.mark.usefixtures("module_cache")  # the asset and slot caches outside the tests' folders


@pytest.fixture(scope="module")
def backend(tiny_causal_lm):
    return load_backend(tiny_causal_lm, batch_size=SEARCH["batch_size"])


@pytest.fixture(scope="module")
def model_info(backend, tiny_causal_lm) -> ModelInfo:
    return ModelInfo(name=str(tiny_causal_lm), kind=backend.kind, weights_sha256=backend.weights_hash,
                     path=str(backend.path), max_length=backend.max_length)


def _search(backend, template: str, verbalizer: dict, *, calibration: str = "prior", trigger_ids: tuple[int, ...] = (),
            fields: tuple[str, ...] = ("text",), texts=None):
    """What a search does for one prompt: its spec, its PromptScore and its word token ids."""
    scorer = PromptScorer(backend, SlotCache(), chunk_size=SEARCH["chunk_size"])
    parsed, words = Template.parse(template, fields=fields), Verbalizer.parse(verbalizer, LABELS)
    texts = texts if texts is not None else [{"text": text} for text in TEXTS]
    score = scorer.score(scorer.prepare(parsed, texts, trigger_ids or None), words, GOLD[: len(texts)], calibration=calibration)
    ids = scorer.word_ids(parsed, words)
    spec = PromptSpec(template, verbalizer, LABELS, fields, score.calibration, trigger_ids)
    return spec, score, {label: [list(word) for word in label_ids] for label, label_ids in zip(LABELS, ids)}


def _write(path: Path, backend, model_info: ModelInfo, **search) -> tuple[Path, object]:
    spec, score, word_ids = _search(backend, search.pop("template", TEMPLATE), search.pop("verbalizer", VERBALIZER), **search)
    export.write_prompt(path, spec, model_info, scores={"dev": score.summary()}, dataset={"name": "tiny"},
                        provenance={"command": "test"}, word_token_ids=word_ids, **SEARCH)
    return path, score


@pytest.fixture
def prompt_file(tmp_path, backend, model_info) -> Path:
    return _write(tmp_path / "best.json", backend, model_info)[0]


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("calibration", ["none", "prior", "contextual"])
def test_loaded_prompt_reproduces_the_search_probabilities(tmp_path, backend, model_info, calibration) -> None:
    path, score = _write(tmp_path / "best.json", backend, model_info, calibration=calibration)
    for cache in (False, True, True):  # fresh, disk cache filled, disk cache read
        predictor = prompt_predictor.load(path, cache=cache)
        assert np.array_equal(predictor.predict_proba(TEXTS), score.probabilities)
    assert predictor.classes_ == list(LABELS)
    assert predictor.scorer.backend.batch_size == 4 and predictor.scorer.chunk_size == 5
    assert predictor.file.document["scores"]["dev"]["accuracy"] == score.accuracy


def test_bfloat16_prompt_is_reloaded_in_bfloat16(tmp_path, tiny_causal_lm, model_info) -> None:
    """A prompt measured in bfloat16 says so (a version older readers refuse) and loads in it, reproducing its scores."""
    bf16 = load_backend(tiny_causal_lm, batch_size=SEARCH["batch_size"], precision="bfloat16")
    info = replace(model_info, precision="bfloat16")
    path, score = _write(tmp_path / "best.json", bf16, info)
    document = json.loads(path.read_text())
    assert document["format_version"] == PRECISION_FORMAT_VERSION and document["model"]["precision"] == "bfloat16"
    predictor = prompt_predictor.load(path, cache=False)
    assert predictor.scorer.backend.precision == "bfloat16"
    assert np.array_equal(predictor.predict_proba(TEXTS), score.probabilities)
    float32 = load_backend(tiny_causal_lm, batch_size=SEARCH["batch_size"])
    with pytest.raises(UserError, match="model.precision: the prompt was scored in bfloat16, the given model runs in float32"):
        prompt_predictor.load(path, model=float32, cache=False)


def test_predict_and_score_follow_the_probabilities(prompt_file) -> None:
    predictor = autoprompt_search.load(prompt_file, cache=False)
    probabilities = predictor.predict_proba(TEXTS[:6])
    predictions = predictor.predict(TEXTS[:6])
    assert predictions == [LABELS[i] for i in probabilities.argmax(1)]
    gold = [LABELS[i] for i in GOLD[:6]]
    assert predictor.score(TEXTS[:6], gold) == pytest.approx(np.mean([p == g for p, g in zip(predictions, gold)]))
    assert predictor.predict_proba([]).shape == (0, 2)
    with pytest.raises(UserError, match="unknown label 'neutral'"):
        predictor.score(TEXTS[:1], ["neutral"])
    with pytest.raises(UserError, match="single one"):
        predictor.predict("one text, not a list")


def test_ensemble_round_trip(tmp_path, backend, model_info) -> None:
    a = _search(backend, TEMPLATE, VERBALIZER, calibration="prior")
    b = _search(backend, "{text} [T] [T] Overall it was {mask}", {"negative": ["awful"], "positive": ["great"]},
                calibration="contextual", trigger_ids=(100, 200))
    weights = [0.7, 0.3]
    path = export.write_ensemble(
        tmp_path / "ensemble.json", [(a[0], weights[0], {"dev": a[1].summary()}), (b[0], weights[1], {"dev": b[1].summary()})],
        model_info, scores={"dev": {}}, dataset={}, provenance={}, weights_fit={"method": "test"},
        word_token_ids=[a[2], b[2]], **SEARCH)
    document = json.loads(path.read_text())
    assert document["kind"] == "ensemble" and [m["weight"] for m in document["members"]] == weights
    assert document["members"][1]["exports"]["openprompt"]["trigger_token_ids"] == [100, 200]
    predictor = prompt_predictor.load(path, cache=False)
    assert isinstance(predictor, prompt_predictor.EnsemblePredictor)
    assert predictor.members[0].scorer is predictor.members[1].scorer  # one backend, one cache
    expected = combine_probabilities([a[1].probabilities, b[1].probabilities], weights)
    assert np.array_equal(predictor.predict_proba(TEXTS), expected)
    assert predictor.predict(TEXTS[:3]) == [LABELS[i] for i in expected[:3].argmax(1)]


def test_ensemble_members_of_one_template_share_one_pass(tmp_path, backend, model_info) -> None:
    members = [_search(backend, TEMPLATE, VERBALIZER, calibration="prior"),
               _search(backend, TEMPLATE, {"negative": ["bad"], "positive": ["good"]}, calibration="none"),
               _search(backend, "{text} Overall it was {mask}", VERBALIZER, calibration="contextual")]
    weights = [0.5, 0.3, 0.2]
    path = export.write_ensemble(
        tmp_path / "ensemble.json", [(m[0], w, {"dev": m[1].summary()}) for m, w in zip(members, weights)],
        model_info, scores={"dev": {}}, dataset={}, provenance={}, weights_fit={"method": "test"},
        word_token_ids=[m[2] for m in members], **SEARCH)
    predictor = prompt_predictor.load(path, cache=False)
    predictor.members[0].scorer.cache = SlotCache(memory_bytes=0)  # nothing kept: every read is a pass
    passes = backend.forward_passes
    predictor.members[0].predict_proba(TEXTS)
    predictor.members[2].predict_proba(TEXTS)
    one_each = backend.forward_passes - passes
    passes = backend.forward_passes
    probabilities = predictor.predict_proba(TEXTS)
    assert backend.forward_passes - passes == one_each  # member 1's words are among member 0's: no pass of its own
    expected = combine_probabilities([m[1].probabilities for m in members], weights)
    assert np.array_equal(probabilities, expected)


def test_several_fields_take_mappings(tmp_path, backend, model_info) -> None:
    fields = ("premise", "hypothesis")
    texts = [{"premise": TEXTS[i], "hypothesis": TEXTS[i + 1]} for i in range(6)]
    path, score = _write(tmp_path / "best.json", backend, model_info, template="{premise} ? {hypothesis} So it was {mask}",
                         fields=fields, texts=texts)
    predictor = prompt_predictor.load(path, cache=False)
    assert np.array_equal(predictor.predict_proba(texts), score.probabilities)
    with pytest.raises(UserError, match=r"texts\[0\]: the template uses the fields premise, hypothesis"):
        predictor.predict(["a plain string"])
    with pytest.raises(UserError, match=r"texts\[1\]: missing field 'hypothesis'"):
        predictor.predict([texts[0], {"premise": "only one"}])


# -- validation -------------------------------------------------------------------------------
def _set(keys: str, value):
    def mutate(document: dict) -> None:
        *parents, last = keys.split(".")
        target = document
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return mutate


_DELETE = object()
INVALID = [
    ("format", _set("format", "something.else"), "format: expected 'autoprompt_search.prompt'"),
    ("newer version", _set("format_version", FORMAT_VERSION + 1), f"format_version: the file has version {FORMAT_VERSION + 1}"),
    ("version type", _set("format_version", "1"), "format_version: expected a positive integer"),
    ("adapter method", _set("model.adapter", {"method": "ia3", "path": "adapter", "sha256": "0"}),
     "model.adapter.method: expected 'lora' or 'prompt_tuning'"),
    ("adapter path", _set("model.adapter", {"method": "lora", "sha256": "0"}), "model.adapter.path: missing (required)"),
    ("kind", _set("kind", "many"), "kind: expected 'single' or 'ensemble'"),
    ("no prompt", _set("prompt", _DELETE), "prompt: missing (required)"),
    ("verbalizer type", _set("prompt.verbalizer", ["bad", "good"]), "prompt.verbalizer: expected a mapping from label to words"),
    (
        "verbalizer labels",
        _set("prompt.verbalizer", {"negative": ["bad"], "neutral": ["ok"]}),
        "prompt.verbalizer: unknown label 'neutral'",
    ),
    ("template missing", _set("prompt.template", _DELETE), "prompt.template: missing (required)"),
    ("template slot", _set("prompt.template", "{text} no slot"), "prompt.template: template '{text} no slot' has no label slot"),
    ("labels type", _set("prompt.labels", ["negative", 1]), "prompt.labels: expected a list of strings"),
    ("fields type", _set("prompt.fields", "text"), "prompt.fields: expected a list of strings"),
    ("calibration method", _set("prompt.calibration.method", "magic"), "prompt.calibration.method: expected 'none' or"),
    ("calibration bias", _set("prompt.calibration.bias", [0.5]), "prompt.calibration.bias: expected 2 numbers"),
    ("trigger ids", _set("prompt.trigger_ids", [5]), "prompt.trigger_ids: the template has 0 trigger slots"),
    ("model", _set("model", "tiny"), "model: expected a mapping"),
    ("model hash", _set("model.weights_sha256", _DELETE), "model.weights_sha256: missing (required)"),
    ("model kind", _set("model.kind", "diffusion"), "model.kind: expected 'masked' or 'causal' or 'seq2seq', got 'diffusion'"),
    ("batch size", _set("model.batch_size", 0), "model.batch_size: expected a positive integer"),
    (
        "word ids type",
        _set("word_token_ids", {"negative": [["a"]], "positive": [[1]]}),
        "word_token_ids: expected a mapping from label to lists of token ids",
    ),
    ("word ids labels", _set("word_token_ids", {"negative": [[1]]}), "word_token_ids: its labels"),
]


@pytest.mark.parametrize("mutate, expected", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_fields_name_the_file_and_the_field(prompt_file, mutate, expected) -> None:
    document = json.loads(prompt_file.read_text())
    mutate(document)
    prompt_file.write_text(json.dumps(document))
    with pytest.raises(UserError) as error:
        prompt_predictor.load(prompt_file)
    assert str(error.value).startswith(f"{prompt_file}: {expected}"), str(error.value)


def test_invalid_ensemble_members(tmp_path, prompt_file) -> None:
    single = json.loads(prompt_file.read_text())
    member = {"prompt": single["prompt"], "weight": 1.0}
    cases = [
        ([], "members: the ensemble has no members"),
        ([member, "x"], "members[1]: expected a mapping"),
        ([member, {**member, "weight": -1}], "members[1].weight: expected a non-negative number"),
        ([{**member, "weight": 0}], "members: every weight is zero"),
        ([member, {"weight": 1}], "members[1].prompt: missing (required)"),
        ([member, {**member, "prompt": {**member["prompt"], "verbalizer": "bad"}}], "members[1].prompt.verbalizer: expected a mapping"),
    ]
    path = tmp_path / "ensemble.json"
    for members, expected in cases:
        path.write_text(json.dumps({**single, "kind": "ensemble", "members": members}))
        with pytest.raises(UserError) as error:
            prompt_predictor.load(path)
        assert str(error.value).startswith(f"{path}: {expected}"), str(error.value)


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'missing.json'}: no such prompt file")):
        prompt_predictor.load(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'broken.json'}: not valid JSON")):
        prompt_predictor.load(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(UserError, match="expected a JSON object at the top level"):
        prompt_predictor.load(tmp_path / "list.json")
    with pytest.raises(UserError, match="a folder, but neither prompt.json nor classifier.json"):
        prompt_predictor.load(tmp_path)


def test_unknown_keys_are_tolerated(prompt_file) -> None:
    document = json.loads(prompt_file.read_text())
    document["future_feature"] = {"x": 1}
    document["prompt"]["future_option"] = True
    document["model"]["revision"] = "main"
    prompt_file.write_text(json.dumps(document))
    assert prompt_predictor.load(prompt_file, cache=False).classes_ == list(LABELS)


# -- the model ---------------------------------------------------------------------------------
def test_prompt_found_on_another_model_is_refused_unless_not_strict(tmp_path, backend, model_info) -> None:
    other = ModelInfo(model_info.name, model_info.kind, "0" * 64, model_info.path, model_info.max_length)
    path, score = _write(tmp_path / "best.json", backend, other)
    with pytest.raises(UserError, match=re.escape(f"{path}: model.weights_sha256: the prompt was found on another model")):
        prompt_predictor.load(path)
    with pytest.warns(UserWarning, match="found on another model"):
        predictor = prompt_predictor.load(path, cache=False, strict=False)
    assert np.array_equal(predictor.predict_proba(TEXTS), score.probabilities)


def test_model_is_found_by_path_then_name_or_given(tmp_path, backend, model_info, tiny_causal_lm) -> None:
    moved = ModelInfo(str(tiny_causal_lm), "causal", model_info.weights_sha256, str(tmp_path / "gone"), model_info.max_length)
    path, score = _write(tmp_path / "best.json", backend, moved)
    assert np.array_equal(prompt_predictor.load(path, cache=False).predict_proba(TEXTS), score.probabilities)
    assert prompt_predictor.load(path, model=backend, cache=False).scorer.backend is backend
    lost = ModelInfo("no-such-model", "causal", model_info.weights_sha256, str(tmp_path / "gone"), model_info.max_length)
    path, _ = _write(tmp_path / "lost.json", backend, lost)
    with pytest.raises(UserError, match=re.escape(f"{path}: model: cannot load the prompt's model")):
        prompt_predictor.load(path)
    assert np.array_equal(prompt_predictor.load(path, model=tiny_causal_lm, cache=False).predict_proba(TEXTS), score.probabilities)


def test_other_word_token_ids_mean_another_tokenizer(prompt_file) -> None:
    document = json.loads(prompt_file.read_text())
    document["word_token_ids"]["positive"] = [[7]]
    prompt_file.write_text(json.dumps(document))
    with pytest.raises(UserError, match=re.escape(f"{prompt_file}: word_token_ids: this model's tokenizer gives other token ids")):
        prompt_predictor.load(prompt_file)
    with pytest.warns(UserWarning, match="other token ids"):
        prompt_predictor.load(prompt_file, cache=False, strict=False)


# -- forms for other tools ---------------------------------------------------------------------
def _openprompt_render(template_text: str, example: dict) -> str:
    """OpenPrompt's ``Template.parse_text`` + ``incorporate_text_example``, with JSON instead of eval
    (a ``post_processing`` that puts text before the field is read from its one known form)."""
    pieces, i = [], 0
    while i < len(template_text):
        prefix = " " if i > 0 and template_text[i - 1] == " " else ""
        while i < len(template_text) and template_text[i] == " ":
            prefix, i = " ", i + 1
        if i == len(template_text):
            break
        if template_text[i] != "{":
            j = template_text.find("{", i + 1)
            j = len(template_text) if j < 0 else j
            pieces.append(prefix + template_text[i:j].rstrip(" "))
            i = j
            continue
        depth, j = 1, i + 1
        while j < len(template_text):
            depth += {"{": 1, "}": -1}.get(template_text[j], 0)
            if depth == 0:
                break
            j += 1
        assert j < len(template_text), "unbalanced braces"
        body, before = template_text[i : j + 1], ""
        if processed := re.fullmatch(r'(\{.*), "post_processing": lambda s: ("(?:[^"\\]|\\.)*") \+ s\}', body):
            body, before = processed.group(1) + "}", json.loads(processed.group(2))
        token = json.loads(body) if ":" in body else {json.loads(body[1:-1]): None}
        if "placeholder" in token:
            pieces.append(prefix + before + example[token["placeholder"]])
        elif "meta" in token:
            pieces.append(prefix + before + example["meta"][token["meta"]])
        elif "text" in token:
            pieces.append(prefix + token["text"])
        else:
            pieces.append(prefix + ("<mask>" if "mask" in token else "<soft>"))
        i = j + 1
    return "".join(pieces)


def _spec(template: str, fields=("text",), trigger_ids=()) -> PromptSpec:
    return PromptSpec(template, {"negative": ["bad"], "positive": ["good", "great"]}, LABELS, fields, trigger_ids=trigger_ids)


def test_openprompt_form_one_field() -> None:
    form = export.openprompt_form(_spec("Review: {text} It was {mask}."))
    assert form["template_text"] == 'Review: {"placeholder": "text_a"} It was {"mask"}.'
    assert form["template_class"] == "ManualTemplate" and "note" not in form
    assert form["label_words"] == {"negative": ["bad"], "positive": ["good", "great"]}
    assert form["classes"] == ["negative", "positive"] and form["verbalizer_prefix"] == " "
    assert _openprompt_render(form["template_text"], {"text_a": "Fine."}) == "Review: Fine. It was <mask>."


def test_openprompt_form_fields_triggers_and_braces(tiny_causal_lm) -> None:
    template = "{premise} [T] {{q}}: {hypothesis} [T] {extra} -> {mask}"
    form = export.openprompt_form(_spec(template, ("premise", "hypothesis", "extra"), (100, 200)))
    assert form["field_map"] == {"premise": "text_a", "hypothesis": "text_b", "extra": "meta.extra"}
    assert form["template_class"] == "MixedTemplate" and form["trigger_token_ids"] == [100, 200]
    assert "meta" in form["note"] and "soft" in form["note"] and "literal '{'" in form["note"]
    rendered = _openprompt_render(form["template_text"], {"text_a": "P", "text_b": "H", "meta": {"extra": "E"}})
    assert rendered == "P <soft> {q}: H <soft> E -> <mask>"
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    with_tokens = export.openprompt_form(_spec(template, ("premise", "hypothesis", "extra"), (100, 200)), tokenizer)
    assert with_tokens["trigger_tokens"] == [tokenizer.decode([100]), tokenizer.decode([200])]


def test_openprompt_form_whitespace_as_the_search_tokenizes_it(tiny_causal_lm) -> None:
    """Newlines before a field travel with the field (OpenPrompt tokenizes pieces apart); a newline
    before the slot means no verbalizer prefix; a trigger OpenPrompt can read back starts from its token."""
    form = export.openprompt_form(_spec("A shown one. It was great.\n\n{text} It was {mask}"))
    assert form["template_text"] == ('A shown one. It was great.{"placeholder": "text_a", "post_processing": lambda s: "\\n\\n" + s}'
                                     ' It was {"mask"}')
    assert _openprompt_render(form["template_text"], {"text_a": "Fine."}) == "A shown one. It was great.\n\nFine. It was <mask>"
    assert export.openprompt_form(_spec("Review: {text}\nSentiment:\n{mask}"))["verbalizer_prefix"] == ""
    assert "whitespace" in export.openprompt_form(_spec("Review: {text}\n\n{mask}"))["note"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    (great,) = tokenizer.encode(" great", add_special_tokens=False)
    form = export.openprompt_form(_spec("{text} [T] [T] It was {mask}", trigger_ids=(great, 300)), tokenizer)
    assert form["template_text"].startswith('{"placeholder": "text_a"} {"soft": "great"} ')
    assert form["template_text"].count('{"soft"}') == (0 if tokenizer.encode(" " + tokenizer.decode([300]).strip(),
                                                                              add_special_tokens=False) == [300] else 1)


def test_peft_form(model_info, tiny_causal_lm) -> None:
    spec = _spec("Review: {text} [T] {{x}}  Sentiment:\n{mask}", trigger_ids=(5,))
    form = export.peft_form(spec, model_info)
    assert form == {
        **form,
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "prompt_tuning_init": "TEXT",
        "prompt_tuning_init_text": "Review: {x} Sentiment:",
        "num_virtual_tokens": None,
        "tokenizer_name_or_path": model_info.name,  # never this machine's folder (model_info.path)
    }
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    counted = export.peft_form(spec, model_info, tokenizer)
    assert counted["num_virtual_tokens"] == len(tokenizer("Review: {x} Sentiment:")["input_ids"])
    masked = export.peft_form(spec, ModelInfo("bert-tiny", "masked", "0" * 64))
    assert masked["task_type"] == "FEATURE_EXTRACTION" and "masked-LM" in masked["note"]
    assert masked["tokenizer_name_or_path"] == "bert-tiny"
    registered = export.peft_form(spec, ModelInfo("smollm2-135m", "causal", "0" * 64, path="/root/.cache/x/smollm2-135m"))
    assert registered["tokenizer_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    unknown_hub = export.peft_form(spec, ModelInfo("splade-tiny", "masked", "0" * 64, path="/root/.cache/x/splade-tiny"))
    assert unknown_hub["tokenizer_name_or_path"] == "splade-tiny" and "resolve_model('splade-tiny')" in unknown_hub["note"]
    assert export.peft_form(spec, ModelInfo("t5", "seq2seq", "0" * 64))["task_type"] == "SEQ_2_SEQ_LM"
    assert export.peft_form(_spec("{text}{mask}"), model_info)["prompt_tuning_init"] == "RANDOM"


def test_written_file_layout(prompt_file, model_info) -> None:
    document = json.loads(prompt_file.read_text())
    assert list(document)[:4] == ["format", "format_version", "library_version", "kind"]
    assert document["library_version"] == autoprompt_search.__version__ and document["kind"] == "single"
    assert document["format_version"] == 1  # float32 and no adapter: every version reads it
    written = {k: v for k, v in model_info.__dict__.items() if k not in ("adapter", "precision")}
    assert document["model"] == {**written, "batch_size": 4, "chunk_size": 5}
    assert set(document["exports"]) == {"openprompt", "peft"}
    assert document["prompt"]["calibration"]["method"] == "prior"


# -- atomic writes -----------------------------------------------------------------------------
def test_writes_are_atomic(tmp_path, prompt_file, backend, model_info, monkeypatch) -> None:
    spec, score, word_ids = _search(backend, TEMPLATE, VERBALIZER, calibration="none")
    before = prompt_file.read_bytes()
    kwargs = dict(dataset={}, provenance={}, word_token_ids=word_ids, **SEARCH)
    with pytest.raises(TypeError):  # not serialisable: fails before anything is written
        export.write_prompt(prompt_file, spec, model_info, scores={"dev": object()}, **kwargs)

    def failing_replace(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(UserError, match=r"best\.json: cannot write it \(disk full\)"):  # the file named, no traceback
        export.write_prompt(prompt_file, spec, model_info, scores={}, **kwargs)
    monkeypatch.undo()
    assert prompt_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json"]
    export.write_prompt(prompt_file, spec, model_info, scores={"dev": {"accuracy": np.float64(0.5), "n": np.int64(3)}}, **kwargs)
    assert json.loads(prompt_file.read_text())["scores"]["dev"] == {"accuracy": 0.5, "n": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json"]


def test_writer_refuses_a_file_load_would_refuse(tmp_path, model_info) -> None:
    with pytest.raises(UserError, match="no label slot"):  # a template is checked when the spec is made
        PromptSpec("{text} no slot", {"negative": ["bad"], "positive": ["good"]}, LABELS, ("text",))
    bad = PromptSpec("{text} It was {mask}", {"negative": ["bad"], "positive": ["good"]}, LABELS, ("text",), trigger_ids=(5,))
    with pytest.raises(UserError, match="prompt.trigger_ids"):
        export.write_prompt(tmp_path / "best.json", bad, model_info, scores={}, dataset={}, provenance={}, word_token_ids={}, batch_size=4)
    assert not (tmp_path / "best.json").exists()
