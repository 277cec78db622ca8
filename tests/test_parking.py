"""Restart without losing anyone: sessions parked in the store, taken back by the next start
(or, drained, by another node), resumed as detached sessions; unresumed, their mail saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import StoreMaker
from harness import Client, make_server_with, online
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from shellserver.app.assembly import Assembly
from shellserver.ops.threads import inline_runner
from shellserver.shell import parking
from shellserver.shell.detach import HeldOutput
from shellserver.store import parked as parked_store
from shellserver.store.accounts import AccountDB, AccountStore

LINGER = 300


def result(d: Any) -> Any:
    box: list[Any] = []
    Deferred.fromCoroutine(d).addBoth(box.append)
    assert box, "did not finish"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


def server(tmp_path: Path, stopped: list[int] | None = None, **overrides: Any) -> Assembly:
    """A server on the store in ``tmp_path`` (the same store for a "restarted" one)."""
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    store = AccountStore(db, inline_runner, inline_runner, 4)
    stop = (lambda: stopped.append(1)) if stopped is not None else (lambda: None)
    return make_server_with(
        tmp_path, (), (), **{"linger": LINGER, "cmd_rate": 0, **overrides}, store=store, stop=stop
    )


def first_start(tmp_path: Path, stopped: list[int]) -> Assembly:
    s = make_server_with(tmp_path, ("alice", "bob"), admins=("root1",), linger=LINGER)
    s.store.db.close()
    return server(tmp_path, stopped)


def test_a_restart_parks_every_session_and_the_next_start_takes_them_back(
    tmp_path: Path,
) -> None:
    stopped: list[int] = []
    s = first_start(tmp_path, stopped)
    alice, bob = online(s, "alice"), online(s, "bob", peer="10.0.0.2")
    alice.run("join #ops")
    alice.run("mkdir work")
    alice.run("cd work")
    alice_tty = [x for x in s.hub.local_sessions() if x.user == "alice"][0].tty
    bob.drop()  # detached before the restart: what it holds is parked too
    alice.run("write bob kept across the restart")
    parked = result(s.restart.restart("root", "tel/9 from 10.0.0.3"))
    assert parked == 2
    audited = s.store.db._db.execute("SELECT actor, origin, action FROM audit").fetchall()
    assert ("root", "tel/9", "restart") in audited
    assert "The server is restarting; reconnect to resume this session." in alice.output()
    assert alice.disconnecting and s.hub.local_sessions() == []
    assert not stopped
    s.clock.advance(parking.STOP_DELAY)  # type: ignore[attr-defined]
    assert stopped == [1]
    s.store.db.close()

    again = server(tmp_path)
    again.clock.advance(30)  # type: ignore[attr-defined]
    assert result(parking.restore_node(again.start, None)) == 2
    who = {x.user: x for x in again.hub.local_sessions()}
    assert who["alice"].detached and who["alice"].tty == alice_tty
    assert who["alice"].cwd == "work"
    c = Client(again, peer="10.0.0.9")
    assert f"You have a detached session on {alice_tty}" in c.login("alice")
    c.send("y")
    shown = c.output()
    assert "alice@testhost:~/work$ " in shown
    assert "#ops" in c.run("rooms")
    b = Client(again, peer="10.0.0.8")
    assert "Resume it? [Y/n] " in b.login("bob")
    b.send("")
    assert "kept across the restart" in b.output()


def test_parked_sessions_no_one_resumes_are_swept_and_their_writes_saved(
    tmp_path: Path,
) -> None:
    s = first_start(tmp_path, [])
    bob = online(s, "bob")
    bob.drop()
    alice = online(s, "alice", peer="10.0.0.2")
    alice.run("write bob the one nobody read")
    result(s.restart.restart("root", "test"))
    s.clock.advance(LINGER + 1)  # type: ignore[attr-defined]
    assert result(parking.sweep(s.start)) == 2  # bob's and alice's own
    assert result(parking.sweep(s.start)) == 0
    c = Client(s, peer="10.0.0.9")
    shown = c.login("bob")
    assert "Resume" not in shown
    assert "the one nobody read" in c.run("messages read 1")


def test_a_drained_nodes_sessions_are_taken_by_a_login_elsewhere_once(tmp_path: Path) -> None:
    s = first_start(tmp_path, [])
    online(s, "alice").drop()
    db = s.store.db
    rows = parked_store.parked_of(db, "alice", 0.0)
    assert rows == []
    result(s.restart.restart("root", "drain"))
    [row] = parked_store.parked_of(db, "alice", s.clock.seconds())
    assert row.node == s.hub.node
    # Another node (its hub knows only itself as live): the row is taken at alice's login.
    other = server(tmp_path, node="b")
    c = Client(other, peer="10.0.0.9")
    assert "Resume it? [Y/n] " in c.login("alice")
    assert parked_store.parked_of(db, "alice", s.clock.seconds()) == []
    assert parked_store.take(db, row.id) is None  # taken once


def test_a_row_that_cannot_be_read_is_dropped_not_resumed(tmp_path: Path) -> None:
    s = first_start(tmp_path, [])
    parked_store.park(s.store.db, [("x", "alice", "tel/5", 0.0, 1e12, "not json")])
    assert result(parking.restore_node(s.start, None)) == 0
    assert s.hub.local_sessions() == []


def test_without_linger_a_restart_parks_nothing_and_stops(tmp_path: Path) -> None:
    stopped: list[int] = []
    s = first_start(tmp_path, stopped)
    s.store.db.close()
    s = server(tmp_path, stopped, linger=0)
    alice = online(s, "alice")
    assert result(s.restart.restart("root", "test")) == 0
    s.clock.advance(parking.STOP_DELAY)  # type: ignore[attr-defined]
    assert stopped == [1] and not alice.disconnecting  # the stop ends it, as a shutdown


def test_state_of_a_detached_session_keeps_what_it_held(tmp_path: Path) -> None:
    s = first_start(tmp_path, [])
    online(s, "alice").drop()
    bob = online(s, "bob", peer="10.0.0.2")
    bob.run("write alice hi")
    [session] = [x for x in s.hub.local_sessions() if x.user == "alice"]
    state = parking.state_of(session, [])
    assert state["writes"][0][0] == "bob" and state["messages"] == 1
    held = parking.held_of(state, 1000, "alice", "tel", lambda h: None, Clock())
    assert isinstance(held, HeldOutput) and "hi" in held.framed()


def test_the_parked_table_on_both_stores(store_maker: StoreMaker) -> None:
    """Parked sessions are written, listed, taken once, and go with their account, on SQLite
    and on PostgreSQL alike."""
    db = store_maker.open()
    for name in ("alice", "bob", "carol"):
        db.create(name, "h")
    rows = [
        ("a", "alice", "tel/1", 10.0, 100.0, '{"cwd": "work"}'),
        ("b", "bob", "tel/2", 10.0, 100.0, "{}"),
        ("a", "carol", "tel/3", 10.0, 20.0, "{}"),
        ("a", "nobody-here", "tel/4", 10.0, 100.0, "{}"),  # no account: skipped
    ]
    assert parked_store.park(db, rows) == 3
    mine = parked_store.parked_of(db, "alice", 15.0)
    assert [(p.owner, p.tty, p.state) for p in mine] == [("alice", "tel/1", '{"cwd": "work"}')]
    assert [p.owner for p in parked_store.take_of_node(db, "a", 15.0)] == ["alice", "carol"]
    assert parked_store.take_of_node(db, "a", 15.0) == []  # taken once
    bob = parked_store.parked_of(db, "bob", 15.0)[0]
    db.delete("bob")  # the account goes, and its parked session with it
    assert parked_store.take(db, bob.id) is None
    assert parked_store.park(db, [("a", "carol", "tel/3", 30.0, 40.0, "{}")]) == 1
    assert [p.owner for p in parked_store.take_expired(db, 50.0)] == ["carol"]
