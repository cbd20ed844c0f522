"""Integration tests on the real fetched assets: SPLADE-tiny (masked) and SmolLM2-135M (causal)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprompt_search import assets, data
from autoprompt_search.backends import load_backend
from autoprompt_search.cache import SlotCache
from autoprompt_search.cli.main import main
from autoprompt_search.evaluation import evaluate_prompt
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

pytestmark = pytest.mark.integration
SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def _need(*names: str) -> None:
    missing = [name for name in names if not assets.is_fetched(name)]
    if missing:
        pytest.skip(f"not fetched: {', '.join(missing)} (run: autoprompt-search assets fetch)")


@pytest.fixture(scope="module")
def smollm2():
    _need("smollm2-135m", "mr")
    return load_backend("smollm2-135m", device="cpu")


def test_splade_tiny_masked_path_with_multi_token_words(capsys) -> None:
    _need("splade-tiny", "mr")
    code = main(["evaluate", "--dataset", "mr", "--model", "splade-tiny", "--limit", "40", "--no-cache", "--json",
                 "--template", "{text} It was {mask}.", "--verbalizer", '{"negative": ["unwatchable", "bad"], "positive": ["good"]}'])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["n"] == 40 and report["model"]["kind"] == "masked"
    assert 0.0 <= report["accuracy"] <= 1.0
    backend = load_backend("splade-tiny")
    [[unwatchable, _], _] = Verbalizer.parse({"negative": ["unwatchable", "bad"], "positive": ["good"]}).token_ids(
        backend.tokenizer, leading_space=True
    )
    assert len(unwatchable) > 1  # the real WordPiece vocabulary splits it


def test_smollm2_agrees_with_a_plain_hugging_face_loop(smollm2) -> None:
    sample = data.sample(data.load_split("mr", "test"), 48, seed=1)
    texts = [example.text for example in sample.examples]
    scorer = PromptScorer(smollm2, SlotCache())
    prepared = scorer.prepare(Template.parse("{text} In summary, this film is {mask}"), [e.fields for e in sample.examples])
    ours = smollm2.next_token_log_probs(prepared.prompts)
    tokenizer, model = smollm2.tokenizer, smollm2.model
    with torch.inference_mode():
        for row in (0, 17, 47):
            ids = tokenizer(texts[row] + " In summary, this film is", return_tensors="pt")["input_ids"]
            reference = torch.log_softmax(model(input_ids=ids).logits[0, -1], dim=-1)
            assert torch.allclose(ours[row], reference, atol=1e-4)


def test_smollm2_reference_prompt_on_mr(smollm2) -> None:
    """The 400-example figure of the issue, computed here (see results/README.md)."""
    template, words = "{text} In summary, this film is {mask}", {"negative": ["negative"], "positive": ["positive"]}
    plain = evaluate_prompt("mr", smollm2, template, words, split="all", limit=400, seed=0, cache=SlotCache())
    calibrated = evaluate_prompt("mr", smollm2, template, words, calibrate="prior", split="all", limit=400, seed=0, cache=SlotCache())
    assert 0.55 <= plain.report["accuracy"] <= 0.70
    assert calibrated.report["accuracy"] >= 0.72
    assert calibrated.report["accuracy"] > plain.report["accuracy"]


def test_smollm2_short_search_reload_and_report(tmp_path, capsys, browser_view) -> None:
    """The README's main job at a small budget: its figures reload exactly, and its report shows every part."""
    from autoprompt_search.report import SECTIONS
    from autoprompt_search.run_folder import REPORT as REPORT_NAME
    from autoprompt_search.splits import TEST_SAMPLE_SEED

    _need("smollm2-135m", "mr")
    out = tmp_path / "run"
    assert main(["search", str(SPACES / "mr.yaml"), "--trials", "2", "--test-limit", "48", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    shown = browser_view(out / REPORT_NAME)
    assert shown["sections"] == list(SECTIONS) and len(shown["images"]) == 3
    assert all(image["complete"] and image["width"] > 300 and image["shown"] for image in shown["images"])
    test = data.sample(data.load_split("mr", "test"), 48, TEST_SAMPLE_SEED)
    import autoprompt_search

    predictor = autoprompt_search.load(out / "best.json")
    probabilities = predictor.predict_proba([e.text for e in test.examples])
    gold = np.array([predictor.classes_.index(e.label) for e in test.examples])
    assert float((probabilities.argmax(1) == gold).mean()) == results["best"]["test"]["accuracy"]
    assert results["best_manual"] is not None
    # mr.yaml shows demonstrations: 2 templates x 4 sets, proposed under 3 calibrations; the 8 shown examples are not scored.
    pools = json.loads((out / "pools.json").read_text())
    shown = pools["origins"]["demonstrations"]
    assert len(shown["templates"]) == 8 and len(pools["proposals"]) == 24 and len(shown["shown_train_rows"]) == 8
    assert results["best"]["train_dev"]["n"] == 64 - 8
    texts = [e.text for e in test.examples]
    ensemble = autoprompt_search.load(out / "ensemble.json").predict_proba(texts)
    assert float((ensemble.argmax(1) == gold).mean()) == results["ensemble"]["test"]["accuracy"]


@pytest.mark.parametrize("model", ["smollm2-135m", "splade-tiny"])
def test_trigger_candidates_match_autoprompts_loop_on_a_real_model(model) -> None:
    """The stored-prefix path (causal) and the batched path (masked) against the per-candidate
    loop, with the real tokenizers' filters and MR text."""
    from autoprompt_search.candidates.triggers import TriggerObjective, reference_candidate_losses
    from autoprompt_search.candidates.vocabulary import allowed_trigger_tokens
    from autoprompt_search.tokenization import encode_in_context

    _need(model, "mr")
    backend = load_backend(model, device="cpu")
    train, _ = data.few_shot(data.load_split("mr", "train_pool"), 4, 13)
    source = "{text} [T] [T] {mask}" if backend.kind == "causal" else "{text} [T] [T] {mask}."
    token = lambda word: encode_in_context(backend.tokenizer, [" " + word])[0][0]  # noqa: E731
    objective = TriggerObjective(backend, Template.parse(source), [[token("bad")], [token("good")]])
    inputs = objective.inputs(objective.render([e.fields for e in train.examples]))
    gold = torch.tensor([train.labels.index(e.label) for e in train.examples])
    rows = backend.model.get_input_embeddings().weight.shape[0]
    allowed = allowed_trigger_tokens(backend.tokenizer, vocab_size=rows, leading_space=True, label_words=["bad", "good"])
    triggers = [token("the"), token("movie")]
    _, gradient = objective.loss_and_gradient(inputs, triggers, gold)
    candidates = objective.hotflip_candidates(gradient, 1, triggers[1], allowed, 6)
    texts = [backend.tokenizer.decode([t]).strip() for t in candidates.tolist()]
    assert all(text.isalpha() and text.lower() not in ("bad", "good") for text in texts)
    loop = reference_candidate_losses(objective, inputs, triggers, 1, candidates, gold)
    assert torch.allclose(objective.candidate_losses(inputs, triggers, 1, candidates, gold), loop, atol=1e-4)


def test_smollm2_search_with_the_gradient_generators(tmp_path, capsys) -> None:
    _need("smollm2-135m", "mr")
    space = tmp_path / "space.yaml"
    space.write_text(
        f"include: {SPACES / 'mr_gradient.yaml'}\nname: mr_gradient_small\n"
        "generators:\n  triggers: {steps: 2, restarts: 1, candidates: 6, batch_size: 8}\n"
    )
    out = tmp_path / "run"
    assert main(["search", str(space), "--trials", "2", "--test-limit", "32", "--out", str(out)]) == 0
    pools = json.loads((out / "pools.json").read_text())
    search = pools["origins"]["triggers"]["searches"][0]
    assert "[T]" in search["template"] and search["forward_passes"] > 0 and search["backward_passes"] == 2
    written = [run["template"] for run in search["runs"] if run["template"]]
    assert all(template in pools["templates"] for template in written)
    assert pools["origins"]["label_probe"]["probes"][0]["words"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pools"]["triggers"]["searches"][0]["runs"][0]["tokens"] == search["runs"][0]["tokens"]


def test_smollm2_word_pools_hold_no_word_pieces(tmp_path) -> None:
    """MR seed 13, words ordered by the likelihood ratio: the slot distribution proposes " un" for
    negative (the start of "unfunny", "unwatchable"); the model continues it, so it is dropped, and
    whole words take its place. The held-out order's pieces (" cl", " mis") are dropped alike."""
    from autoprompt_search.candidates.build import build_pools
    from autoprompt_search.spaces import load_space

    _need("smollm2-135m", "mr")
    space_file = tmp_path / "space.yaml"
    scorer = PromptScorer(load_backend("smollm2-135m"), SlotCache())
    for scoring, piece in (("[mean_log_prob, likelihood_ratio]", "un"), ("[mean_log_prob, held_out_auc]", "cl")):
        space_file.write_text(f"include: {SPACES / 'mr.yaml'}\nname: mr_words\n"
                              f"generators: {{demonstrations: {{enabled: false}}, label_words: {{scoring: {scoring}}}}}\n")
        space = load_space(space_file)
        train, dev = data.few_shot(data.load_split(space.dataset.spec, "train_pool", **space.dataset.load_kwargs()), 16, 13)
        pools = build_pools(space, scorer, train, dev, log=lambda message: None)
        record = pools.origins["label_words"]
        assert piece in record["fragments"] and all(share > 0.5 for share in record["fragments"].values())
        words = {word for options in pools.words for option in options for word in option}
        assert not words & set(record["fragments"])
        assert [len(record["words"][label]) for label in pools.labels] == [space.generators.label_words.words_per_class] * 2


def test_smollm2_training_outputs_open_in_peft_and_reproduce(tmp_path) -> None:
    """From a real search run: LoRA and a soft prompt, one epoch each; PEFT opens the adapters as they
    are, load() reproduces the reported test figures, and the search's own exports.peft is accepted by
    PEFT unchanged once the tokenizer sits in a Hugging Face cache under the hub id it names."""
    import os
    import subprocess
    import sys

    peft = pytest.importorskip("peft") if not os.environ.get("CI") else __import__("peft")
    import autoprompt_search
    from autoprompt_search.training import train

    _need("smollm2-135m", "mr")
    run = tmp_path / "run"
    assert main(["search", str(SPACES / "mr.yaml"), "--trials", "2", "--test-limit", "48", "--out", str(run)]) == 0
    base_folder = assets.resolve_model("smollm2-135m")
    for method in ("lora", "soft"):
        out = tmp_path / method
        result = train(run, method, out=out, epochs=1, log=lambda message: None)
        predictor = autoprompt_search.load(out)
        test = data.sample(data.load_split("mr", "test"), 48, 0)
        assert predictor.score([e.text for e in test.examples], [e.label for e in test.examples]) == result.scores["test"]["accuracy"]
        from transformers import AutoModelForCausalLM

        opened = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder), out / "adapter")
        assert opened.peft_config["default"].base_model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    form = {k: v for k, v in json.loads((run / "best.json").read_text())["exports"]["peft"].items() if k != "note"}
    assert form["tokenizer_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "0"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (snapshot / name).write_bytes((base_folder / name).read_bytes())
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0")
    check = (f"import json, peft; from transformers import AutoModelForCausalLM; form = {form!r}; "
             f"model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained({str(base_folder)!r}), peft.PromptTuningConfig(**form)); "
             "print(model.prompt_encoder['default'].embedding.weight.shape[0])")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == form["num_virtual_tokens"]
