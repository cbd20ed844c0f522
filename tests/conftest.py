"""Shared fixtures: offline mode, tiny random models, cache folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never download anything. Set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from autoprompt_search import testing  # noqa: E402


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point AUTOPROMPT_SEARCH_CACHE at an empty per-test folder (unit tests only)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("AUTOPROMPT_SEARCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def real_cache_dir() -> Path:
    """The real cache root that integration tests read fetched assets from."""
    if os.environ.get("AUTOPROMPT_SEARCH_CACHE"):
        return Path(os.environ["AUTOPROMPT_SEARCH_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "autoprompt_search"


@pytest.fixture(scope="session")
def tiny_masked_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny BERT masked LM with a WordPiece tokenizer."""
    return testing.build_tiny_masked_lm(tmp_path_factory.mktemp("tiny_masked_lm"))


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny Llama causal LM with a byte-level BPE tokenizer."""
    return testing.build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_causal_lm"))


@pytest.fixture(scope="session")
def tiny_seq2seq(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny T5 encoder-decoder with a Unigram tokenizer."""
    return testing.build_tiny_seq2seq(tmp_path_factory.mktemp("tiny_seq2seq"))


@pytest.fixture(scope="session")
def tiny_causal_sp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny Llama causal LM with a SentencePiece-style Unigram tokenizer."""
    return testing.build_tiny_causal_lm_sentencepiece(tmp_path_factory.mktemp("tiny_causal_sp"))
