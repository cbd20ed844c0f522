"""The package's layering, checked on its source: no module imports a module of a higher layer,
every module is placed in a layer, and only ``optuna_internals`` touches Optuna's private parts."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import autoprompt_search

# The layers, lowest first. Dependencies flow downwards only: a module may import modules of its
# own layer and of lower layers, never of a higher one. Foundations (errors, files, hashes) feed
# the data, the data feed the prompt language (templates, verbalizers), which the model layer
# tokenizes and runs; scoring puts prompt and model together; the candidate generators score
# candidates; the configuration (search spaces) names the generators' configs; the search runs the
# Optuna study over the candidates a configuration allows; the ensemble and the outputs read the
# finished search; training starts from the outputs (a run folder, a prompt file) and writes
# outputs of its own; the pipeline sequences all of it, and the command line only calls the
# pipeline, training and the outputs. Names are module paths relative to the package; a package name (``candidates``,
# ``cli``) covers every module inside it. ``__init__`` is the package's own ``__init__.py``.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("errors", "arguments", "fileio", "logs", "provenance", "version", "calibration", "space_checks", "asset_registry",
                    "examples", "postgres_cluster")),
    ("data", ("assets", "corpora", "data", "tokenization", "gguf_convert")),
    ("prompt language", ("templates", "verbalizers")),
    ("model", ("backends", "cache", "adapters")),
    ("scoring", ("scoring", "prompt", "ranking", "evaluation", "testing", "label_free")),
    ("candidates", ("candidates",)),
    ("configuration", ("space_types", "spaces", "splits", "starter")),
    ("search", ("optuna_internals", "study", "search")),
    ("ensemble", ("ensemble", "estimate")),
    ("outputs", ("prompt_file", "export", "predictor", "run_folder", "report", "finish", "model_ensemble")),
    ("training", ("training",)),
    ("pipeline", ("pipeline", "analysis", "__init__")),
    ("cli", ("cli",)),
]

# The one module allowed to use Optuna's private internals (see its docstring).
OPTUNA_INTERNALS = "optuna_internals"
# Private Optuna attributes the package has needed; reading any of them elsewhere is a violation.
OPTUNA_PRIVATE_NAMES = ("_storage", "_trial_id", "_study_id", "_rng", "_random_sampler", "_cached_frozen_trial",
                        "_lazy_random_state")

PACKAGE = "autoprompt_search"
ROOT = Path(autoprompt_search.__file__).parent


@dataclass(frozen=True)
class Import:
    """One import statement's target inside the package."""

    line: int
    module: str  # dotted, relative to the package ("candidates.generators.base", "__init__")


