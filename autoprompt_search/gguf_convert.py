"""Convert a GGUF causal language model into a plain safetensors Hugging Face folder.

transformers dequantizes GGUF weights on load but refuses ``save_pretrained`` on such a model,
so the weights are copied into a fresh model built from the same config and saved from there.
Loading a GGUF takes tens of seconds; the converted folder reloads in well under a second.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from autoprompt_search.logs import Log

CHECK_SENTENCE = "The movie was surprisingly good, and the ending made me smile."


def convert_gguf(gguf_path: Path, out_dir: Path, *, log: Log = print) -> None:
    """Write ``config.json``, ``model.safetensors`` and tokenizer files for ``gguf_path`` into ``out_dir``.

    Checks that the reloaded folder gives the same token ids and logits as the GGUF load.
    """
    with _quiet_progress():
        _convert(gguf_path, out_dir, log)


def _convert(gguf_path: Path, out_dir: Path, log: Log) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_dir, gguf_name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=gguf_name, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        source_dir, gguf_file=gguf_name, dtype=torch.float32, local_files_only=True
    )
    gguf_model.eval()
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config

    model = AutoModelForCausalLM.from_config(config)
    result = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"{gguf_path}: GGUF weights do not match the {type(model).__name__} built from its config "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    model.eval()
    _sane_special_ids(model, tokenizer, log)

    with torch.no_grad():
        inputs = tokenizer(CHECK_SENTENCE, return_tensors="pt")
        reference = gguf_model(**inputs).logits
    del gguf_model

    out_dir.mkdir(parents=True, exist_ok=True)
    for key in ("local_files_only", "gguf_file"):  # loading options, not tokenizer settings
        tokenizer.init_kwargs.pop(key, None)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    del model

    reloaded_tok = AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True)
    reloaded = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32, local_files_only=True)
    reloaded.eval()
    check = reloaded_tok(CHECK_SENTENCE, return_tensors="pt")
    if check["input_ids"].tolist() != inputs["input_ids"].tolist():
        raise RuntimeError(f"{out_dir}: saved tokenizer encodes differently from the GGUF tokenizer")
    with torch.no_grad():
        logits = reloaded(**check).logits
    max_diff = float((logits - reference).abs().max())
    if max_diff > 1e-4:
        raise RuntimeError(f"{out_dir}: reloaded model's logits differ from the GGUF load by {max_diff:.3g}")
    log(f"  converted folder reloads with identical logits (max |diff| {max_diff:.1e})")


def _sane_special_ids(model: torch.nn.Module, tokenizer, log: Log) -> None:
    """Make the tokenizer, config and generation config agree on in-vocabulary bos/eos/pad ids."""
    config = model.config
    vocab_size = config.get_text_config().vocab_size
    if len(tokenizer) > vocab_size:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {vocab_size}")
    if tokenizer.eos_token is None:
        raise RuntimeError("the GGUF tokenizer defines no eos token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        log(f"  no pad token: using eos {tokenizer.eos_token!r} as pad")
    generation = getattr(model, "generation_config", None)
    for role in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{role}_token_id")
        if token_id is not None and not 0 <= token_id < vocab_size:
            raise RuntimeError(f"tokenizer {role} id {token_id} is outside the vocabulary of {vocab_size}")
        setattr(config, f"{role}_token_id", token_id)
        if generation is not None:
            setattr(generation, f"{role}_token_id", token_id)


def check_masked_lm(folder: Path) -> None:
    """``folder`` must load as a masked LM with all its weights, and its tokenizer must load."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    with _quiet_progress():
        AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        _, info = AutoModelForMaskedLM.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    if any(info.get(key) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        raise RuntimeError(f"{folder}: weights do not match the config: {info}")


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide transformers' per-tensor progress bars; fetch prints its own progress lines."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
