"""Content-addressed cache of slot distributions, in memory and on disk.

An entry is the ``[examples, vocab]`` log-probability matrix of one query on one chunk of
rendered prompts. Its key hashes everything the numbers depend on: the model's weight hash
and kind, the query, and the exact token ids of every prompt. A hit is therefore safe across
runs, templates and verbalizers; any change of model, tokenizer output or truncation misses.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from autoprompt_search.backends import SlotQuery
from autoprompt_search.templates import RenderedPrompt

CACHE_FORMAT = 2


class SlotCache:
    """LRU in memory (bounded in bytes) over an optional folder of ``.npy`` files."""

    def __init__(self, directory: Path | None = None, *, memory_bytes: int = 512 * 2**20) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_used = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(fingerprint: str, query: SlotQuery, prompts: Sequence[RenderedPrompt]) -> str:
        digest = hashlib.sha256(f"v{CACHE_FORMAT}|{fingerprint}|{query.width}|{query.prefix}|{len(prompts)}".encode())
        for prompt in prompts:
            # Lengths first, so that no two different prompt lists hash the same bytes.
            digest.update(np.asarray([len(prompt.before), len(prompt.after)], dtype=np.int64).tobytes())
            digest.update(np.asarray(prompt.before, dtype=np.int64).tobytes())
            digest.update(np.asarray(prompt.after, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        array = self._memory.get(key)
        if array is not None:
            self._memory.move_to_end(key)
        elif self.directory is not None and (path := self._path(key)).exists():
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a damaged entry is recomputed
        if array is None:
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, key: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=np.float32)
        self._remember(key, array)
        if self.directory is not None:
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    np.save(handle, array, allow_pickle=False)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def _remember(self, key: str, array: np.ndarray) -> None:
        if key in self._memory:
            self._memory_used -= self._memory.pop(key).nbytes
        if array.nbytes > self.memory_bytes:
            return
        self._memory[key] = array
        self._memory_used += array.nbytes
        while self._memory_used > self.memory_bytes:
            _, evicted = self._memory.popitem(last=False)
            self._memory_used -= evicted.nbytes

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npy"


def default_cache_dir() -> Path:
    from autoprompt_search.assets import cache_root

    return cache_root() / "slot_cache"
