"""Content-addressed cache of slot distributions, in memory and on disk.

An entry is the ``[examples, vocab]`` log-probability matrix of one query on one chunk of
rendered prompts, stored as 16-bit fixed point (:func:`encode_log_probs`): half the bytes of
float32, every log-probability within 0.0005 of the model's. Its key hashes everything the
numbers depend on: the model's weight hash and kind, the query, and the exact token ids of every
prompt. A hit is therefore safe across
runs, templates and verbalizers; any change of model, tokenizer output or truncation misses.

The folder is bounded: at most ``max_bytes`` (default ``$AUTOPROMPT_SEARCH_CACHE_MAX``, else 8 GiB),
least recently used entries evicted first (a hit touches its file), counted from the folder before
every write, so that workers sharing it keep to the cap together (entries are few and large: a
thousand files are counted in milliseconds), and it never takes the disk
below ``min_free_bytes`` of free space (``$AUTOPROMPT_SEARCH_CACHE_MIN_FREE``, else 2 GiB): it evicts,
or, when evicting is not enough, stops writing and says so once. Partial writes (``.tmp``) count
against the cap too; one untouched for ``STALE_WRITE_SECONDS`` was left by a process killed mid-write
and is the first thing evicted, while one still being written is never removed. ``autoprompt-search
cache`` shows, prunes and clears it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from autoprompt_search.backends import SlotQuery
from autoprompt_search.errors import UserError
from autoprompt_search.logs import Log, to_stderr
from autoprompt_search.templates import RenderedPrompt

CACHE_FORMAT = 2  # in every key; an entry of the float32 format is read and recoded (see SlotCache.get)
# Log-probabilities from 0 down to LOG_PROB_FLOOR in 65,535 even steps (0.00098 apart: each value is
# off by at most 0.00049), anything lower stored as the floor. An absolute bound on every word's
# error, which float16 lacks (its step grows to 0.016 at -20); a word the model puts below e^-64
# (1.6e-28) is no label word.
LOG_PROB_FLOOR = -64.0
_STEPS = 65535
CODE_ERROR = -LOG_PROB_FLOOR / _STEPS / 2  # the most a value above the floor moves
CODED_SUFFIX = ".c16.npy"  # an entry's file name: KEY.c16.npy (KEY.npy: the float32 format)
MAX_BYTES_VARIABLE, MIN_FREE_VARIABLE = "AUTOPROMPT_SEARCH_CACHE_MAX", "AUTOPROMPT_SEARCH_CACHE_MIN_FREE"
DEFAULT_MAX_BYTES = 8 * 2**30
DEFAULT_MIN_FREE_BYTES = 2 * 2**30
PRUNE_TO = 0.9  # an eviction frees down to this share of the cap, so that every write does not evict
# A write takes seconds and its file's modification time moves as it grows; one untouched for an hour
# belongs to a process that died mid-write (SIGKILL, power loss) and will never be renamed into place.
STALE_WRITE_SECONDS = 3600
PARTIAL_SUFFIX = ".tmp"
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def parse_size(text: str, where: str) -> int:
    """Bytes from ``512M``, ``8G``, ``1.5GB`` or a plain number (binary units); ``where`` names the setting."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).upper() not in _UNITS:
        raise UserError(f"{where}: {text!r} is not a size; write e.g. 512M, 8G or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _size_setting(variable: str, default: int) -> int:
    value = os.environ.get(variable)
    return default if value is None or not value.strip() else parse_size(value, variable)


def encode_log_probs(values: np.ndarray) -> np.ndarray:
    """``uint16`` codes of log-probabilities (see LOG_PROB_FLOOR); :func:`decode_log_probs` reads them."""
    scaled = np.clip(np.asarray(values, dtype=np.float32), LOG_PROB_FLOOR, 0.0) * np.float32(_STEPS / LOG_PROB_FLOOR)
    return np.rint(scaled).astype(np.uint16)


def decode_log_probs(codes: np.ndarray) -> np.ndarray:
    """float32 log-probabilities of codes (any slice of an entry: only what is read is decoded)."""
    return np.asarray(codes, dtype=np.float32) * np.float32(LOG_PROB_FLOOR / _STEPS)


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int
    used: float  # when it was last written or read (file modification time)
    orphaned: bool = False  # a partial write whose process died: removable whatever its age

    @property
    def in_progress(self) -> bool:
        """A partial write another process is still making: counted, never removed."""
        return self.path.name.endswith(PARTIAL_SUFFIX) and not self.orphaned


class SlotCache:
    """LRU in memory (bounded in bytes) over an optional folder of ``.npy`` files (bounded too);
    both hold the entries' codes (:func:`encode_log_probs`)."""

    def __init__(self, directory: Path | None = None, *, memory_bytes: int = 512 * 2**20, max_bytes: int | None = None,
                 min_free_bytes: int | None = None, warn: Log | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.memory_bytes = memory_bytes
        self.max_bytes = max_bytes if max_bytes is not None else _size_setting(MAX_BYTES_VARIABLE, DEFAULT_MAX_BYTES)
        self.min_free_bytes = min_free_bytes if min_free_bytes is not None else _size_setting(MIN_FREE_VARIABLE, DEFAULT_MIN_FREE_BYTES)
        self.warn = warn or to_stderr
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_used = 0
        self.writing = True  # False once the disk had no room left for an entry
        self.hits = 0
        self.misses = 0
        self.evicted = 0

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
        """The entry's codes, or None. An entry of the float32 format (``KEY.npy``, written before
        entries were coded) is coded as a fresh pass would be, the same codes, and moved to
        ``KEY.c16.npy`` at half its size: a version of the package that reads float32 never finds
        codes where it expects log-probabilities."""
        array = self._memory.get(key)
        if array is not None:
            self._memory.move_to_end(key)
        elif self.directory is not None:
            array = self._read(key)
        if array is None:
            self.misses += 1
            return None
        self.hits += 1
        return array

    def _read(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        codes = self._load(path, np.uint16)
        if codes is not None:
            return codes
        legacy = path.with_name(f"{key}.npy")
        values = self._load(legacy, np.float32)
        if values is None:
            return self._load(path, np.uint16)  # another process may have recoded it meanwhile
        codes = encode_log_probs(values)
        if self.writing:
            try:
                self._write(path, codes)
            except OSError:
                return codes  # a full disk or a read-only folder: the float32 entry stays as it is
            self._forget_file(legacy)
        return codes

    def _load(self, path: Path, dtype: type) -> np.ndarray | None:
        """The entry at ``path`` (touched: recently used), or None; a damaged one is removed, to be recomputed."""
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.dtype != dtype or array.ndim != 2:
                raise ValueError(f"not an entry: {array.dtype} {array.shape}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self._forget_file(path)
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:  # a folder this user may read but not write
            pass
        return array

    def _forget_file(self, path: Path) -> None:
        try:
            path.unlink()
        except OSError:  # gone already, or not ours to remove
            pass

    def put(self, key: str, codes: np.ndarray) -> None:
        """Keep an entry's codes (:func:`encode_log_probs`, never raw log-probabilities)."""
        if codes.dtype != np.uint16:
            raise TypeError(f"a cache entry holds uint16 codes (encode_log_probs), got {codes.dtype}")
        array = np.ascontiguousarray(codes)
        self._remember(key, array)
        if self.directory is None or not self.writing or not self._make_room(array.nbytes + 128):
            return
        try:
            self._write(self._path(key), array)
        except FileNotFoundError:  # the partial write was taken for an orphan (stalled over an hour) and removed
            pass  # not stored: a later run recomputes it

    def _write(self, path: Path, array: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=PARTIAL_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def entries(self) -> list[CacheEntry]:
        """The folder's entries, least recently used first."""
        return sorted(self._files("*/*.npy"), key=lambda entry: entry.used)

    def partial_writes(self) -> list[CacheEntry]:
        """The folder's partial writes, oldest first, each marked orphaned when untouched for
        ``STALE_WRITE_SECONDS``."""
        stale_before = time.time() - STALE_WRITE_SECONDS
        return sorted((CacheEntry(found.path, found.size, found.used, orphaned=found.used < stale_before)
                       for found in self._files(f"*/*{PARTIAL_SUFFIX}")), key=lambda entry: entry.used)

    def listing(self) -> list[CacheEntry]:
        """Everything that takes the folder's room, in eviction order: orphaned partial writes,
        then entries least recently used first, then the writes still in progress (never evicted)."""
        partial = self.partial_writes()
        return ([entry for entry in partial if entry.orphaned] + self.entries()
                + [entry for entry in partial if entry.in_progress])

    def _files(self, pattern: str) -> list[CacheEntry]:
        if self.directory is None or not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.glob(pattern):
            try:
                stat = path.stat()
            except FileNotFoundError:  # evicted or renamed into place by another process meanwhile
                continue
            found.append(CacheEntry(path, stat.st_size, stat.st_mtime))
        return found

    def prune(self, max_bytes: int, listing: list[CacheEntry] | None = None) -> tuple[int, int]:
        """Evict in :meth:`listing`'s order (as just listed, or listed now) until the folder holds
        at most ``max_bytes``, leaving writes in progress alone; returns (files removed, bytes freed),
        counting only the files this call removed (another process may evict the same ones)."""
        listing = self.listing() if listing is None else listing
        total = sum(entry.size for entry in listing)
        removed = freed = 0
        for entry in listing:
            if total - freed <= max_bytes or entry.in_progress:
                break
            try:
                entry.path.unlink()
            except FileNotFoundError:  # evicted by another process: gone from the total all the same
                total -= entry.size
                continue
            removed, freed = removed + 1, freed + entry.size
        self.evicted += removed
        return removed, freed

    def _make_room(self, size: int) -> bool:
        """Evict for an entry of ``size`` bytes within the cap and the free-space floor; False
        (and one warning) when even an empty cache would leave too little of the disk free."""
        if size > self.max_bytes:  # larger than the whole cache may be: kept in memory only
            return False
        listing = self.listing()  # listed afresh: other processes write here too
        used = sum(entry.size for entry in listing)
        if used + size > self.max_bytes:
            used -= self.prune(max(0, int(self.max_bytes * PRUNE_TO) - size), listing)[1]
        self.directory.mkdir(parents=True, exist_ok=True)
        shortfall = self.min_free_bytes + size - shutil.disk_usage(self.directory).free
        if shortfall > 0:
            self.prune(max(0, used - shortfall))
            if self.min_free_bytes + size > shutil.disk_usage(self.directory).free:
                self.writing = False
                self.warn(f"slot cache {self.directory}: stopped writing, the disk has less than "
                          f"{self.min_free_bytes / 2**30:.1f} GiB free ({MIN_FREE_VARIABLE}); results are unaffected, "
                          "later runs recompute what was not stored")
                return False
        return True

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
        return self.directory / key[:2] / f"{key}{CODED_SUFFIX}"


def default_cache_dir() -> Path:
    from autoprompt_search.assets import cache_root

    return cache_root() / "slot_cache"
