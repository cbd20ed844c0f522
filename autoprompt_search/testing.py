"""Tiny random models for tests: built from configs and `tokenizers` in seconds, offline.

Each builder writes a Hugging Face folder (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json) that reloads with `AutoTokenizer` and the
matching `AutoModelFor...` class. The weights are random (seeded) with a wide
init so that output distributions are far from uniform; the point is the code
path, not accuracy. The three tokenizer families of real checkpoints are covered:

* `build_tiny_masked_lm`: BERT + WordPiece, uncased, `[CLS] $A [SEP]`.
  Multi-token words: "fantastic" -> fan ##tas ##tic, "unwatchable" -> un ##watch ##able,
  "masterpiece" -> master ##piece.
* `build_tiny_causal_lm`: Llama + byte-level BPE (GPT-2 / SmolLM2 style), 420 tokens
  (256 bytes + 2 specials + merges); the post-processor adds no BOS/EOS;
  " great" -> Ġgreat (one token) but "great" -> g reat.
* `build_tiny_seq2seq`: T5 + SentencePiece-style Unigram ("▁" word prefix), `$A </s>`,
  sentinels `<extra_id_0>`..`<extra_id_9>`.
* `build_tiny_causal_lm_sentencepiece`: Llama + the Unigram tokenizer, `<s> $A`
  (a BOS is prepended, like Llama-2).

`MULTI_TOKEN_WORDS` lists words that are never whole tokens in any of them; with a
leading space, "great", "good", "bad", "terrible", "awful", "wonderful", "movie",
"film", "acting", "plot", "it", "a" are single tokens in all of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

TINY_CORPUS: list[str] = [
    "The movie was great.",
    "The film was terrible.",
    "It was a good movie.",
    "It was a bad film.",
    "The acting was wonderful.",
    "The acting was awful.",
    "The plot was great and the acting was good.",
    "The plot was bad and the acting was terrible.",
    "I loved this movie, it was wonderful.",
    "I hated this film, it was awful.",
    "What a great film!",
    "What a terrible movie!",
    "The story was good and the music was great.",
    "The story was boring and the music was bad.",
    "It is a good film with great acting.",
    "It is a bad movie with awful acting.",
    "The best movie of the year.",
    "The worst film of the year.",
    "A wonderful story with a great cast.",
    "A boring story with a terrible cast.",
    "The cast was good, the plot was great.",
    "The cast was bad, the plot was awful.",
    "I really liked it, a great movie.",
    "I really did not like it, a bad movie.",
    "This film is good and funny.",
    "This film is bad and dull.",
    "Great acting, great plot, great movie.",
    "Terrible acting, terrible plot, terrible movie.",
    "The ending was good.",
    "The ending was bad.",
    "Overall it was a great experience.",
    "Overall it was an awful experience.",
    "The director did a wonderful job.",
    "The director did a terrible job.",
    "It was not good, it was bad.",
    "It was not bad, it was good.",
    "A fantastic film, a masterpiece.",
    "An unwatchable movie, a total mess.",
    "The characters were good and the dialogue was great.",
    "The characters were bad and the dialogue was awful.",
]

MULTI_TOKEN_WORDS: list[str] = ["fantastic", "unwatchable", "masterpiece"]
"""Words that every tiny tokenizer splits into two or more tokens."""

# Word pieces for the WordPiece vocab: MULTI_TOKEN_WORDS are left out as whole words.
_WORDPIECES = ["fan", "##tas", "##tic", "un", "##watch", "##able", "master", "##piece", "##s", "##ed", "##ing"]
_SENTINELS = [f"<extra_id_{i}>" for i in range(10)]


def _words(text: str) -> list[str]:
    """Lowercased words and punctuation of `text`, as BertPreTokenizer sees them."""
    pre = pre_tokenizers.BertPreTokenizer()
    return [w for w, _ in pre.pre_tokenize_str(text.lower())]


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, folder: Path) -> Path:
    """Save model (safetensors) and tokenizer to `folder` and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _seeded(build: Callable[[], PreTrainedModel], seed: int) -> PreTrainedModel:
    """Call `build()` under `seed` without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    return model.eval()


def _wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """Uncased WordPiece with a hand-made vocab (corpus words + a few pieces)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for line in TINY_CORPUS for w in _words(line)} - set(MULTI_TOKEN_WORDS))
    chars = sorted({c for w in words for c in w})
    vocab_list = specials + words + [p for p in _WORDPIECES if p not in words]
    vocab_list += [c for c in chars if c not in vocab_list] + [f"##{c}" for c in chars]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def _byte_bpe_tokenizer(vocab_size: int = 420) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on TINY_CORPUS; the post-processor adds no special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets only; no BOS/EOS are inserted (like GPT-2 and SmolLM2).
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
        model_max_length=128,
    )


