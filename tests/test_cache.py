"""The slot cache's bounds on disk: the size cap with least-recently-used eviction, the free-space
floor, the settings from the environment, and the ``cache`` command."""

from __future__ import annotations

import os
import shutil
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from autoprompt_search.cache import (
    CODE_ERROR,
    LOG_PROB_FLOOR,
    MAX_BYTES_VARIABLE,
    STALE_WRITE_SECONDS,
    SlotCache,
    decode_log_probs,
    encode_log_probs,
    parse_size,
)
from autoprompt_search.cli.main import main
from autoprompt_search.errors import UserError

ENTRY = np.zeros((4, 512), dtype=np.uint16)  # 4 KiB of codes, a little more as an .npy file


def entry_size(tmp_path: Path) -> int:
    probe = SlotCache(tmp_path / "probe", max_bytes=2**30, min_free_bytes=0)
    probe.put("aa" * 32, ENTRY)
    return probe.entries()[0].size


def keys(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


def test_the_folder_stays_under_its_cap_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    size = entry_size(tmp_path)
    cache = SlotCache(tmp_path / "cache", max_bytes=4 * size, min_free_bytes=0)
    first, *others = keys(5)
    for key in (first, *others[:3]):
        cache.put(key, ENTRY)
        time.sleep(0.01)  # distinct modification times
    cache._memory.clear()  # read the first entry back from disk: the read makes it recently used
    assert cache.get(first) is not None
    time.sleep(0.01)
    cache.put(others[3], ENTRY)  # over the cap: the least recently used go, down to 90% of it
    on_disk = {entry.path.name.split(".")[0] for entry in cache.entries()}
    assert sum(entry.size for entry in cache.entries()) <= 4 * size
    assert on_disk == {others[2], first, others[3]} and cache.evicted == 2


def test_caches_sharing_a_folder_keep_to_its_cap_together(tmp_path: Path) -> None:
    """Workers of one search share the folder: each counts what the others wrote before it writes."""
    size = entry_size(tmp_path)
    workers = [SlotCache(tmp_path / "shared", max_bytes=4 * size, min_free_bytes=0) for _ in range(2)]
    for i, key in enumerate(keys(12)):
        workers[i % 2].put(key, ENTRY)
        time.sleep(0.01)
        assert sum(entry.size for entry in workers[0].entries()) <= 4 * size
    # each write over the cap evicts down to 90% of it less the new entry: 2 entries left, then 3 with it
    assert sum(worker.evicted for worker in workers) == 8
    assert {entry.path.name.split(".")[0] for entry in workers[0].entries()} == set(keys(12)[8:])


def test_partial_writes_count_against_the_cap_and_orphaned_ones_are_evicted_first(tmp_path: Path) -> None:
    """A process killed mid-write leaves a ``.tmp`` file that will never be renamed into place: it takes
    room, goes before any entry, while a write still in progress is counted and left alone."""
    size = entry_size(tmp_path)
    cache = SlotCache(tmp_path / "cache", max_bytes=5 * size, min_free_bytes=0)
    for key in keys(2):
        cache.put(key, ENTRY)
    folder = cache._path(keys(1)[0]).parent
    orphan, writing = folder / "tmpdead.tmp", folder / "tmplive.tmp"
    for partial in (orphan, writing):
        partial.write_bytes(bytes(size))
    now, stale = time.time(), STALE_WRITE_SECONDS
    # not in order of age: the first entry was used before the orphan was left, the write in progress
    # began before the second entry was used
    for path, when in ((cache._path(keys(1)[0]), now - 3 * stale), (orphan, now - 2 * stale), (writing, now - 60),
                       (cache._path(keys(2)[1]), now - 30)):
        os.utime(path, (when, when))
    assert [entry.path for entry in cache.listing()] == [orphan, cache._path(keys(1)[0]), cache._path(keys(2)[1]), writing]
    cache.put(keys(3)[2], ENTRY)  # 4 files + this one fit in 5 sizes: nothing evicted
    time.sleep(0.01)  # a later modification time than the entry just written
    assert orphan.exists() and cache.evicted == 0
    cache.put(keys(4)[3], ENTRY)  # over the cap: the orphan goes first, then the oldest entry
    assert not orphan.exists() and writing.exists() and cache.evicted == 2
    assert {entry.path.name.split(".")[0] for entry in cache.entries()} == set(keys(4)[1:])
    assert sum(entry.size for entry in cache.listing()) <= 5 * size
    assert cache.prune(0) == (3, 3 * size) and [entry.path for entry in cache.listing()] == [writing]


def test_a_write_whose_partial_file_was_taken_for_an_orphan_is_not_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer stalled past STALE_WRITE_SECONDS finds its partial file evicted: the run goes on."""
    cache = SlotCache(tmp_path / "cache", max_bytes=2**30, min_free_bytes=0)

    def evicted_meanwhile(source, target):
        os.unlink(source)
        raise FileNotFoundError(source)

    monkeypatch.setattr("autoprompt_search.cache.os.replace", evicted_meanwhile)
    cache.put(keys(1)[0], ENTRY)
    assert cache.listing() == [] and cache.get(keys(1)[0]) is not None  # kept in memory only


def test_an_entry_larger_than_the_cap_stays_in_memory_only(tmp_path: Path) -> None:
    cache = SlotCache(tmp_path / "cache", max_bytes=100, min_free_bytes=0)
    cache.put(keys(1)[0], ENTRY)
    assert cache.entries() == [] and cache.get(keys(1)[0]) is not None


def test_the_free_space_floor_evicts_then_stops_writing_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = entry_size(tmp_path)
    usage = namedtuple("usage", "total used free")
    free = {"bytes": 100 * size}  # free space were the cache empty: its own files take from it

    def disk_usage(path) -> usage:
        return usage(10**12, 0, free["bytes"] - sum(entry.size for entry in cache.entries()))

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    warnings: list[str] = []
    cache = SlotCache(tmp_path / "cache", max_bytes=2**30, min_free_bytes=50 * size, warn=warnings.append)
    first, second, third = keys(3)
    cache.put(first, ENTRY)
    cache.put(second, ENTRY)
    assert len(cache.entries()) == 2 and not warnings
    free["bytes"] = 52 * size + size // 2  # room for one more only by evicting: the oldest goes
    cache.put(third, ENTRY)
    assert first not in {entry.path.name.split(".")[0] for entry in cache.entries()} and cache.writing
    free["bytes"] = 40 * size  # no eviction can help: the cache stops writing and says so once
    cache.put(keys(5)[4], ENTRY)
    cache.put(keys(6)[5], ENTRY)
    assert not cache.writing and len(warnings) == 1 and "stopped writing" in warnings[0]
    assert cache.get(keys(6)[5]) is not None  # still served from memory


@pytest.mark.parametrize(("text", "expected"), [("512M", 512 * 2**20), ("8G", 8 * 2**30), ("1.5GB", int(1.5 * 2**30)),
                                                ("4096", 4096), (" 2 gib ", 2 * 2**30)])
def test_sizes_are_read_with_binary_units(text: str, expected: int) -> None:
    assert parse_size(text, "here") == expected


@pytest.mark.parametrize("text", ["", "lots", "8Q", "-1G"])
def test_a_bad_size_names_the_setting(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BYTES_VARIABLE, text or " x ")
    with pytest.raises(UserError, match=MAX_BYTES_VARIABLE):
        SlotCache(tmp_path)


def test_the_cap_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BYTES_VARIABLE, "3M")
    assert SlotCache(tmp_path).max_bytes == 3 * 2**20


def test_the_cache_command_shows_prunes_and_clears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("AUTOPROMPT_SEARCH_CACHE", str(tmp_path))
    size = entry_size(tmp_path / "sizes")
    cache = SlotCache(tmp_path / "slot_cache", max_bytes=2**30, min_free_bytes=0)
    for key in keys(6):
        cache.put(key, ENTRY)
        os.utime(cache._path(key), (time.time(), time.time()))
    legacy = tmp_path / "slot_cache" / "ff" / f"{'ff' * 32}.npy"
    legacy.parent.mkdir(exist_ok=True)
    np.save(legacy, np.zeros((2, 3), dtype=np.float32))  # the float32 format
    orphan = legacy.with_name("tmpdead.tmp")
    orphan.write_bytes(bytes(100))
    os.utime(orphan, (0, 0))
    assert main(["cache", "info"]) == 0
    assert "entries    7," in (out := capsys.readouterr().out) and "1 of them (0.0 MiB) in the float32 format" in out
    assert "partial    1 unfinished write(s) (0.0 MiB)" in out and "1 of them left by processes that died mid-write" in out
    legacy.unlink()
    assert main(["cache", "prune", "--max-size", str(3 * size)]) == 0  # the orphan, then the 3 least recently used
    assert len(SlotCache(tmp_path / "slot_cache").entries()) == 3 and not orphan.exists()
    assert "removed 4 files" in capsys.readouterr().out
    assert main(["cache", "prune", "--max-size", "lots"]) == 2
    assert "--max-size" in capsys.readouterr().err
    writing = orphan.with_name("tmplive.tmp")
    writing.write_bytes(bytes(100))
    assert main(["cache", "clear"]) == 0
    assert SlotCache(tmp_path / "slot_cache").entries() == [] and writing.exists()
    assert "removed 3 files" in (out := capsys.readouterr().out) and "left 1 write(s) in progress" in out


def test_codes_keep_every_log_probability_within_half_a_step_and_floor_the_rest() -> None:
    values = np.concatenate([-np.logspace(-6, np.log10(-LOG_PROB_FLOOR), 5000), [0.0, LOG_PROB_FLOOR]]).astype(np.float32)
    decoded = decode_log_probs(encode_log_probs(values))
    assert decoded.dtype == np.float32 and np.abs(decoded - values).max() <= CODE_ERROR * 1.001 < 0.0005
    assert list(decode_log_probs(encode_log_probs(np.array([-80.0, -np.inf], dtype=np.float32)))) == [LOG_PROB_FLOOR] * 2
    assert encode_log_probs(values).nbytes * 2 == values.nbytes  # half of float32


def test_an_entry_holds_codes_only_and_a_foreign_file_is_a_miss(tmp_path) -> None:
    cache = SlotCache(tmp_path, max_bytes=2**30, min_free_bytes=0)
    with pytest.raises(TypeError, match="uint16 codes"):
        cache.put("ab" * 32, np.zeros((2, 3), dtype=np.float32))
    foreign = tmp_path / "cd" / f"{'cd' * 32}.c16.npy"
    foreign.parent.mkdir()
    np.save(foreign, np.zeros((2, 3), dtype=np.int64))
    assert SlotCache(tmp_path, max_bytes=2**30, min_free_bytes=0).get("cd" * 32) is None and not foreign.exists()


def test_a_float32_entry_is_read_as_the_codes_of_a_fresh_pass_and_rewritten_at_half_the_size(tmp_path) -> None:
    values = -np.random.default_rng(0).exponential(5.0, size=(8, 300)).astype(np.float32)
    key = "ef" * 32
    legacy = tmp_path / "ef" / f"{key}.npy"
    legacy.parent.mkdir()
    np.save(legacy, values)  # as the float32 format wrote it
    cache = SlotCache(tmp_path, max_bytes=2**30, min_free_bytes=0)
    assert np.array_equal(cache.get(key), encode_log_probs(values))
    assert not legacy.exists() and [entry.path.name for entry in cache.entries()] == [f"{key}.c16.npy"]
    assert cache.entries()[0].size < values.nbytes / 2 + 200
    assert np.array_equal(SlotCache(tmp_path, max_bytes=2**30, min_free_bytes=0).get(key), encode_log_probs(values))


def test_a_float32_entry_that_cannot_be_rewritten_is_kept_and_still_served(tmp_path, monkeypatch) -> None:
    values = -np.ones((2, 5), dtype=np.float32)
    key = "ab" * 32
    legacy = tmp_path / "ab" / f"{key}.npy"
    legacy.parent.mkdir()
    np.save(legacy, values)
    cache = SlotCache(tmp_path, max_bytes=2**30, min_free_bytes=0)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tempfile.mkstemp", full_disk)
    assert np.array_equal(cache.get(key), encode_log_probs(values)) and legacy.exists()
