"""The package's shape: the folders are the layers, and each imports only those below it.

docs/architecture.md draws the tree; this test holds the table. Every import
counts, ``TYPE_CHECKING`` ones included: a type-only back edge still means the
module depends on all of what it names. An upward call goes through an
interface passed in, never an import. The imports are read from both trees
there may be: the installed package the suite runs against, and the checkout
beside the tests (when the suite runs from one), so neither can drift.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shellserver

#: Bottom to top. ``shellserver/__init__.py`` (the package's face: its version) is below all.
ORDER = ["text", "ops", "store", "files", "hub", "terminal", "shell", "wires", "app"]
#: Which layers each layer may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "text": set(),
    "ops": {"text"},
    "store": {"ops", "text"},
    "files": {"ops", "text"},
    "hub": {"ops", "text"},
    "terminal": {"ops", "text"},
    "shell": {"terminal", "hub", "store", "files", "ops", "text"},
    "wires": {"shell", "terminal", "hub", "store", "files", "ops", "text"},
    "app": set(ORDER) - {"app"},
}

INSTALLED = Path(shellserver.__file__).parent
CHECKOUT = Path(__file__).resolve().parent.parent / "shellserver"
TREES = [INSTALLED] + ([CHECKOUT] if CHECKOUT.is_dir() and CHECKOUT != INSTALLED else [])


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(package: str, level: int, module: str | None) -> str:
    """The module a ``from`` import names, its dots resolved: a relative import counts too."""
    if level == 0:
        return module or ""
    base = package.split(".")[: len(package.split(".")) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports(root: Path) -> dict[str, set[str]]:
    """Each module of the tree under ``root`` and the package modules it imports."""
    names = {module_name(root, path): path for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                source = absolute(package, node.level, node.module)
                if source in names:
                    deps.add(source)
                deps.update(full for a in node.names if (full := f"{source}.{a.name}") in names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in names)
        graph[name] = deps - {name}
    return graph


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("root", TREES, ids=lambda p: str(p))
def test_every_module_sits_in_a_layer(root: Path) -> None:
    loose = sorted(module_name(root, p) for p in root.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules outside every layer folder: {loose}"
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(ORDER), folders


@pytest.mark.parametrize("root", TREES, ids=lambda p: str(p))
def test_each_layer_imports_only_the_layers_below_it(root: Path) -> None:
    wrong = []
    for name, deps in imports(root).items():
        here = layer_of(name)
        if here is None:
            continue
        for dep in deps:
            there = layer_of(dep)
            if there is not None and there != here and there not in ALLOWED[here]:
                wrong.append(f"{name} imports {dep}")
    assert wrong == [], "imports against the layer table:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("root", TREES, ids=lambda p: str(p))
def test_no_module_imports_itself_through_others(root: Path) -> None:
    graph = imports(root)
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            assert name != start, f"{start} is in an import cycle"
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])


def test_relative_imports_are_read(tmp_path: Path) -> None:
    """A relative import is an import too: ``from ..shell import x`` must not slip past."""
    root = tmp_path / "shellserver"
    for folder in ("hub", "shell"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "shell" / "dispatch.py").write_text("")
    session = "from . import record\nfrom ..shell import dispatch\n"
    (root / "hub" / "session.py").write_text(session)
    (root / "hub" / "record.py").write_text("from .. import shell\n")
    graph = imports(root)
    assert graph["shellserver.hub.session"] == {
        "shellserver.hub",
        "shellserver.hub.record",
        "shellserver.shell",
        "shellserver.shell.dispatch",
    }
    assert graph["shellserver.hub.record"] == {"shellserver", "shellserver.shell"}


def test_the_table_is_ordered() -> None:
    """A layer may import only layers below it in ORDER: the table has no upward edge."""
    for layer, allowed in ALLOWED.items():
        for other in allowed:
            assert ORDER.index(other) < ORDER.index(layer), (layer, other)
