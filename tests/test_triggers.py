"""Trigger search: HotFlip against finite differences, batched and shared-prefix candidate losses
against AutoPrompt's loop, the search itself, and writing found triggers as text."""

from __future__ import annotations

import pytest
import torch

from autoprompt_search.backends import load_backend
from autoprompt_search.candidates.triggers import (
    TriggerObjective,
    insert_triggers,
    most_likely,
    placeholder,
    reference_candidate_losses,
    search_triggers,
    written_template,
)
from autoprompt_search.candidates.vocabulary import allowed_trigger_tokens
from autoprompt_search.errors import UserError
from autoprompt_search.templates import Template, TemplateRenderer
from autoprompt_search.testing import TINY_CORPUS
from autoprompt_search.tokenization import encode_in_context

TEXTS = [{"text": sentence} for sentence in TINY_CORPUS[:8]]
GOLD = torch.tensor([i % 2 for i in range(len(TEXTS))])
KINDS = ["causal", "masked", "seq2seq", "causal_sp"]


@pytest.fixture(scope="module")
def backends(tiny_causal_lm, tiny_masked_lm, tiny_seq2seq, tiny_causal_sp):
    folders = {"causal": tiny_causal_lm, "masked": tiny_masked_lm, "seq2seq": tiny_seq2seq, "causal_sp": tiny_causal_sp}
    return {name: load_backend(folder, batch_size=4) for name, folder in folders.items()}


def _token(backend, word: str) -> int:
    return encode_in_context(backend.tokenizer, [" " + word])[0][0]


def _objective(backend, source: str | None = None, **kwargs) -> TriggerObjective:
    source = source or ("{text} [T] [T] it was {mask}" if backend.kind == "causal" else "{text} [T] [T] it was {mask} .")
    return TriggerObjective(backend, Template.parse(source), [[_token(backend, "bad")], [_token(backend, "good")]], **kwargs)


def _allowed(backend) -> torch.Tensor:
    rows = backend.model.get_input_embeddings().weight.shape[0]
    return allowed_trigger_tokens(backend.tokenizer, vocab_size=rows, leading_space=True, label_words=["good", "bad"])


def _candidates(backend, count: int = 12) -> torch.Tensor:
    return torch.nonzero(_allowed(backend)).flatten()[:count]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("index", [0, 1])
def test_batched_and_shared_prefix_losses_match_autoprompts_loop(backends, kind: str, index: int) -> None:
    backend = backends[kind]
    objective = _objective(backend, rows_per_pass=20)  # several chunks of candidates
    unshared = _objective(backend, rows_per_pass=20, share_prefix=False)
    inputs = objective.inputs(objective.render(TEXTS))
    triggers = [_token(backend, "the"), _token(backend, "movie")]
    candidates = _candidates(backend)
    loop = reference_candidate_losses(objective, inputs, triggers, index, candidates, GOLD)
    batched = unshared.candidate_losses(inputs, triggers, index, candidates, GOLD)
    shared = objective.candidate_losses(inputs, triggers, index, candidates, GOLD)
    assert loop.shape == (len(candidates),)
    assert torch.allclose(batched, loop, atol=1e-5) and torch.allclose(shared, loop, atol=1e-5)
    assert loop.std() > 0  # the candidates do change the loss


@pytest.mark.parametrize("index", [0, 1])
def test_triggers_around_the_text_match_the_loop(backends, index: int) -> None:
    """Text between two triggers: what precedes the second one differs in length per example."""
    backend = backends["causal_sp"]  # its BOS token is a prefix even before the first trigger
    objective = _objective(backend, "[T] {text} [T] it was {mask}", rows_per_pass=24)
    inputs = objective.inputs(objective.render(TEXTS))
    triggers = [_token(backend, "the"), _token(backend, "movie")]
    candidates = _candidates(backend, 7)
    loop = reference_candidate_losses(objective, inputs, triggers, index, candidates, GOLD)
    assert objective.prefixes.split(inputs) is not None
    assert torch.allclose(objective.candidate_losses(inputs, triggers, index, candidates, GOLD), loop, atol=1e-5)


