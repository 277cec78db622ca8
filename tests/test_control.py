"""The control socket's pieces that need no socket."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import make_server
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from shellserver.cli import status_text
from shellserver.control import BadRequest, ControlProtocol, rfc3339


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


def refused(tmp_path: Path, call: Callable[[ControlProtocol], Any]) -> str:
    """What the responder refuses with (BadRequest), without a socket."""
    proto = ControlProtocol(make_server(tmp_path))
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
