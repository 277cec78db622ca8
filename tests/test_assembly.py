"""The assembly builds every part with what it uses: nothing optional that is always there,
nothing filled in after its consumer was built, and no part handed the whole."""

from __future__ import annotations

import ast
from pathlib import Path

import attrs
import pytest
from harness import make_server_with, online

import shellserver
from shellserver.app.assembly import Assembly
from shellserver.app.control import Controlled
from shellserver.hub.local import Hub
from shellserver.shell.adminops import Admin
from shellserver.shell.commands.registry import Services
from shellserver.shell.connection import Lobby
from shellserver.shell.login import Login
from shellserver.shell.sessionstart import SessionStart

RECORDS = [Assembly, Services, Admin, Login, SessionStart, Lobby, Controlled]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_no_part_is_optional(record: type) -> None:
    """Homes and the shutdown schedule always exist, so no record may say ``| None``."""
    optional = [f.name for f in attrs.fields(record) if str(f.type).endswith("| None")]
    assert optional == []


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_records_are_frozen_so_nothing_is_filled_in_later(record: type) -> None:
    fields = attrs.fields(record)
    instance = object.__new__(record)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(instance, fields[0].name, None)


def test_only_the_app_layer_knows_the_assembly() -> None:
    root = Path(shellserver.__file__).parent
    knowing = []
    for path in root.rglob("*.py"):
        if path.parent.name == "app":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "shellserver.app"
            ):
                knowing.append(str(path.relative_to(root)))
    assert knowing == []


def test_another_nodes_shutdown_reaches_this_nodes_sessions(tmp_path: Path) -> None:
    """The hub's announcements go to the shutdown the assembly built, before anything runs
    (the clustered hub hands them to its local table's ``announced``)."""
    server = make_server_with(tmp_path, ("alice",))
    alice = online(server, "alice")
    hub = server.hub
    assert isinstance(hub, Hub)
    hub.announced("shutdown", {"minutes": 30, "by": "root", "origin": "web2"})
    assert server.shutdown.at is not None
    assert "The system is going down" in alice.output()


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node


@pytest.mark.parametrize("module", ["assembly.py", "service.py"])
def test_the_assembly_sets_no_attribute_of_a_part_it_built(module: str) -> None:
    """Parts are given what they use when they are made (or subscribe through an API of the
    part they listen to): no ``part.slot = value`` after construction, in the assembly or in
    the service that binds the listeners (the service's own state, ``self.…``, aside)."""
    source = Path(shellserver.__file__).parent / "app" / module
    assigned = [
        ast.unparse(target)
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute)
        and not (isinstance(root := _root(target), ast.Name) and root.id == "self")
    ]
    assert assigned == []
