"""Backends: slot log-probabilities agree with a direct full forward pass, for every kind."""

from __future__ import annotations

import inspect
import weakref

import pytest
import torch
from transformers import BertConfig, LlamaConfig, T5Config

from autoprompt_search.backends import SlotQuery, detect_kind, load_backend, resolve_precision
from autoprompt_search.cache import CODE_ERROR
from autoprompt_search.errors import UserError
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.testing import MULTI_TOKEN_WORDS
from autoprompt_search.verbalizers import Verbalizer

TEXTS = [{"text": "the movie was great and the acting good"}, {"text": "bad"},
         {"text": "it was an awful film with a terrible plot and bad acting"}]
TEMPLATES = {"causal": "{text} All in all it was {mask}", "masked": "{text} All in all it was {mask}.",
             "seq2seq": "{text} All in all it was {mask}."}


@pytest.fixture(scope="module")
def backends(tiny_masked_lm, tiny_causal_lm, tiny_seq2seq, tiny_causal_sp):
    return {
        "masked": load_backend(tiny_masked_lm, batch_size=2),
        "causal": load_backend(tiny_causal_lm, batch_size=2),
        "seq2seq": load_backend(tiny_seq2seq, batch_size=2),
        "causal_sp": load_backend(tiny_causal_sp, batch_size=2),
    }


@pytest.mark.parametrize("name", ["masked", "causal", "seq2seq"])
def test_bfloat16_runs_the_body_in_bfloat16_and_the_vocabulary_projection_in_float32(
        backends, tiny_masked_lm, tiny_causal_lm, tiny_seq2seq, name: str) -> None:
    folder = {"masked": tiny_masked_lm, "causal": tiny_causal_lm, "seq2seq": tiny_seq2seq}[name]
    float32, bf16 = backends[name], load_backend(folder, batch_size=2, precision="bfloat16")
    body = next(m for m in bf16.model.modules() if isinstance(m, torch.nn.Linear) and m is not bf16.model.get_output_embeddings())
    seen: dict[str, torch.dtype] = {}

    def recorder(name: str):
        def record(module, args, output) -> None:  # a hook that returned a value would replace the output
            seen.setdefault(name, output.dtype)
        return record

    hooks = [body.register_forward_hook(recorder("body")), bf16.model.get_output_embeddings().register_forward_hook(recorder("head"))]
    prompts = PromptScorer(float32).prepare(Template.parse(TEMPLATES[float32.kind]), TEXTS).prompts
    try:
        reduced = bf16.next_token_log_probs(prompts)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == {"body": torch.bfloat16, "head": torch.float32}
    exact = float32.next_token_log_probs(prompts)
    assert reduced.dtype == torch.float32 and not torch.equal(reduced, exact)
    assert (reduced - exact).abs().mean() < 0.05 and torch.allclose(reduced, exact, atol=0.3), (reduced - exact).abs().max()
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters()) and bf16.weights_hash == float32.weights_hash
    assert bf16.fingerprint != float32.fingerprint  # the slot cache keeps the two apart
    with pytest.raises(UserError, match="unknown precision 'float16'"):
        load_backend(folder, precision="float16")


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", ["masked", "causal", "seq2seq"])
def test_a_dropped_backend_frees_its_model_without_waiting_for_the_garbage_collector(
        tiny_masked_lm, tiny_causal_lm, tiny_seq2seq, name: str, precision: str, collector_off) -> None:
    """A cycle through a wrapped forward would keep the model alive with the collector off."""
    folder = {"masked": tiny_masked_lm, "causal": tiny_causal_lm, "seq2seq": tiny_seq2seq}[name]
    backend = load_backend(folder, batch_size=2, precision=precision)
    assert "input_ids" in inspect.signature(backend.model.forward).parameters  # what transformers reads stays readable
    modules = [weakref.ref(module) for module in backend.model.modules()]
    del backend
    assert [ref for ref in modules if ref() is not None] == []


