"""The bundled search spaces travel with the package: loaded by name, and from a wheel installed elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from autoprompt_search import assets
from autoprompt_search.cli.main import main
from autoprompt_search.errors import UserError
from autoprompt_search.spaces import BUNDLED_DIR, bundled_spaces, load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"

LOCAL_MR = """\
dataset: mr
templates:
  seeds: ["{text} Local: {mask}"]
verbalizers:
  seeds: [{negative: [bad], positive: [good]}]
"""


# ---------------------------------------------------------------- loading by name


def test_bundled_spaces_are_the_top_level_folder():
    top = {p.stem: p.read_bytes() for p in SPACES.glob("*.yaml")}
    assert bundled_spaces() == sorted(name for name in top if name != "base")
    assert {p.stem: p.read_bytes() for p in BUNDLED_DIR.glob("*.yaml")} == top  # the same files, however linked
    assert "mr" in bundled_spaces() and "base" not in bundled_spaces()


@pytest.mark.parametrize("name", ["mr", "mr.yaml"])
def test_a_bundled_name_loads_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = load_space(name)
    assert space.source == BUNDLED_DIR / "mr.yaml" and space.source.is_file()
    assert space.name == "mr" and space.raw == load_space(SPACES / "mr.yaml").raw


def test_every_bundled_name_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert [load_space(name).name for name in bundled_spaces()] == bundled_spaces()


@pytest.mark.parametrize("name", ["mr.yaml", "mr"])
def test_a_local_file_wins_over_a_bundled_name(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(LOCAL_MR, encoding="utf-8")
    space = load_space(name)
    assert space.source == Path(name) and [t.source for t in space.templates.seeds] == ["{text} Local: {mask}"]


@pytest.mark.parametrize("name", ["nope", "nope.yaml", "mr.yml"])
def test_an_unknown_name_lists_the_bundled_ones(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        load_space(name)
    bundled = ", ".join(bundled_spaces())
    assert str(info.value) == f"{name}: no such file, nor a bundled search space (bundled: {bundled})"


def test_a_path_with_a_folder_is_never_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for given in ("./mr.yaml", "sub/mr.yaml", str(tmp_path / "mr")):
        with pytest.raises(UserError, match=r": no such file$"):
            load_space(given)


def test_validate_takes_a_bundled_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "mr"]) == 0
    assert capsys.readouterr().out.startswith(f"{BUNDLED_DIR / 'mr.yaml'}: ok: mr: ")


# ---------------------------------------------------------------- a wheel outside the repository


def _run(command: list[str | Path], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """Run a command; on failure, fail the test with its output."""
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    shown = " ".join(map(str, command))
    assert done.returncode == 0, f"{shown} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _copy_of_the_tree(folder: Path) -> Path:
    """The working tree without build outputs. setuptools builds in place and never empties build/lib, so a wheel
    built in a used checkout can carry modules deleted since; a copy builds from the sources alone."""
    ignore = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    "results", ".whl", ".gl")
    return Path(shutil.copytree(ROOT, folder, symlinks=True, ignore=ignore))


@pytest.mark.integration
def test_a_wheel_runs_a_bundled_space_outside_the_repository(tmp_path):
    missing = [name for name in ("smollm2-135m", "mr") if not assets.is_fetched(name)]
    if missing:
        pytest.skip(f"not fetched: {', '.join(missing)} (run: autoprompt-search assets fetch)")
    assert not tmp_path.resolve().is_relative_to(ROOT)
    pip = ["--disable-pip-version-check", "--no-input", "--no-index"]  # --no-index: nothing is downloaded
    started = time.perf_counter()

    # The build uses this environment's setuptools (--no-build-isolation), so it needs no index either.
    source = _copy_of_the_tree(tmp_path / "source")
    assert (source / "search_spaces").is_symlink() == (ROOT / "search_spaces").is_symlink()
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", *pip, "--no-deps", "--no-build-isolation", "-w", wheels, source],
         cwd=tmp_path)
    [wheel] = wheels.glob("autoprompt_search-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"autoprompt_search/search_spaces/{p.name}" for p in SPACES.glob("*.yaml")} <= names

    # A fresh environment from the base interpreter. pip runs from here (--python), before the dependencies are made
    # visible, so it neither sees nor touches the editable install of this environment.
    venv = tmp_path / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", *pip, "--no-deps", wheel], cwd=tmp_path)
    # Dependencies: this environment's site-packages as a plain path line. Its __editable__ .pth (the finder that maps
    # autoprompt_search to the checkout) is not executed from there, and the venv's own site-packages come first.
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path).strip())
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "_autoprompt_search_test_deps.pth").write_text("".join(f"{p}\n" for p in ours), encoding="utf-8")

    work = tmp_path / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    imported = _run([python, "-c", "import autoprompt_search, torch; print(autoprompt_search.__file__)"], work, env=env)
    package = site / "autoprompt_search"
    assert Path(imported.strip()).parent == package  # the wheel's copy, not the checkout
    built = time.perf_counter()

    command = venv / "bin" / "autoprompt-search"
    validated = _run([command, "validate", "mr"], cwd=work, env=env)
    assert validated.startswith(f"{package / 'search_spaces' / 'mr.yaml'}: ok: mr: ")
    out = tmp_path / "run"
    # The same seed and test sample as test_integration's MR search, which runs first: on a cold
    # CI machine most of this search's forward passes are then already in the slot cache.
    _run([command, "search", "mr", "--trials", "5", "--test-limit", "48", "--out", out], work, env=env, timeout=1800)
    searched = time.perf_counter()

    assert all((out / name).is_file() for name in ("best.json", "ensemble.json", "results.json"))
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["dataset"]["splits"]["test"]["n"] == 48 and results["best"]["test"]["n"] == 48
    assert not (work / "results").exists() and list(work.iterdir()) == []  # nothing written into the working folder
    print(f"\nwheel + venv + install: {built - started:.1f} s; validate + search: {searched - built:.1f} s")
