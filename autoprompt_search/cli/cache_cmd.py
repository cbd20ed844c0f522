"""``autoprompt-search cache``: the slot cache's size and bounds, pruning and clearing it."""

from __future__ import annotations

import argparse
import shutil


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="show, prune or clear the slot cache",
                                   description="The slot cache keeps each template's slot distributions so that no "
                                               "forward pass is repeated; it is bounded by $AUTOPROMPT_SEARCH_CACHE_MAX "
                                               "(default 8G) and keeps $AUTOPROMPT_SEARCH_CACHE_MIN_FREE (default 2G) of "
                                               "the disk free.")
    commands = parser.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    commands.add_parser("info", help="where it is, how large, its bounds").set_defaults(func=run_info)
    prune = commands.add_parser("prune", help="evict the least recently used entries down to a size")
    prune.add_argument("--max-size", help="size to prune to, e.g. 2G (default: the cache's cap)")
    prune.set_defaults(func=run_prune)
    commands.add_parser("clear", help="remove every entry").set_defaults(func=run_clear)


def _cache():
    from autoprompt_search.cache import SlotCache, default_cache_dir

    return SlotCache(default_cache_dir())


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def run_info(args: argparse.Namespace) -> int:
    from autoprompt_search.cache import CODED_SUFFIX

    cache = _cache()
    entries = cache.entries()
    used = sum(entry.size for entry in entries)
    print(f"folder     {cache.directory}")
    print(f"entries    {len(entries)}, {_size(used)}")
    legacy = [entry for entry in entries if not entry.path.name.endswith(CODED_SUFFIX)]
    if legacy:
        print(f"           {len(legacy)} of them ({_size(sum(e.size for e in legacy))}) in the float32 format, "
              "recoded at half the size when next read")
    partial = cache.partial_writes()
    if partial:
        orphaned = [entry for entry in partial if entry.orphaned]
        print(f"partial    {len(partial)} unfinished write(s) ({_size(sum(e.size for e in partial))}), counted against the cap; "
              f"{len(orphaned)} of them left by processes that died mid-write, evicted first")
    print(f"cap        {_size(cache.max_bytes)} (least recently used entries evicted first)")
    if cache.directory.exists():
        print(f"disk free  {_size(shutil.disk_usage(cache.directory).free)} (the cache keeps at least {_size(cache.min_free_bytes)})")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from autoprompt_search.cache import parse_size

    cache = _cache()
    target = parse_size(args.max_size, "--max-size") if args.max_size is not None else cache.max_bytes
    removed, freed = cache.prune(target)
    print(f"removed {removed} files ({_size(freed)}); {cache.directory} now holds {_size(sum(e.size for e in cache.listing()))}")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    cache = _cache()
    removed, freed = cache.prune(0)
    writing = cache.partial_writes()
    print(f"removed {removed} files ({_size(freed)}) from {cache.directory}"
          + (f"; left {len(writing)} write(s) in progress by another process" if writing else ""))
    return 0
