"""Metrics without sockets: counters where things happen, gauges read at scrape time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import Client, add_user, make_server
from prometheus_client import generate_latest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from shellserver.app.assembly import Assembly
from shellserver.ops.lagprobe import LagProbe
from shellserver.ops.metrics import Metrics
from shellserver.ops.metricspage import MetricsPage, metrics_site


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    srv = make_server(tmp_path, max_output=200)
    add_user(srv, "alice")
    add_user(srv, "bob")
    add_user(srv, "root1", admin=True)
    return srv


def value(server: Assembly, name: str, **labels: str) -> float:
    got = server.metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_logins_and_failures_are_counted(server: Assembly) -> None:
    c = Client(server)
    c.login("alice", "wrong")
    c.clock.advance(5)
    assert value(server, "shellserver_logins_total", result="failed") == 1
    c.login("alice")
    assert value(server, "shellserver_logins_total", result="ok") == 1
    assert value(server, "shellserver_logins_total", result="failed") == 1


def test_a_registration_is_counted_and_an_admin_useradd_is_not(server: Assembly) -> None:
    c = Client(server)
    for line in ("new", "carol", "longenough", "longenough"):
        c.send(line)
    assert "Welcome, carol!" in c.output()
    assert value(server, "shellserver_registrations_total") == 1
    admin = Client(server)
    admin.login("root1")
    admin.run("useradd dave")
    assert value(server, "shellserver_registrations_total") == 1


def test_sessions_by_wire_and_role_move_with_logins_and_logouts(server: Assembly) -> None:
    assert value(server, "shellserver_sessions", wire="telnet", role="user") == 0
    a, b, r = Client(server), Client(server), Client(server)
    a.login("alice")
    b.login("bob")
    r.login("root1")
    assert value(server, "shellserver_sessions", wire="telnet", role="user") == 2
    assert value(server, "shellserver_sessions", wire="telnet", role="admin") == 1
    b.run("logout")
    b.drop()
    assert value(server, "shellserver_sessions", wire="telnet", role="user") == 1


def test_write_and_wall_count_delivered_and_dropped_copies(server: Assembly) -> None:
    a, b, r = Client(server), Client(server), Client(server)
    a.login("alice")
    b.login("bob")
    r.login("root1")
    a.run("write bob hello")
    assert value(server, "shellserver_messages_total", kind="write", outcome="delivered") == 1
    b.protocol.pauseProducing()  # bob stops reading
    a.run("write bob " + "y" * 60)  # held for bob, under his 200-byte cap
    a.run("write bob " + "x" * 100)  # over it: dropped
    assert value(server, "shellserver_messages_total", kind="write", outcome="delivered") == 2
    assert value(server, "shellserver_messages_total", kind="write", outcome="dropped") == 1
    r.run("wall hello everyone")
    assert value(server, "shellserver_messages_total", kind="wall", outcome="delivered") == 2
    assert value(server, "shellserver_messages_total", kind="wall", outcome="dropped") == 1


def test_room_lines_count_delivered_and_dropped_copies(server: Assembly) -> None:
    a, b, c = Client(server), Client(server), Client(server)
    for client, name in ((a, "alice"), (b, "bob"), (c, "root1")):
        client.login(name)
        client.run("join #lobby")  # joins are room lines too: 0, then 1, then 2 copies
    assert value(server, "shellserver_messages_total", kind="room", outcome="delivered") == 3
    b.protocol.pauseProducing()  # bob stops reading
    a.run("say #lobby " + "x" * 300)  # over bob's 200-byte cap: his copy is dropped
    assert value(server, "shellserver_messages_total", kind="room", outcome="delivered") == 4
    assert value(server, "shellserver_messages_total", kind="room", outcome="dropped") == 1


def test_output_held_for_a_client_that_does_not_read(server: Assembly) -> None:
    a, b = Client(server), Client(server)
    a.login("alice")
    b.login("bob")
    assert value(server, "shellserver_output_held_bytes") == 0
    b.protocol.pauseProducing()
    a.run("write bob hi")
    held = value(server, "shellserver_output_held_bytes")
    assert 0 < held <= 200
    b.protocol.resumeProducing()
    assert value(server, "shellserver_output_held_bytes") == 0


def test_the_store_runner_is_timed_and_the_hash_runner_counted() -> None:
    metrics = Metrics()
    ticks = iter([1.0, 1.25])
    pending: Deferred[int] = Deferred()
    timed = metrics.timed(lambda f, *a: succeed(f(*a)), now=lambda: next(ticks))
    queued = metrics.queued(lambda f, *a: pending)
    assert timed(lambda x: x + 1, 1).result == 2
    registry = metrics.registry
    assert registry.get_sample_value("shellserver_store_seconds_count") == 1
    assert registry.get_sample_value("shellserver_store_seconds_sum") == 0.25
    d = queued(len, "abc")
    assert registry.get_sample_value("shellserver_hash_queue") == 1
    pending.callback(3)
    assert d.result == 3
    assert registry.get_sample_value("shellserver_hash_queue") == 0
    failing = metrics.queued(lambda f, *a: fail(ValueError("boom")))
    failing(len, "x").addErrback(lambda f: None)
    assert registry.get_sample_value("shellserver_hash_queue") == 0


def test_reactor_lag_is_how_late_the_probe_fires() -> None:
    clock = Clock()
    seen: list[float] = []
    probe = LagProbe(clock, seen.append, now=clock.seconds)
    probe.start()
    clock.advance(0.1)
    clock.advance(0.1)
    assert seen == [0.0, 0.0]
    clock.advance(0.35)  # the reactor was busy for a quarter of a second past the timer
    assert seen[-1] == pytest.approx(0.25)
    probe.stop()
    clock.advance(1)
    assert len(seen) == 3 and not clock.getDelayedCalls()


def _steady(page: bytes) -> list[bytes]:
    """The page without the process and GC gauges (CPU time, memory), which move between reads."""
    return [line for line in page.splitlines() if not line.startswith((b"process_", b"python_gc"))]


def test_the_page_is_the_text_exposition_of_the_servers_own_registry(server: Assembly) -> None:
    Client(server).login("alice")
    request = DummyRequest([b""])
    body = MetricsPage(server.metrics.registry).render_GET(request)  # type: ignore[arg-type]
    assert _steady(body) == _steady(generate_latest(server.metrics.registry))
    assert b'shellserver_sessions{role="user",wire="telnet"} 1.0' in body
    assert b"shellserver_reactor_lag_seconds_bucket" in body
    ctype = request.responseHeaders.getRawHeaders(b"content-type")
    assert ctype is not None and ctype[0].startswith(b"text/plain")
    site: Any = metrics_site(server.metrics.registry, Clock()).wrappedFactory
    assert site.getResourceFor(DummyRequest([b"metrics"])).__class__ is MetricsPage


def test_two_servers_in_one_process_keep_their_own_numbers(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = make_server(tmp_path / "one"), make_server(tmp_path / "two")
    one.metrics.login(True)
    assert value(one, "shellserver_logins_total", result="ok") == 1
    assert value(two, "shellserver_logins_total", result="ok") == 0
