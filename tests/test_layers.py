"""Imports point down the layers only: cli → tune → results → engine → the shared base. The
order is written once (`LAYERS`); a module that imports from a higher layer (at the top of the
file or inside a function) fails here, so the engine keeps running without Ray or MLflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "wartune"
# low to high; a module may import its own layer and those below it
LAYERS = {
    "base": ("wartune.errors", "wartune.version", "wartune.interrupts"),
    "engine": ("wartune.engine",),
    "results": ("wartune.results",),
    "tune": ("wartune.tune",),
    "cli": ("wartune.cli",),
    "package": ("wartune",),  # the public API (`wartune/__init__.py`) gathers every layer
}
ORDER = list(LAYERS)


def layer_of(module: str) -> str:
    """The layer of a dotted module name (its longest matching prefix)."""
    matches = [(len(prefix), layer) for layer, prefixes in LAYERS.items() for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]  # fmt: skip
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """Each wartune module a file imports, with its line (`from wartune import x` names
    `wartune.x` where x is a module of the package, else the package itself)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "wartune"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "wartune":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    PACKAGE.parent / sub.replace(".", "/")
                ).is_dir()
                found.append((node.lineno, sub if is_module else node.module))
    return found


def upward_imports(root: Path) -> list[str]:
    """`file:line: module (layer) imports name (higher layer)` for every import up the layers."""
    wrong = []
    for path in sorted(root.rglob("*.py")):
        own = layer_of(module_name(path))
        for line, name in imported(ast.parse(path.read_text(), str(path))):
            if ORDER.index(layer_of(name)) > ORDER.index(own):
                wrong.append(f"{path.relative_to(REPO)}:{line}: {own} imports {name} ({layer_of(name)})")
    return wrong


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(PACKAGE) == []


@pytest.mark.parametrize(
    ("where", "line", "layer"),
    [
        ("engine/trainer.py", "from wartune.tune.params import train_config_of\n", "wartune.tune.params (tune)"),
        ("results/store.py", "def f():\n    from wartune.cli import app\n", "wartune.cli.app (cli)"),
        ("engine/data.py", "from wartune import __version__\n", "wartune (package)"),
        ("errors.py", "import wartune.engine.config\n", "wartune.engine.config (engine)"),
    ],
)
def test_an_import_up_the_layers_is_named(tmp_path, monkeypatch, where, line, layer):
    """The check itself: each kind of upward import (top level, inside a function, from the
    package root, plain `import`) in a copy of the package is found and named."""
    import shutil

    copy = tmp_path / "wartune"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "search_spaces"))
    (copy / where).write_text((copy / where).read_text() + "\n" + line)
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    monkeypatch.setattr(f"{__name__}.PACKAGE", copy)
    wrong = upward_imports(copy)
    assert len(wrong) == 1 and wrong[0].startswith(f"wartune/{where}:") and wrong[0].endswith(layer), wrong