def test_the_shared_prefix_path_gives_the_full_forward_log_probs(backends) -> None:
    backend = backends["causal"]
    objective = _objective(backend)  # one chunk: the captured rows are b * m + c
    inputs = objective.inputs(objective.render(TEXTS))
    triggers = [_token(backend, "the"), _token(backend, "movie")]
    candidates = _candidates(backend, 5)
    captured: list[torch.Tensor] = []
    original = objective.row_losses

    def capture(logits, gold):
        captured.append(torch.log_softmax(logits.float(), dim=-1))
        return original(logits, gold)

    objective.row_losses = capture
    objective.candidate_losses(inputs, triggers, 1, candidates, GOLD)
    shared = torch.cat(captured)  # rows b * m + c
    for row in range(len(shared)):
        b, c = divmod(row, len(candidates))
        ids = objective.fill(inputs.input_ids, triggers)[b : b + 1].clone()
        ids[inputs.input_ids[b : b + 1] == placeholder(1)] = candidates[c]
        full = backend.model(input_ids=ids, attention_mask=inputs.attention_mask[b : b + 1],
                             position_ids=inputs.extra["position_ids"][b : b + 1]).logits[0, -1]
        assert torch.allclose(shared[row], torch.log_softmax(full, dim=-1), atol=1e-4)


@pytest.mark.parametrize("kind", ["causal", "causal_sp"])
def test_the_stored_prefix_gives_the_full_forward_gradient_and_evaluation(backends, kind: str) -> None:
    backend = backends[kind]
    shared, full = _objective(backend), _objective(backend, share_prefix=False)
    prompts = shared.render(TEXTS)
    inputs = shared.inputs(prompts)
    triggers = [_token(backend, "the"), _token(backend, "movie")]
    loss, gradient = shared.loss_and_gradient(inputs, triggers, GOLD)
    full_loss, full_gradient = full.loss_and_gradient(inputs, triggers, GOLD)
    assert loss == pytest.approx(full_loss, abs=1e-5)
    assert torch.allclose(gradient, full_gradient, atol=1e-4, rtol=1e-3)
    assert shared.evaluate(prompts, triggers, GOLD) == pytest.approx(full.evaluate(prompts, triggers, GOLD), abs=1e-5)
    passes = shared.prefixes.passes
    shared.evaluate(prompts, [_token(backend, "plot"), _token(backend, "movie")], GOLD)
    assert shared.prefixes.passes == passes  # the text before the triggers ran once, for everything


def test_the_packed_candidates_work_with_eager_attention(tiny_causal_lm) -> None:
    backend = load_backend(tiny_causal_lm, batch_size=4)
    backend.model.set_attn_implementation("eager")  # an additive mask instead of SDPA's boolean one
    assert backend.model.config._attn_implementation == "eager"
    objective = _objective(backend)
    inputs = objective.inputs(objective.render(TEXTS))
    triggers = [_token(backend, "the"), _token(backend, "movie")]
    candidates = _candidates(backend, 6)
    loop = reference_candidate_losses(objective, inputs, triggers, 0, candidates, GOLD)
    assert torch.allclose(objective.candidate_losses(inputs, triggers, 0, candidates, GOLD), loop, atol=1e-5)


def test_a_trigger_with_nothing_before_it_falls_back_to_the_batched_path(backends) -> None:
    backend = backends["causal"]  # byte-level BPE without a BOS token: nothing precedes the first trigger
    objective = _objective(backend, "[T] {text} it was {mask}")
    inputs = objective.inputs(objective.render(TEXTS))
    candidates = _candidates(backend, 6)
    loop = reference_candidate_losses(objective, inputs, [_token(backend, "the")], 0, candidates, GOLD)
    assert torch.allclose(objective.candidate_losses(inputs, [_token(backend, "the")], 0, candidates, GOLD), loop, atol=1e-5)
    assert objective.next_token_log_probs(inputs, [_token(backend, "the")], 0) is None  # fluency leaves this trigger free


