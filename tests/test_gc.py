"""A logged-out session is freed without the cyclic collector; the GC policy's freezes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Client, add_user, make_server, make_server_with, online
from twisted.internet.task import Clock

from shellserver.app.assembly import Assembly
from shellserver.ops.gcpolicy import GCPolicy, wanted
from shellserver.shell.connection import Connection


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _connection(server: Assembly, user: str) -> Connection:
    return next(c for c in server.seats if c.session and c.session.user == user)


def _lose(client: Client) -> None:
    """What a TCP transport does when the connection is lost: it forgets its producer."""
    client.transport.loseConnection()
    client.transport.unregisterProducer()
    client.drop()
    client.clock.advance(1)


def _refs(server: Assembly, client: Client, user: str) -> list[weakref.ref[Any]]:
    conn = _connection(server, user)
    assert conn.session is not None
    return [weakref.ref(conn), weakref.ref(conn.session), weakref.ref(client.protocol)]


def test_a_logged_out_session_is_freed_by_reference_counting(
    tmp_path: Path, no_collector: None
) -> None:
    server = make_server_with(tmp_path, ("alice", "bob"), admins=())
    alice, bob = online(server, "alice"), online(server, "bob")
    alice.run("write bob hi")
    bob.run("mesg n")
    refs = _refs(server, bob, "bob")
    _lose(bob)
    del bob
    assert [r() for r in refs] == [None, None, None]
    assert "alice@testhost:~$ " in alice.run("who")


def test_a_session_lost_while_a_command_waits_is_freed_too(
    tmp_path: Path, no_collector: None
) -> None:
    server = make_server_with(tmp_path, ("alice", "bob"), admins=())
    alice, bob = online(server, "alice"), online(server, "bob")
    alice.send("write bob")  # reads lines until "." or the end
    refs = _refs(server, alice, "alice")
    _lose(alice)
    del alice
    assert [r() for r in refs] == [None, None, None]
    assert "EOF" in bob.output()


def test_a_connection_lost_at_the_password_prompt_is_freed(
    tmp_path: Path, no_collector: None
) -> None:
    server = make_server(tmp_path)
    add_user(server, "alice")
    client = Client(server)
    client.send("alice")
    conn = next(iter(server.seats))
    refs = [weakref.ref(conn), weakref.ref(client.protocol)]
    del conn
    _lose(client)
    del client
    assert [r() for r in refs] == [None, None]


#: The policy on whatever Python runs the test (the fake ``gc`` stands for a measured one).
ON = (True, "on (test)")


class FakeGC:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.callbacks: list[Any] = []

    def collect(self) -> int:
        self.calls.append("collect")
        for cb in list(self.callbacks):
            cb("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
        return 0

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")


def test_policy_freezes_after_start_and_after_each_full_collection() -> None:
    fake, clock = FakeGC(), Clock()
    policy = GCPolicy(clock, rescan=60.0, gc=fake, switch=ON)
    policy.start()
    assert fake.calls == ["collect", "freeze"]
    fake.calls.clear()
    for generation in (0, 1):
        fake.callbacks[0]("stop", {"generation": generation})
    fake.callbacks[0]("start", {"generation": 2})
    assert fake.calls == []
    fake.callbacks[0]("stop", {"generation": 2})
    assert fake.calls == ["freeze"]


def test_policy_rescans_everything_now_and_then_and_lets_go_at_stop() -> None:
    fake, clock = FakeGC(), Clock()
    policy = GCPolicy(clock, rescan=60.0, gc=fake, switch=ON)
    policy.start()
    fake.calls.clear()
    clock.advance(59)
    assert fake.calls == []
    clock.advance(1)
    assert fake.calls == ["unfreeze", "collect", "freeze"]
    policy.stop()
    assert fake.callbacks == []
    assert clock.getDelayedCalls() == []
    assert fake.calls[-1] == "unfreeze"


def test_policy_switched_off_leaves_the_collector_alone() -> None:
    fake, clock = FakeGC(), Clock()
    policy = GCPolicy(clock, rescan=60.0, gc=fake, switch=(False, "off (test)"))
    policy.start()
    policy.stop()
    assert fake.calls == [] and fake.callbacks == [] and clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    ("environ", "version", "implementation", "on"),
    [
        ({}, (3, 11), "cpython", True),  # measured (docs/performance.md)
        ({}, (3, 12), "cpython", False),
        ({}, (3, 14), "cpython", False),  # the incremental collector
        ({}, (3, 11), "pypy", False),
        ({"SHELLSERVER_GC_POLICY": "0"}, (3, 11), "cpython", False),
        ({"SHELLSERVER_GC_POLICY": "off"}, (3, 11), "cpython", False),
        ({"SHELLSERVER_GC_POLICY": "1"}, (3, 14), "cpython", True),  # to measure it there
        ({"SHELLSERVER_GC_POLICY": "maybe"}, (3, 12), "cpython", False),
    ],
)
def test_policy_is_on_only_where_measured_unless_switched(
    environ: dict[str, str], version: tuple[int, int], implementation: str, on: bool
) -> None:
    got, why = wanted(environ, version, implementation)
    assert got is on
    assert why.startswith("on (" if on else "off (")  # the line logged at start
