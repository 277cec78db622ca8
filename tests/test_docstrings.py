"""Every public class, function and method of the package says why it exists.

A reader who opens a module should learn from its docstrings the constraint
each part meets, the trap it avoids or who calls it: the name tells what. So
every public name (not starting with ``_``) has a docstring: module-level
classes and functions, and the methods of classes (overrides of Twisted's
``dataReceived`` and the like included, since how ours differs is what a reader
needs). Functions nested inside functions are exempt: they are details of their
enclosing function, not part of any interface. Like tests/test_layers.py, the
test reads both trees there may be: the installed package the suite runs
against and the checkout beside the tests. In a checkout, the code beside the
package is held to the same rule: the twistd plugin, and the benches, whose
figures the performance notes rest on.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import shellserver

INSTALLED = Path(shellserver.__file__).parent
CHECKOUT = Path(__file__).resolve().parent.parent / "shellserver"
TREES = [INSTALLED] + ([CHECKOUT] if CHECKOUT.is_dir() and CHECKOUT != INSTALLED else [])
#: Outside the package, in a checkout: the twistd plugin and the benches.
BESIDE = [p for p in (CHECKOUT.parent / "twisted", CHECKOUT.parent / "bench") if p.is_dir()]

Definition = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def public_definitions(body: list[ast.stmt]) -> Iterator[Definition]:
    """The public classes and functions of a module or class body, and the methods of its classes.

    A private class's public methods count (a ``dataReceived`` is called from outside whatever
    its class is named); definitions under ``if``/``try`` (``if TYPE_CHECKING:``, a version
    switch) count as part of the body they sit in; bodies of functions are not entered, so
    nested functions are exempt.
    """
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if not node.name.startswith("_"):
                yield node
            if isinstance(node, ast.ClassDef):
                yield from public_definitions(node.body)
        elif isinstance(node, ast.If | ast.Try):
            blocks = [node.body, node.orelse]
            if isinstance(node, ast.Try):
                blocks += [h.body for h in node.handlers] + [node.finalbody]
            for block in blocks:
                yield from public_definitions(block)


def missing(root: Path) -> list[str]:
    """``file:line name`` of every public definition under ``root`` without a docstring."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in public_definitions(tree.body):
            if not (ast.get_docstring(node) or "").strip():
                where = path.relative_to(root.parent)
                found.append(f"{where}:{node.lineno} {node.name}")
    return found


@pytest.mark.parametrize("root", TREES, ids=lambda p: str(p))
def test_every_public_class_and_function_has_a_docstring(root: Path) -> None:
    lacking = missing(root)
    assert lacking == [], f"{len(lacking)} public definitions without a docstring:\n" + "\n".join(
        lacking
    )


@pytest.mark.parametrize("root", BESIDE, ids=lambda p: p.name)
def test_the_code_beside_the_package_has_docstrings_too(root: Path) -> None:
    lacking = missing(root)
    assert lacking == [], f"{len(lacking)} public definitions without a docstring:\n" + "\n".join(
        lacking
    )


def test_the_walk_finds_what_it_must_and_only_that(tmp_path: Path) -> None:
    """The check itself can fail: it sees methods (a private class's too) and guarded definitions,
    and skips private names and nested functions."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(
        "import typing\n"
        "def public(): pass\n"
        "def _private(): pass\n"
        "def documented():\n"
        '    """Why."""\n'
        "    def nested(): pass\n"
        "class Thing:\n"
        '    """Why."""\n'
        "    def dataReceived(self, data): pass\n"
        "    def _helper(self): pass\n"
        "    async def wait(self): pass\n"
        "class _Hidden:\n"
        "    def method(self): pass\n"
        "    def _own(self): pass\n"
        "if typing.TYPE_CHECKING:\n"
        "    class Guarded: pass\n"
    )
    assert missing(package) == [
        "pkg/mod.py:2 public",
        "pkg/mod.py:9 dataReceived",
        "pkg/mod.py:11 wait",
        "pkg/mod.py:13 method",
        "pkg/mod.py:16 Guarded",
    ]