# Not the tiny T5: its ReLU feed-forward makes the loss piecewise smooth, and its layer norm squares
# in float32, so no finite-difference step is both below the kinks and above the rounding noise.
@pytest.mark.parametrize("kind", ["causal", "masked", "causal_sp"])
def test_hotflip_estimate_agrees_with_a_finite_difference(backends, kind: str) -> None:
    backend = backends[kind]
    backend.model.double()
    try:
        objective = _objective(backend)
        inputs = objective.inputs(objective.render(TEXTS))
        triggers = [_token(backend, "the"), _token(backend, "movie")]
        loss, gradient = objective.loss_and_gradient(inputs, triggers, GOLD)
        embeddings = backend.model.get_input_embeddings().weight.detach()
        base = backend.embed(objective.fill(inputs.input_ids, triggers)).detach()
        for index in (0, 1):
            estimates = objective.hotflip_estimates(gradient, index, triggers[index])
            positions = inputs.input_ids == placeholder(index)
            for token in _candidates(backend, 4).tolist():
                direction = embeddings[token] - embeddings[triggers[index]]

                def loss_at(step: float) -> float:
                    moved = base.clone()
                    moved[positions] += step * direction
                    with torch.no_grad():
                        return float(objective.row_losses(backend.slot_logits(inputs, inputs_embeds=moved), GOLD).mean())

                # RMSNorm computes in float32 even in a float64 model, so the step
                # cannot be tiny; Richardson extrapolation of two central differences cancels the h**2 term.
                def central(step: float) -> float:
                    return (loss_at(step) - loss_at(-step)) / (2 * step)

                finite_difference = (4 * central(5e-3) - central(1e-2)) / 3
                assert estimates[token].item() == pytest.approx(finite_difference, rel=1e-3, abs=2e-5)
        assert loss == pytest.approx(objective.evaluate(objective.render(TEXTS), triggers, GOLD)[0], rel=1e-9)
    finally:
        backend.model.float()


def test_hotflip_candidates_respect_the_filter_and_skip_the_current_token(backends) -> None:
    backend = backends["causal"]
    objective = _objective(backend)
    inputs = objective.inputs(objective.render(TEXTS))
    current = _token(backend, "the")
    _, gradient = objective.loss_and_gradient(inputs, [current, current], GOLD)
    allowed = _allowed(backend)
    allowed[current] = True
    proposals = objective.hotflip_candidates(gradient, 0, current, allowed, 10)
    assert len(proposals) == 10 and current not in proposals.tolist()
    assert allowed[proposals].all()
    estimates = objective.hotflip_estimates(gradient, 0, current)
    others = torch.nonzero(allowed).flatten()
    others = others[(others != current) & ~torch.isin(others, proposals)]
    assert estimates[proposals].max() <= estimates[others].min()  # the k lowest estimates, nothing else


def test_the_label_likelihood_loss_is_autoprompts(backends) -> None:
    backend = backends["causal"]
    objective = _objective(backend, loss="label_likelihood")
    logits = torch.randn(4, backend.vocab_size)
    gold = torch.tensor([0, 1, 1, 0])
    log_probs = torch.log_softmax(logits, dim=-1)
    words = [_token(backend, "bad"), _token(backend, "good")]
    expected = -log_probs[torch.arange(4), torch.tensor(words)[gold]]
    assert torch.allclose(objective.row_losses(logits, gold), expected, atol=1e-6)
    cross_entropy = _objective(backend).row_losses(logits, gold)
    assert (cross_entropy < expected).all()  # normalised over the two classes only


def test_search_improves_the_batch_loss_and_is_reproducible(backends) -> None:
    backend = backends["causal"]
    allowed = [_allowed(backend)] * 2
    init = [_token(backend, "the")] * 2

    def run(seed: int):
        objective = _objective(backend)
        return search_triggers(objective, TEXTS, GOLD.tolist(), TEXTS[:4], GOLD[:4].tolist(), init_ids=init, allowed=allowed,
                               steps=4, candidates=8, restarts=2, batch_size=4, patience=None, seed=seed)

    first, again = run(3), run(3)
    assert [r.trigger_ids for r in first] == [r.trigger_ids for r in again]
    assert len(first) == 2 and first[0].history[0]["step"] == 0
    for run_ in first:
        assert all(allowed[0][t] for t in run_.trigger_ids) or run_.trigger_ids == init
        objective = _objective(backend)
        loss, accuracy = objective.evaluate(objective.render(TEXTS[:4]), run_.trigger_ids, GOLD[:4])
        assert (accuracy, loss) == pytest.approx((run_.dev_accuracy, run_.dev_loss))
    assert any(r.improvements for r in first)
    assert first[0].changed == (first[0].trigger_ids != init)


@pytest.mark.parametrize(("kind", "source"), [("causal", None), ("causal_sp", None),
                                              ("causal_sp", "[T] {text} [T] it was {mask}")])  # rows of different suffix lengths
@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("index", [0, 1])
def test_next_token_log_probs_are_the_full_forwards_at_the_token_before_the_trigger(backends, kind: str, source: str | None,
                                                                                    share_prefix: bool, index: int) -> None:
    backend = backends[kind]
    objective = _objective(backend, source, share_prefix=share_prefix)
    inputs = objective.inputs(objective.render(TEXTS))
    triggers = [_token(backend, "the"), _token(backend, "movie")]
    natural = objective.next_token_log_probs(inputs, triggers, index)
    rows = []
    for b in range(len(TEXTS)):
        length = int(inputs.attention_mask[b].sum())
        ids = objective.fill(inputs.input_ids, triggers)[b, -length:]
        position = int((inputs.input_ids[b, -length:] == placeholder(index)).nonzero()[0]) - 1
        rows.append(torch.log_softmax(backend.model(input_ids=ids[None]).logits[0, position].float(), dim=-1))
    assert torch.allclose(natural, torch.stack(rows).mean(dim=0), atol=1e-4)
    assert natural.shape == (backend.model.config.vocab_size,)


