"""The control socket's pieces that need no socket."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import add_user, make_server, online
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from shellserver.app.cli import status_text, who_table
from shellserver.app.control import BadRequest, ControlProtocol, rfc3339


@pytest.fixture
def india(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "IST-5:30")  # a POSIX TZ string: no tzdata needed
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_login_times_are_rfc3339_with_a_colon_in_the_offset(india: None) -> None:
    assert rfc3339(0) == "1970-01-01T05:30:00+05:30"
    assert rfc3339(1_795_000_000.9) == "2026-11-18T16:36:40+05:30"  # fractions dropped


@pytest.mark.parametrize(
    "uptime, said",
    [(300, "up 5 min, "), (7260, "up 2:01, "), (3 * 86400 + 7260, "up 3 days, 2:01, ")],
)
def test_status_says_uptime_as_the_docs_do(uptime: float, said: str) -> None:
    reply = {"hostname": "box", "pid": 42, "uptime": uptime, "sessions": 1, "users": 1}
    assert status_text(reply) == f"shellserver on box is running: pid 42, {said}1 session, 1 user"


def test_status_of_a_clustered_node_names_it_and_the_live_nodes() -> None:
    reply = {"hostname": "box", "pid": 42, "uptime": 300, "sessions": 3, "users": 2}
    first = "shellserver on box is running: pid 42, up 5 min, 3 sessions, 2 users"
    assert status_text(reply) == first  # not clustered: as it always was
    clustered = dict(reply, node="a", nodes=["a", "c"])
    assert status_text(clustered) == first + "\nnode a, in a cluster of 2 live nodes: a, c"
    alone = dict(reply, node="a", nodes=["a"])
    assert status_text(alone).endswith("\nnode a, in a cluster of 1 live node: a")
    cut_off = dict(reply, node="a", nodes=[])
    assert status_text(cut_off).endswith(
        "\nnode a: the cluster cannot be reached (Redis does not answer)"
    )


def test_the_status_responder_tells_the_node_only_when_clustered(tmp_path: Path) -> None:
    reply = ControlProtocol(make_server(tmp_path).control).status()
    assert "node" not in reply and "nodes" not in reply


def test_the_cli_who_table_has_a_node_column_only_when_clustered() -> None:
    session = {
        "user": "bob", "tty": "tel/1", "role": "user", "login": "2026-11-18T16:36:40+00:00",
        "idle_s": 0, "mesg": True, "peer": "127.0.0.1", "term": "", "node": "b",
    }  # fmt: skip
    plain = who_table({"sessions": [session]}).splitlines()
    assert plain[0].split() == ["USER", "TTY", "ROLE", "LOGIN", "IDLE", "MESG", "FROM"]
    assert plain[1].split()[-2:] == ["+", "127.0.0.1"]
    clustered = who_table({"sessions": [session], "nodes": ["a", "b"]}).splitlines()
    assert clustered[0].split() == ["USER", "TTY", "ROLE", "LOGIN", "IDLE", "MESG", "NODE", "FROM"]
    assert clustered[1].split()[-3:] == ["+", "b", "127.0.0.1"]


def test_who_in_a_session_of_a_server_alone_has_no_node_column(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    add_user(server, "root1", admin=True)
    add_user(server, "alice")
    admin, alice = online(server, "root1"), online(server, "alice")
    assert admin.run("who").splitlines()[0].split() == [
        "USER", "TTY", "LOGIN", "IDLE", "MESG", "FROM"
    ]  # fmt: skip
    assert alice.run("who").splitlines()[0].split() == ["USER", "TTY", "LOGIN", "IDLE", "MESG"]


def refused(tmp_path: Path, call: Callable[[ControlProtocol], Any]) -> str:
    """What the responder refuses with (BadRequest), without a socket."""
    proto = ControlProtocol(make_server(tmp_path).control)
    failures: list[Failure] = []
    result = call(proto)
    if isinstance(result, Coroutine):
        Deferred.fromCoroutine(result).addErrback(failures.append)
    [failure] = failures
    failure.trap(BadRequest)
    return str(failure.value)


def test_the_socket_refuses_what_the_cli_refuses(tmp_path: Path) -> None:
    assert refused(tmp_path, lambda p: p.wall(" \t ")) == "no text to broadcast"
    assert "reserved" in refused(tmp_path, lambda p: p.useradd("root", "password1", False))
    assert "Usernames are" in refused(tmp_path, lambda p: p.useradd("evil\n", "password1", False))

    def batch(p: ControlProtocol) -> Any:
        p.newusers_page("", json.dumps([["carol", "x", None], ["all", "x", None]]).encode())
        return p.newusers_commit("open")

    assert refused(tmp_path, batch).startswith("entry 2: That name is reserved")