def module_name(path: Path, root: Path = ROOT) -> str:
    """``candidates/generators/base.py`` -> ``candidates.generators.base``; the top ``__init__.py`` -> ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """The index of the layer that ``module`` (or the package holding it) belongs to."""
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or module.startswith(member + "."):
                return index
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (its ``else`` still runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            stack.append(node.test)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _is_submodule(package: str, name: str, root: Path) -> bool:
    """Whether ``package.name`` is a module or subpackage on disk (``package`` relative, "" for the top)."""
    folder = root.joinpath(*package.split(".")) if package else root
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()


def package_imports(source: str, module: str, is_package: bool, root: Path = ROOT) -> list[Import]:
    """The package modules that ``source`` (the text of ``module``) imports at run time, in functions too."""
    found: list[Import] = []
    here = module.split(".") if is_package else module.split(".")[:-1]
    if module == "__init__":
        here = []
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE:
                    found.append(Import(node.lineno, "__init__"))
                elif alias.name.startswith(PACKAGE + "."):
                    found.append(Import(node.lineno, alias.name[len(PACKAGE) + 1:]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                target = node.module[len(PACKAGE) + 1:]
            else:
                continue
            for alias in node.names:  # ``from autoprompt_search import data`` imports the module data
                if alias.name != "*" and _is_submodule(target, alias.name, root):
                    found.append(Import(node.lineno, f"{target}.{alias.name}" if target else alias.name))
                else:
                    found.append(Import(node.lineno, target or "__init__"))
    return sorted(dict.fromkeys(found), key=lambda i: i.line)  # one per (line, module), in source order


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def layering_violations(root: Path = ROOT) -> list[str]:
    """Every unplaced module and every import of a higher layer, one line each."""
    problems: list[str] = []
    for module, path in package_modules(root).items():
        where = path.relative_to(root.parent)
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{where}: module {module!r} is in no layer: add it to LAYERS")
            continue
        for found in package_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py", root):
            target = layer_of(found.module)
            if target is None:
                problems.append(f"{where}:{found.line}: imports {found.module!r}, which is in no layer")
            elif target > layer:
                problems.append(f"{where}:{found.line}: {module} (layer {layer} {LAYERS[layer][0]}) "
                                f"imports {found.module} (layer {target} {LAYERS[target][0]})")
    return problems


def optuna_private_uses(source: str) -> list[str]:
    """Uses of Optuna's private internals in ``source``: imports from ``optuna`` modules or names that
    start with ``_``, and reads of the private attributes in :data:`OPTUNA_PRIVATE_NAMES`."""
    uses: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optuna":
            private = [p for p in node.module.split(".") if p.startswith("_")]
            private += [a.name for a in node.names if a.name.startswith("_")]
            if private:
                uses.append(f"line {node.lineno}: from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "optuna" and any(p.startswith("_") for p in alias.name.split(".")):
                    uses.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in OPTUNA_PRIVATE_NAMES:
            uses.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id == "optuna":
                uses.append(f"line {node.lineno}: optuna...{node.attr}")
    return uses


# -- the checks on the package ---------------------------------------------------------------


def test_every_module_is_in_a_layer_and_imports_no_higher_layer() -> None:
    problems = layering_violations()
    assert not problems, f"{len(problems)} layering violation(s):\n" + "\n".join(problems)


def test_only_optuna_internals_touches_optuna_private_internals() -> None:
    problems = [f"{path.relative_to(ROOT.parent)}: {use}" for module, path in package_modules().items()
                if module != OPTUNA_INTERNALS for use in optuna_private_uses(path.read_text(encoding="utf-8"))]
    assert not problems, "Optuna internals used outside optuna_internals.py:\n" + "\n".join(problems)


def test_optuna_internals_is_where_the_private_uses_are() -> None:
    """The check above can see what it looks for: the one allowed module does use private internals."""
    assert optuna_private_uses((ROOT / "optuna_internals.py").read_text(encoding="utf-8"))


def test_the_layer_table_names_each_module_once() -> None:
    names = [name for _, members in LAYERS for name in members]
    assert len(names) == len(set(names))


# -- the checker itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from autoprompt_search.backends import load_backend", "prompt", ["backends"]),
        ("from autoprompt_search import data, load", "spaces", ["data", "__init__"]),
        ("import autoprompt_search.candidates.pools as p", "study", ["candidates.pools"]),
        ("def f():\n    from autoprompt_search.study import leaderboard\n", "ranking", ["study"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from autoprompt_search.scoring import S\nelse:\n"
            "    from autoprompt_search.search import P\n",
            "data",
            ["search"],
        ),
        (
            "from .base import Generator\nfrom ..pools import Pools",
            "candidates.generators.x",
            ["candidates.generators.base", "candidates.pools"],
        ),
        ("import optuna\nimport json", "errors", []),
    ],
)
def test_imports_are_read_from_the_source(source: str, module: str, expected: list[str]) -> None:
    assert [found.module for found in package_imports(source, module, is_package=False)] == expected


def test_a_higher_layer_import_is_caught(tmp_path: Path) -> None:
    """A fake package whose lowest module imports the command line fails the check, naming both layers."""
    root = tmp_path / PACKAGE
    (root / "cli").mkdir(parents=True)
    (root / "errors.py").write_text("def f():\n    from autoprompt_search.cli.main import main\n")
    (root / "cli" / "main.py").write_text("from autoprompt_search import errors\n")
    (root / "mystery.py").write_text("")
    problems = layering_violations(root)
    cli = f"cli.main (layer {len(LAYERS) - 1} cli)"
    assert any("errors.py:2" in p and "layer 0 foundation" in p and cli in p for p in problems), problems
    assert any("'mystery' is in no layer" in p for p in problems), problems


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from optuna.samplers._lazy_random_state import LazyRandomState", True),
        ("study._storage.set_trial_state_values(trial._trial_id, state=1)", True),
        ("x = optuna.samplers._tpe", True),
        ("import optuna._imports", True),
        ("from optuna.samplers import TPESampler\nself._cache = 1", False),
    ],
)
def test_optuna_private_uses_are_recognised(source: str, caught: bool) -> None:
    assert bool(optuna_private_uses(source)) is caught