def test_fluency_restricts_hotflip_to_the_likeliest_allowed_tokens(backends) -> None:
    backend = backends["causal"]
    objective = _objective(backend)
    allowed = [_allowed(backend)] * 2
    seen: list[torch.Tensor] = []
    natural: list[torch.Tensor] = []
    read, propose = objective.next_token_log_probs, objective.hotflip_candidates

    def reading(inputs, triggers, index):
        natural.append(read(inputs, triggers, index))
        return natural[-1]

    def capture(gradient, index, current, eligible, k):
        assert torch.equal(eligible, most_likely(allowed[index], natural[-1], 5))  # the likeliest at this trigger, now
        seen.append(eligible)
        return propose(gradient, index, current, eligible, k)

    objective.next_token_log_probs, objective.hotflip_candidates = reading, capture
    runs = search_triggers(objective, TEXTS, GOLD.tolist(), TEXTS[:4], GOLD[:4].tolist(), init_ids=[_token(backend, "the")] * 2,
                           allowed=allowed, steps=3, candidates=8, restarts=1, batch_size=4, patience=None, seed=0, fluency=5)
    assert len(seen) == 3 and all(int(mask.sum()) == 5 and not bool((mask & ~allowed[0]).any()) for mask in seen)
    assert all(step["fluent"] for step in runs[0].history[1:])
    log_probs = torch.tensor([0.0, -1.0, -3.0, -0.5, -2.0])
    assert most_likely(torch.tensor([True, False, True, True, True]), log_probs, 2).tolist() == [True, False, False, True, False]


def test_fluency_needs_a_causal_model(backends) -> None:
    objective = _objective(backends["masked"])
    inputs = objective.inputs(objective.render(TEXTS))
    with pytest.raises(UserError, match="fluency needs a causal model"):
        objective.next_token_log_probs(inputs, [_token(backends["masked"], "the")] * 2, 0)


def test_found_triggers_are_written_as_text_that_renders_to_the_same_ids(backends) -> None:
    backend = backends["causal"]
    objective = _objective(backend)
    triggers = [_token(backend, "plot"), _token(backend, "movie")]
    written = written_template(objective, triggers, TEXTS)
    assert written == "{text} plot movie it was {mask}"
    with_ids = TemplateRenderer(objective.template, backend.tokenizer, trigger_ids=triggers).render(TEXTS, 100)
    assert TemplateRenderer(Template.parse(written), backend.tokenizer).render(TEXTS, 100) == with_ids


def test_a_fragment_trigger_is_not_written(backends) -> None:
    backend = backends["masked"]
    objective = _objective(backend)
    fragment = backend.tokenizer.convert_tokens_to_ids("##tas")
    assert written_template(objective, [fragment, _token(backend, "movie")], TEXTS) is None


def test_insert_triggers_after_or_before_the_text_or_before_the_slot() -> None:
    template = Template.parse("Review: {text}\nSentiment: {mask}")
    assert insert_triggers(template, 2, "after") == "Review: {text} [T] [T]\nSentiment: {mask}"
    assert insert_triggers(template, 3, "before") == "Review: [T] [T] [T] {text}\nSentiment: {mask}"
    assert insert_triggers(template, 2, "slot") == "Review: {text}\nSentiment: [T] [T] {mask}"
    assert insert_triggers(Template.parse("{text} It was\n{mask}"), 1, "slot") == "{text} It was [T]\n{mask}"
    literal = Template.parse("{{text}} {text} It was {mask}")
    assert insert_triggers(literal, 1, "before") == "{{text}} [T] {text} It was {mask}"


def test_objective_errors_are_clear(backends) -> None:
    backend = backends["causal"]
    with pytest.raises(UserError, match="has no trigger slot"):
        _objective(backend, "{text} it was {mask}")
    with pytest.raises(UserError, match="unknown loss"):
        _objective(backend, loss="hinge")
    with pytest.raises(UserError, match="must be last"):
        _objective(backend, "{text} [T] {mask} .")