def _unigram(specials: list[str], vocab_size: int = 160) -> Tokenizer:
    """SentencePiece-style Unigram ("▁" marks word starts) trained on TINY_CORPUS.

    The trainer's piece order and last float digits vary from run to run, so the
    pieces are re-sorted by rounded score (then text) to make the ids deterministic.
    """
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trained = Tokenizer(models.Unigram())
    trained.pre_tokenizer = metaspace
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    trained.train_from_iterator(TINY_CORPUS, trainer)
    pieces = json.loads(trained.to_str())["model"]["vocab"]
    assert [p for p, _ in pieces[: len(specials)]] == specials
    rest = sorted(((p, round(s, 3)) for p, s in pieces[len(specials) :]), key=lambda ps: (-ps[1], ps[0]))
    tok = Tokenizer(models.Unigram([(p, 0.0) for p in specials] + rest, unk_id=specials.index("<unk>")))
    tok.add_special_tokens(specials)
    tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def _t5_tokenizer() -> PreTrainedTokenizerFast:
    """Unigram with `<pad>`=0, `</s>`=1, `<unk>`=2, sentinels last; appends `</s>`."""
    tok = _unigram(["<pad>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=_SENTINELS,
        model_max_length=128,
    )


def _llama_sp_tokenizer() -> PreTrainedTokenizerFast:
    """Unigram with `<unk>`=0, `<s>`=1, `</s>`=2, `<pad>`=3; prepends `<s>` (like Llama-2)."""
    tok = _unigram(["<unk>", "<s>", "</s>", "<pad>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=128,
    )


def build_tiny_masked_lm(folder: Path, seed: int = 0) -> Path:
    """Tiny random BERT masked LM with an uncased WordPiece tokenizer."""
    tokenizer = _wordpiece_tokenizer()
    config = BertConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,
    )
    return _save(_seeded(lambda: BertForMaskedLM(config), seed), tokenizer, folder)


def _llama(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """Tiny random Llama sized to `tokenizer`."""
    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.5,
    )
    return _seeded(lambda: LlamaForCausalLM(config), seed)


def build_tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """Tiny random Llama causal LM with a byte-level BPE tokenizer (no BOS added)."""
    tokenizer = _byte_bpe_tokenizer()
    return _save(_llama(tokenizer, seed), tokenizer, folder)


def build_tiny_causal_lm_sentencepiece(folder: Path, seed: int = 0) -> Path:
    """Tiny random Llama causal LM with a Unigram/Metaspace tokenizer (BOS prepended)."""
    tokenizer = _llama_sp_tokenizer()
    return _save(_llama(tokenizer, seed), tokenizer, folder)


def build_tiny_seq2seq(folder: Path, seed: int = 0) -> Path:
    """Tiny random T5 encoder-decoder with a Unigram tokenizer and sentinels."""
    tokenizer = _t5_tokenizer()
    config = T5Config(
        d_model=16,
        d_ff=32,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        d_kv=8,
        vocab_size=len(tokenizer),
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_factor=1.0,
    )
    return _save(_seeded(lambda: T5ForConditionalGeneration(config), seed), tokenizer, folder)


def write_tiny_dataset(path: Path, copies: int = 1) -> Path:
    """A CSV (label,text) of TINY_CORPUS: even lines positive, odd lines negative."""
    import csv

    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "text"])
        for copy in range(copies):
            suffix = "" if copy == 0 else f" ({copy})"
            for index, sentence in enumerate(TINY_CORPUS):
                writer.writerow(["positive" if index % 2 == 0 else "negative", sentence + suffix])
    return path


def write_tiny_space(folder: Path, model_folder: Path, *, trials: int = 6, k: int = 4, extra: str = "") -> Path:
    """A runnable search space over :func:`write_tiny_dataset` and a tiny model folder."""
    folder = Path(folder)
    write_tiny_dataset(folder / "tiny.csv", copies=2)
    space = folder / "tiny.yaml"
    space.write_text(f"""\
name: tiny
dataset: {{path: tiny.csv, text_fields: [text], label_field: label, labels: [negative, positive], test_fraction: 0.3}}
model: {model_folder}
few_shot: {{k: {k}, seeds: [13, 21]}}
templates:
  seeds: ["{{text}} It was {{mask}}", "{{text}} All in all, the movie was {{mask}}"]
  blocks: {{prefixes: ["", "Review: "], connectors: [" "], endings: ["It was {{mask}}", "Overall it was {{mask}}"]}}
  max_candidates: 6
verbalizers:
  seeds: [{{negative: [bad], positive: [good]}}, {{negative: [terrible], positive: [great]}}]
generators:
  label_words: {{enabled: true, words_per_class: 3, templates: 2}}
  label_probe: {{enabled: true, words_per_class: 2}}
  triggers: {{enabled: true, count: 2, candidates: 6, steps: 3, restarts: 2, batch_size: 4, patience: 2}}
calibration: [none, prior]
budget: {{trials: {trials}}}
pruner: {{type: median, chunks: 2}}
ensemble: {{size: 3}}
{extra}""")
    return space
