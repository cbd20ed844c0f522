"""The tiny random models of autoprompt_search.testing reload offline and tokenize as intended."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
)

from autoprompt_search import testing

TOKENIZER_FIXTURES = ["tiny_masked_lm", "tiny_causal_lm", "tiny_seq2seq", "tiny_causal_sp"]


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_offline_env_is_set() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_corpus_has_both_polarities() -> None:
    text = " ".join(testing.TINY_CORPUS).lower()
    assert 30 <= len(testing.TINY_CORPUS) <= 60
    for word in ["great", "good", "wonderful", "terrible", "bad", "awful", "movie", "film", "acting", "plot"]:
        assert word in text


@pytest.mark.parametrize(
    ("fixture", "auto_class"),
    [
        ("tiny_masked_lm", AutoModelForMaskedLM),
        ("tiny_causal_lm", AutoModelForCausalLM),
        ("tiny_causal_sp", AutoModelForCausalLM),
        ("tiny_seq2seq", AutoModelForSeq2SeqLM),
    ],
)
def test_reload_and_forward(fixture: str, auto_class: type, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(folder)
    model = auto_class.from_pretrained(folder).eval()
    assert model.config.vocab_size == len(tok)
    batch = tok(["The movie was great.", "It was a bad film, really."], return_tensors="pt", padding=True)
    extra = {}
    if model.config.is_encoder_decoder:
        start = model.config.decoder_start_token_id
        extra["decoder_input_ids"] = torch.full((2, 1), start, dtype=torch.long)
    with torch.no_grad():
        logits = model(**batch, **extra).logits
    assert logits.shape[0] == 2 and logits.shape[-1] == len(tok)
    assert torch.isfinite(logits).all()
    # Wide init: next-token distributions are far from uniform.
    probs = logits.softmax(-1)
    assert probs.max(-1).values.min() > 5.0 / len(tok)


def test_builders_are_deterministic(tmp_path: Path) -> None:
    a = testing.build_tiny_seq2seq(tmp_path / "a", seed=0)
    b = testing.build_tiny_seq2seq(tmp_path / "b", seed=0)
    c = testing.build_tiny_seq2seq(tmp_path / "c", seed=1)
    for name in ["tokenizer.json", "model.safetensors"]:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_builder_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    testing.build_tiny_causal_lm(tmp_path / "m", seed=5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("fixture", TOKENIZER_FIXTURES)
def test_multi_token_words_are_split(fixture: str, request: pytest.FixtureRequest) -> None:
    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    for word in testing.MULTI_TOKEN_WORDS:
        assert len(_ids(tok, " " + word)) >= 2, (fixture, word)
    for word in ["great", "terrible", "good", "bad"]:
        assert len(_ids(tok, " " + word)) == 1, (fixture, word)


def test_wordpiece_lowercases_and_splits(tiny_masked_lm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_masked_lm)
    assert tok.tokenize("Great") == ["great"]
    assert tok.tokenize("fantastic") == ["fan", "##tas", "##tic"]
    assert tok.tokenize("unwatchable") == ["un", "##watch", "##able"]
    assert tok.tokenize("masterpiece") == ["master", "##piece"]
    ids = tok("It was [MASK].")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.mask_token_id in ids and tok.pad_token_id == 0
    assert tok.decode(_ids(tok, "A fantastic film")) == "a fantastic film"


def test_byte_level_bpe_leading_space(tiny_causal_lm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_causal_lm)
    great, space_great = _ids(tok, "great"), _ids(tok, " great")
    assert len(space_great) == 1 and great != space_great
    assert tok.convert_ids_to_tokens(space_great) == ["Ġgreat"]
    assert _ids(tok, "a great")[-1] == space_great[0]
    # The post-processor adds nothing: no BOS, no EOS.
    assert tok("a great")["input_ids"] == _ids(tok, "a great")
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert tok.pad_token == "<pad>" and tok.pad_token_id != tok.eos_token_id
    assert tok.tokenize(" fantastic") == ["Ġfan", "tast", "ic"]
    assert tok.decode(_ids(tok, "The movie was fantastic!")) == "The movie was fantastic!"


def test_unigram_metaspace(tiny_seq2seq: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_seq2seq)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.tokenize("great") == tok.tokenize(" great") == ["▁great"]
    great = tok.convert_tokens_to_ids("▁great")
    ids = tok("a great")["input_ids"]
    assert ids[-2:] == [great, tok.eos_token_id]  # `</s>` is appended
    pieces = tok.tokenize("fantastic")
    assert len(pieces) >= 2 and pieces[0].startswith("▁")
    assert not any(p.startswith("▁") for p in pieces[1:])
    text = "The movie was fantastic."
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def test_t5_sentinels(tiny_seq2seq: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_seq2seq)
    assert tok.tokenize("<extra_id_0>") == ["<extra_id_0>"]
    sentinel = tok.convert_tokens_to_ids("<extra_id_0>")
    assert sentinel != tok.unk_token_id
    ids = _ids(tok, "It was <extra_id_0>.")
    assert ids.count(sentinel) == 1
    assert "<extra_id_9>" in tok.all_special_tokens


def test_sentencepiece_llama_prepends_bos(tiny_causal_sp: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_causal_sp)
    ids = tok("a great")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1:] == _ids(tok, "a great")
    assert ids[-1] == tok.convert_tokens_to_ids("▁great") != tok.eos_token_id
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}) == 4


def test_isolated_cache(isolated_cache: Path) -> None:
    assert os.environ["AUTOPROMPT_SEARCH_CACHE"] == str(isolated_cache)
    assert isolated_cache.is_dir() and not any(isolated_cache.iterdir())


def test_real_cache_dir(real_cache_dir: Path, tmp_path: Path) -> None:
    assert real_cache_dir.name == "autoprompt_search" or "AUTOPROMPT_SEARCH_CACHE" in os.environ
    assert tmp_path not in real_cache_dir.parents
