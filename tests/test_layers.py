"""The package's shape (docs/architecture.md): no import cycles, ``Server`` known only at the top.

Every import counts, ``TYPE_CHECKING`` ones included: a type-only back edge
still means the module depends on all of what it names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import shellserver

ROOT = Path(shellserver.__file__).parent
#: The assembly: the only modules that may know ``Server`` or pick the wires.
TOP = {"shellserver.service", "shellserver.control", "shellserver.cli", "shellserver.tap"}


def modules() -> dict[str, set[str]]:
    names: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                deps.add(node.module)
                deps.update(
                    full for a in node.names if (full := f"{node.module}.{a.name}") in names
                )
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in names)
        graph[name] = deps - {name}
    return graph


def test_no_module_imports_itself_through_others() -> None:
    graph = modules()
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            assert name != start, f"{start} is in an import cycle"
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])


def test_only_the_assembly_knows_the_server_and_the_wires() -> None:
    for name, deps in modules().items():
        if name in TOP or name == "shellserver.server":
            continue
        assert "shellserver.server" not in deps, f"{name} imports server.py"
        if not name.startswith("shellserver.wires"):
            wires = {d for d in deps if d.startswith("shellserver.wires")}
            assert not wires, f"{name} imports the wires {wires}"
