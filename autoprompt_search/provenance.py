"""What produced a result: library versions, command line, machine."""

from __future__ import annotations

import platform
import shlex
import sys
from datetime import datetime, timezone
from importlib import metadata

_LIBRARIES = ("autoprompt-search", "torch", "transformers", "tokenizers", "optuna", "scikit-learn", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def command_line() -> str:
    return (
        shlex.join(["autoprompt-search" if sys.argv and sys.argv[0].endswith("autoprompt-search") else sys.argv[0], *sys.argv[1:]])
        if sys.argv
        else ""
    )


def machine() -> dict[str, str | int]:
    import os

    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def source_revision() -> str | None:
    """The git commit of the installed source (with '+changes' if the tree differs), if it is a checkout."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def stamp() -> dict:
    """The provenance block every result file carries."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "source_revision": source_revision(),
        "versions": library_versions(),
        "machine": machine(),
    }
