"""Shared fixtures: offline mode, tiny random models, cache folders."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
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


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The garbage collector off for one test: what the test drops is freed by reference counting alone,
    so an object kept by a reference cycle stays alive where the test can see it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory):
    """AUTOPROMPT_SEARCH_CACHE at an empty folder for a whole module (``pytestmark = pytest.mark.usefixtures("module_cache")``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOPROMPT_SEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


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


# Injected into a copy of a page: once everything has loaded, it records what a reader would see.
_BROWSER_PROBE = """<script>
window.addEventListener("load", () => {
  const shown = (el) => el.offsetHeight > 0 && el.offsetWidth > 0;
  const report = {
    sections: [...document.querySelectorAll("section[id]")].filter(shown).map((s) => s.id),
    images: [...document.images].map((img) => ({alt: img.alt, complete: img.complete, width: img.naturalWidth, shown: shown(img)})),
    tables: document.querySelectorAll("table").length,
    title: document.title,
  };
  document.body.setAttribute("data-probe", JSON.stringify(report));
});
</script>"""


@pytest.fixture(scope="session")
def browser_view(tmp_path_factory: pytest.TempPathFactory):
    """``view(html_path) -> dict``: open a page in headless Chromium and return what it shows.

    Skipped where Chromium is not installed, unless AUTOPROMPT_SEARCH_REQUIRE_BROWSER=1 (CI sets
    it after installing Debian's chromium), where a missing browser fails instead."""
    import json
    import re
    import shutil
    import subprocess

    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        if os.environ.get("AUTOPROMPT_SEARCH_REQUIRE_BROWSER") == "1":
            pytest.fail("AUTOPROMPT_SEARCH_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("browser")

    def view(page: Path) -> dict:
        probed = folder / f"probed-{page.name}"
        probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _BROWSER_PROBE + "</body>"), encoding="utf-8")
        # Flags as this machine needs them: no sandbox as root, no GPU, no background network calls.
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={folder / 'profile'}", "--window-size=1200,2000", "--virtual-time-budget=10000",
                   "--dump-dom", probed.resolve().as_uri()]
        dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
        found = re.search(r'data-probe="([^"]*)"', dom)
        assert found, f"the page did not finish loading in Chromium:\n{dom[:500]}"
        import html

        return json.loads(html.unescape(found.group(1)))

    return view


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL server for the session (:mod:`autoprompt_search.postgres_cluster`).

    Skipped where it cannot start, unless AUTOPROMPT_SEARCH_REQUIRE_POSTGRES=1 (CI sets it): there
    the tests fail instead, so CI never passes without running them.
    """
    from autoprompt_search.postgres_cluster import PostgresUnavailable, PrivatePostgres

    try:
        server = PrivatePostgres().start()
    except PostgresUnavailable as error:
        if os.environ.get("AUTOPROMPT_SEARCH_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"AUTOPROMPT_SEARCH_REQUIRE_POSTGRES=1 but the PostgreSQL server did not start: {error}")
        pytest.skip(f"no PostgreSQL server here: {error}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server, for one test."""
    import re

    name = "t_" + re.sub(r"\W", "_", request.node.name)[:40].lower() + f"_{os.getpid()}_{id(request) % 100000}"
    return postgres_server.create_database(name)