def test_a_masked_head_gets_float32_when_the_body_ends_in_bfloat16(backends, monkeypatch) -> None:
    """Some bodies (ALBERT's) hand the MLM head a bfloat16 hidden state under autocast; the head runs outside it."""
    backend = backends["masked"]
    forward = backend.model.base_model.forward

    def body_ending_in_bfloat16(*args, **kwargs):
        output = forward(*args, **kwargs)
        output.last_hidden_state = output.last_hidden_state.to(torch.bfloat16)
        return output

    prompts = PromptScorer(backend).prepare(Template.parse(TEMPLATES["masked"]), TEXTS).prompts
    exact = backend.next_token_log_probs(prompts)
    monkeypatch.setattr(backend.model.base_model, "forward", body_ending_in_bfloat16)
    reduced = backend.next_token_log_probs(prompts)
    assert reduced.dtype == torch.float32 and torch.allclose(reduced, exact, atol=0.3)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_the_cpu_has_it_natively(native: bool, monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == ("bfloat16" if native else "float32")
    assert resolve_precision("float32", "cpu") == "float32" and resolve_precision("bfloat16", "cpu") == "bfloat16"
    assert resolve_precision("auto", "mps") == "float32"


def test_kinds_are_detected_from_the_config() -> None:
    assert detect_kind(BertConfig(architectures=["BertForMaskedLM"])) == "masked"
    assert detect_kind(LlamaConfig(architectures=["LlamaForCausalLM"])) == "causal"
    assert detect_kind(T5Config()) == "seq2seq"


def test_models_are_frozen(backends) -> None:
    for backend in backends.values():
        assert not backend.model.training
        assert not any(parameter.requires_grad for parameter in backend.model.parameters())


def _direct_word_log_prob(backend, prompt, word) -> float:
    """Teacher-forced log p(word) with one unbatched full forward pass per token."""
    model, total = backend.model, 0.0
    with torch.no_grad():
        for k in range(len(word)):
            if backend.kind == "causal":
                ids = [*backend.specials.prefix, *prompt.before, *word[:k]]
                logits = model(torch.tensor([ids])).logits[0, -1]
            elif backend.kind == "masked":
                slot = [*word[:k]] + [backend.mask_id] * (len(word) - k)
                ids = [*backend.specials.prefix, *prompt.before, *slot, *prompt.after, *backend.specials.suffix]
                logits = model(torch.tensor([ids])).logits[0, len(backend.specials.prefix) + len(prompt.before) + k]
            else:
                ids = [*backend.specials.prefix, *prompt.before, backend.sentinel_id, *prompt.after, *backend.specials.suffix]
                decoder = [backend.decoder_start_id, backend.sentinel_id, *word[:k]]
                logits = model(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([decoder])).logits[0, -1]
            total += torch.log_softmax(logits, -1)[word[k]].item()
    return total


@pytest.mark.parametrize("name", ["masked", "causal", "seq2seq", "causal_sp"])
def test_batched_word_log_probs_match_direct_computation(backends, name: str) -> None:
    """The scorer reads the slot distributions as the cache stores them: each token's log-probability
    within CODE_ERROR of the model's, a word's within that times its tokens."""
    backend = backends[name]
    scorer = PromptScorer(backend)
    template = Template.parse(TEMPLATES[backend.kind])
    verbalizer = Verbalizer.parse({"negative": ["terrible", "bad"], "positive": ["great", MULTI_TOKEN_WORDS[0]]})
    word_ids = scorer.word_ids(template, verbalizer)
    words = [word for label_words in word_ids for word in label_words]
    assert any(len(word) > 1 for word in words), "the test needs a multi-token word"
    prompts = scorer.prepare(template, TEXTS).prompts
    batched = scorer.word_log_probs(prompts, words)
    for row, prompt in enumerate(prompts):
        for column, word in enumerate(words):
            bound = len(word) * CODE_ERROR + 1e-5
            assert batched[row, column].item() == pytest.approx(_direct_word_log_prob(backend, prompt, word), abs=bound)


def test_masked_head_fast_path_equals_full_logits(backends) -> None:
    backend = backends["masked"]
    assert backend._head is not None
    prompts = PromptScorer(backend).prepare(Template.parse(TEMPLATES["masked"]), TEXTS).prompts
    fast = backend.next_token_log_probs(prompts)
    backend_head, backend._head = backend._head, None
    try:
        full = backend.next_token_log_probs(prompts)
    finally:
        backend._head = backend_head
    assert torch.allclose(fast, full, atol=1e-5)


@pytest.mark.parametrize("name", ["causal", "masked"])
@pytest.mark.parametrize("soft", [False, True])
def test_batches_are_length_sorted_without_changing_the_result(backends, name: str, soft: bool, monkeypatch) -> None:
    """Padded batches of mixed lengths give each row what it gets alone, with a soft prompt too."""
    backend = backends[name]
    if soft:
        hidden = backend.model.get_input_embeddings().weight.shape[1]
        monkeypatch.setattr(backend, "soft_prompt", torch.randn(3, hidden, generator=torch.Generator().manual_seed(1)) * 0.5)
    prompts = PromptScorer(backend).prepare(Template.parse(TEMPLATES[name]), TEXTS).prompts
    assert len({len(prompt.before) + len(prompt.after) for prompt in prompts}) > 1
    together = backend.next_token_log_probs(prompts)
    one_by_one = torch.cat([backend.next_token_log_probs([prompt]) for prompt in prompts])
    assert torch.allclose(together, one_by_one, atol=1e-5)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("name", ["causal", "causal_sp"])
def test_a_long_shared_opening_is_run_once_with_the_same_log_probs(backends, name: str, soft: bool, monkeypatch) -> None:
    """Also with a soft prompt: its virtual tokens open the shared part."""
    from autoprompt_search import backends as module

    backend = backends[name]
    if soft:
        hidden = backend.model.get_input_embeddings().weight.shape[1]
        monkeypatch.setattr(backend, "soft_prompt", torch.randn(3, hidden, generator=torch.Generator().manual_seed(0)) * 0.5)
    shown = " ".join(f"Review: {row['text']}\nIt was great." for row in TEXTS[:3])  # demonstrations: a long common opening
    template = Template.parse(shown + "\nReview: {text}\nIt was {mask}")
    prompts = PromptScorer(backend).prepare(template, TEXTS).prompts
    assert module._common_prefix_length([p.before for p in prompts]) >= module.SHARED_PREFIX_TOKENS
    for query in (SlotQuery(), SlotQuery(width=2, prefix=(7,))):
        sequences_before = backend.sequences_processed
        shared = backend.next_token_log_probs(prompts, query)
        with monkeypatch.context() as patch:
            patch.setattr(module, "SHARED_PREFIX_TOKENS", 10**6)  # the plain full pass
            full = backend.next_token_log_probs(prompts, query)
        assert torch.allclose(shared, full, atol=1e-4), (shared - full).abs().max()
        assert backend.sequences_processed > sequences_before


@pytest.mark.parametrize("name", ["causal", "causal_sp", "masked", "seq2seq"])
def test_templates_opening_alike_share_it_with_the_same_log_probs(backends, name: str) -> None:
    """Templates that open with the example's text run it once per example (causal models) and give
    each template what it gets alone; other kinds score the templates one by one."""
    backend = backends[name]
    ending = "." if name != "causal" and name != "causal_sp" else ""
    templates = [f"{{text}} All in all it was {{mask}}{ending}", f"Review: {{text}} It was {{mask}}{ending}",
                 f"{{text}}\nIn short, a {{mask}}{ending}", f"Review: {{text}}\nSo: {{mask}}{ending}", f"{{text}} {{mask}}{ending}",
                 f"Alone: {{text}} {{mask}}{ending}"]
    texts = TEXTS + [{"text": "a long and winding story that never quite finds its feet, but the cast is fine"}]
    prompt_sets = [PromptScorer(backend).prepare(Template.parse(text), texts).prompts for text in templates]
    for query in (SlotQuery(), SlotQuery(width=2, prefix=(7,))):
        passes = backend.forward_passes
        together = backend.templates_next_token_log_probs(prompt_sets, query)
        passes = backend.forward_passes - passes
        alone = [backend.next_token_log_probs(prompts, query) for prompts in prompt_sets]
        for shared, single in zip(together, alone):
            assert torch.allclose(shared, single, atol=1e-4), (shared - single).abs().max()
        batches = -(-len(texts) // backend.batch_size)
        # causal: per group of templates opening alike ({text}, Review: {text}), one pass over the
        # openings, then one per template; the template that opens alone runs alone
        expected = batches * (2 + len(templates)) if backend.kind == "causal" else batches * len(templates)
        assert passes == expected


def test_autoregressive_kinds_ignore_the_slot_width(backends) -> None:
    assert backends["causal"].normalize(SlotQuery(width=3, prefix=(5,))) == SlotQuery(width=1, prefix=(5,))
    assert backends["masked"].normalize(SlotQuery(width=3)) == SlotQuery(width=3)


def test_a_folder_that_is_not_a_model(tmp_path) -> None:
    with pytest.raises(UserError, match="config.json"):
        load_backend(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match=str(tmp_path)):
        load_backend(tmp_path)
