"""Label tokens from a linear probe of the slot's hidden state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprompt_search.backends import load_backend
from autoprompt_search.candidates.label_probe import probe_label_words
from autoprompt_search.candidates.vocabulary import whole_word_tokens
from autoprompt_search.errors import UserError
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.testing import TINY_CORPUS
from autoprompt_search.tokenization import encode_in_context

TEXTS = [{"text": sentence} for sentence in TINY_CORPUS[:16]]
GOLD = [i % 2 for i in range(len(TEXTS))]
LABELS = ["negative", "positive"]
TEMPLATE = Template.parse("{text} All in all it was {mask}")


@pytest.fixture(scope="module")
def scorer(tiny_causal_lm):
    return PromptScorer(load_backend(tiny_causal_lm, batch_size=4))


def _token(scorer, word: str) -> int:
    return encode_in_context(scorer.backend.tokenizer, [" " + word])[0][0]


def test_a_planted_direction_is_found(scorer, monkeypatch) -> None:
    """Hidden states at +u for one class and -u for the other (plus noise): the probe's weight
    points along u, so the first word of each class is the allowed token whose output embedding
    has the largest dot product with that class's side of u."""
    output = scorer.backend.model.get_output_embeddings().weight.detach().double()
    rng = np.random.default_rng(0)
    direction = torch.from_numpy(rng.normal(size=output.shape[1]))
    signs = torch.tensor([1.0 if g == 1 else -1.0 for g in GOLD], dtype=torch.float64)
    rows = signs[:, None] * direction[None] + torch.from_numpy(rng.normal(scale=0.05, size=(len(TEXTS), output.shape[1])))
    monkeypatch.setattr(scorer.backend, "slot_hidden_states", lambda prompts, query=None: rows[: len(prompts)].float())
    result = probe_label_words(scorer, TEMPLATE, TEXTS, GOLD, LABELS, words_per_class=3)
    allowed = whole_word_tokens(scorer.backend.tokenizer, leading_space=True)
    ids = torch.tensor(sorted(allowed))
    alignment = output[ids] @ direction
    assert result.words["positive"][0].token_id == int(ids[alignment.argmax()])
    assert result.words["negative"][0].token_id == int(ids[alignment.argmin()])
    assert result.cv_accuracy == 1.0 and result.regularization > 0


def test_words_are_whole_distinct_ranked_and_respect_exclusions(scorer) -> None:
    passes = scorer.backend.forward_passes
    result = probe_label_words(scorer, TEMPLATE, TEXTS, GOLD, LABELS, words_per_class=4, exclude=["Great"])
    assert scorer.backend.forward_passes > passes  # one pass over train for the hidden states
    allowed = whole_word_tokens(scorer.backend.tokenizer, leading_space=True)
    seen = set()
    for label in LABELS:
        words = result.words[label]
        assert 0 < len(words) <= 4
        assert all(allowed[w.token_id] == w.word and w.label == label for w in words)
        assert all(w.specificity > 0 for w in words)
        assert [w.specificity for w in words] == sorted((w.specificity for w in words), reverse=True)
        assert not seen & {w.word.lower() for w in words}
        seen |= {w.word.lower() for w in words}
    assert "great" not in seen


def test_the_probe_is_deterministic(scorer) -> None:
    first = probe_label_words(scorer, TEMPLATE, TEXTS, GOLD, LABELS, words_per_class=3)
    again = probe_label_words(scorer, TEMPLATE, TEXTS, GOLD, LABELS, words_per_class=3)
    assert first == again


def test_a_label_with_too_few_examples_is_a_clear_error(scorer) -> None:
    gold = [0] * (len(TEXTS) - 1) + [1]
    with pytest.raises(UserError, match="at least 2 train examples"):
        probe_label_words(scorer, TEMPLATE, TEXTS, gold, LABELS, words_per_class=3)


def test_hidden_states_times_the_output_embedding_are_the_slot_logits(tiny_causal_lm, tiny_masked_lm, tiny_seq2seq) -> None:
    for folder, source in ((tiny_causal_lm, "{text} It was {mask}"), (tiny_masked_lm, "{text} It was {mask} ."),
                           (tiny_seq2seq, "{text} It was {mask} .")):
        backend = load_backend(folder, batch_size=3)
        prompts = PromptScorer(backend).render(Template.parse(source), TEXTS[:5])
        hidden = backend.slot_hidden_states(prompts)
        head = backend.model.get_output_embeddings()
        logits = hidden @ head.weight.detach().T + (head.bias.detach() if getattr(head, "bias", None) is not None else 0)
        expected = backend.next_token_log_probs(prompts)
        assert hidden.shape == (5, head.weight.shape[1])
        assert torch.allclose(torch.log_softmax(logits, dim=-1), expected, atol=1e-4), folder
