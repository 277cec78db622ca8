"""Moderation without sockets: the audit ledger on a passed-in clock, mutes (in force at once,
ending by themselves, heard from other nodes), the per-sender mailbox limit (also under two
writers at once), and what deleting an account takes along, in the store and in sessions."""

from __future__ import annotations

import ast
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness import add_user, make_server_with, online
from test_otp import enable
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

import shellserver
from shellserver.app.assembly import Assembly
from shellserver.app.control import PAGE, BadRequest, ControlProtocol, rfc3339
from shellserver.hub.local import Hub
from shellserver.ops.threads import inline_runner
from shellserver.shell import people
from shellserver.shell.mutes import Mutes, muted_text
from shellserver.shell.people import SENDER_LIMIT
from shellserver.store import audit
from shellserver.store.accounts import AccountDB, AccountStore, NoSuchUser
from shellserver.store.audit import AuditQuery, Ledger
from shellserver.store.mutes import MuteRecord, active_mutes, clear_mute, set_mute
from shellserver.text.durations import format_until, parse_duration

T0 = 1_800_000_000.0


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    return make_server_with(tmp_path, ("alice", "bob", "carol"), node="n1")


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    db = AccountDB.open(str(tmp_path / "s.sqlite3"))
    for name in ("alice", "bob", "carol"):
        db.create(name, "x")
    return AccountStore(db, inline_runner, inline_runner, 4)


def fired(d: Deferred[Any]) -> Any:
    got: list[Any] = []
    d.addBoth(got.append)
    assert got, "not fired"
    return got[0]


# -- durations ------------------------------------------------------------------------------


def test_durations_as_operators_type_them() -> None:
    assert [parse_duration(t) for t in ("90s", "30m", "12h", "7d")] == [90, 1800, 43200, 604800]
    for bad in ("5", "-5m", "0m", "1.5h", "m", "10w", " 5m", "5m ", "99999999d", "perm"):
        assert parse_duration(bad) is None, bad


def test_the_end_of_a_mute_shows_its_day_only_when_it_is_not_today() -> None:
    now = time.mktime((2026, 12, 7, 14, 0, 0, 0, 0, -1))
    assert format_until(now + 32 * 60, now) == "14:32"
    assert format_until(now + 3 * 86400, now) == "Thu Dec 10 14:00"
    assert format_until(now + 11 * 3600, now) == "Tue Dec 08 01:00"  # tomorrow, not "01:00"


# -- the ledger -----------------------------------------------------------------------------


def test_the_ledger_keeps_each_action_with_the_time_of_its_clock(store: AccountStore) -> None:
    clock = Clock()
    clock.advance(T0)
    ledger = Ledger(store, "n1", clock)
    fired(ledger.record("boss", "tel/1", "kick", "alice", "spam"))
    clock.advance(60)
    fired(ledger.record("root", "cli", "mute", "bob", None, T0 + 600))
    clock.advance(60)
    fired(ledger.record("boss", "tel/1", "wall", reason="hello"))
    found = fired(ledger.records(AuditQuery()))
    rows = [
        (r.at, r.actor, r.origin, r.action, r.target, r.reason, r.expires, r.node) for r in found
    ]
    assert rows == [
        (T0 + 120, "boss", "tel/1", "wall", None, "hello", None, "n1"),
        (T0 + 60, "root", "cli", "mute", "bob", None, T0 + 600, "n1"),
        (T0, "boss", "tel/1", "kick", "alice", "spam", None, "n1"),
    ]  # fmt: skip
    q = fired(ledger.records(AuditQuery(since=T0 + 60)))
    assert [r.action for r in q] == ["wall", "mute"]
    assert [r.action for r in fired(ledger.records(AuditQuery(actor="boss")))] == ["wall", "kick"]
    assert [r.action for r in fired(ledger.records(AuditQuery(target="bob")))] == ["mute"]
    assert [r.action for r in fired(ledger.records(AuditQuery(limit=1)))] == ["wall"]
    as_json = audit.record_dict(found[1], lambda t: f"t{t - T0:.0f}")
    assert as_json == {
        "id": found[1].id, "time": "t60", "actor": "root", "from": "cli", "action": "mute",
        "target": "bob", "reason": None, "expires": "t600", "node": "n1",
    }  # fmt: skip


def test_a_reason_is_bounded_and_no_query_reads_more_than_the_limit(store: AccountStore) -> None:
    ledger = Ledger(store, "n1", Clock())
    fired(ledger.record("boss", "cli", "wall", reason="x" * 100_000))
    [r] = fired(ledger.records(AuditQuery()))
    assert r.reason is not None and len(r.reason) == audit.REASON_LIMIT
    for _ in range(3):
        fired(ledger.record("boss", "cli", "kick", "bob"))
    assert len(fired(ledger.records(AuditQuery(limit=10**9)))) == 4  # capped, not refused
    assert len(audit.records(store.db, AuditQuery(limit=2))) == 2


def test_a_record_the_store_refuses_is_logged_and_never_fails_the_action(
    store: AccountStore,
) -> None:
    store.db._db.execute("ALTER TABLE audit RENAME TO gone")
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        d = Ledger(store, "n1", Clock()).record("boss", "tel/1", "kick", "alice", "spam")
        assert fired(d) is None
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if e.get("event") == "audit_not_recorded"]
    assert (event["actor"], event["action"], event["target"]) == ("boss", "kick", "alice")


def test_no_code_in_the_product_updates_or_deletes_an_audit_record() -> None:
    root = Path(shellserver.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                sql = " ".join(node.value.upper().split())
                for verb in ("UPDATE AUDIT", "DELETE FROM AUDIT", "DROP TABLE AUDIT"):
                    assert verb not in sql, f"{path}: {node.value!r}"


# -- mutes ----------------------------------------------------------------------------------


def test_mutes_in_memory_end_by_themselves_and_follow_other_nodes(store: AccountStore) -> None:
    clock = Clock()
    clock.advance(T0)
    mutes = Mutes(store, Hub(), clock)
    mutes.refresh()
    fired(Deferred.fromCoroutine(mutes.mute("alice", T0 + 600, "spam", "boss")))
    assert mutes.of("alice", T0 + 599) == MuteRecord("alice", T0 + 600, "spam", "boss")
    assert mutes.of("bob", T0) is None
    assert mutes.of("alice", T0 + 600) is None  # over: gone by itself
    assert active_mutes(store.db, T0 + 600) == []
    with pytest.raises(NoSuchUser):
        fired(Deferred.fromCoroutine(mutes.mute("nobody", T0 + 60, None, "boss"))).raiseException()
    # Another node's mute and unmute, heard through the hub's announcements.
    mutes.heard("mute", {"user": "bob", "until": T0 + 60, "reason": None, "by": "root"})
    assert mutes.of("bob", T0) == MuteRecord("bob", T0 + 60, None, "root")
    mutes.heard("unmute", {"user": "bob"})
    assert mutes.of("bob", T0) is None
    mutes.heard("mute", {"user": "carol", "until": T0 + 60, "reason": "x", "by": "root"})
    mutes.heard("userdel", {"user": "carol"})
    assert mutes.of("carol", T0) is None
    mutes.heard("shutdown", {"minutes": 5})  # not ours: ignored


def test_a_refresh_reads_what_was_missed_and_keeps_what_changed_meanwhile(
    store: AccountStore,
) -> None:
    clock = Clock()
    clock.advance(T0)
    held: list[Deferred[Any]] = []
    mutes = Mutes(store, Hub(), clock)
    set_mute(store.db, "bob", T0 + 60, None, "boss", T0)  # made on a node we did not hear
    set_mute(store.db, "carol", T0 + 60, None, "boss", T0)

    def slow(f: Any, *args: Any) -> Deferred[Any]:
        if f is active_mutes:
            d: Deferred[Any] = Deferred()
            result = f(*args)
            held.append(d)
            d.addCallback(lambda _: result)
            return d
        return inline_runner(f, *args)

    store.run_db = slow  # type: ignore[method-assign]
    mutes.refresh()
    mutes.refresh()  # one read at a time
    assert len(held) == 1
    mutes.heard("mute", {"user": "alice", "until": T0 + 60, "reason": None, "by": "root"})
    fired(Deferred.fromCoroutine(mutes.unmute("carol")))  # after the read was taken
    held[0].callback(None)
    assert mutes.of("bob", T0) is not None
    assert mutes.of("alice", T0) is not None
    assert mutes.of("carol", T0) is None


def test_the_muted_text() -> None:
    now = time.mktime((2026, 12, 7, 14, 0, 0, 0, 0, -1))
    assert muted_text(MuteRecord("bob", now + 1920, "spam", "boss"), now) == (
        "you are muted until 14:32 (spam)"
    )
    assert muted_text(MuteRecord("bob", now + 60, None, "boss"), now) == (
        "you are muted until 14:01"
    )
    assert muted_text(MuteRecord("bob", now + 60, "\x1b[2J", "boss"), now).endswith("(^[[2J)")


def test_a_muted_user_reads_but_sends_nothing_until_the_mute_ends(server: Assembly) -> None:
    boss = online(server, "root1")
    a, b = online(server, "alice"), online(server, "bob")
    assert a.run("join #den").startswith("[#den] alice has joined")
    out = boss.run("mute alice 5m too loud")
    assert out.startswith("muted alice until ") and out.endswith(" (too loud)\nroot1@testhost:~$ ")
    until = format_until(server.clock.seconds() + 300, server.clock.seconds())
    text = f"you are muted until {until} (too loud)"
    assert a.run("write bob hi") == f"write: {text}\nalice@testhost:~$ "
    assert a.run("write carol saved") == f"write: {text}\nalice@testhost:~$ "
    assert a.run("say #den hi") == f"say: {text}\nalice@testhost:~$ "
    assert a.run("topic #den news") == f"topic: {text}\nalice@testhost:~$ "
    assert people.saved_messages(server.store.db, "carol") == []
    assert b.output() == ""
    b.run("write alice still reading?")
    assert "still reading?\nEOF\n" in a.output()
    assert a.run("topic #den") == "#den has no topic\nalice@testhost:~$ "
    server.clock.advance(300)  # type: ignore[attr-defined]
    assert a.run("write bob back") == "alice@testhost:~$ "
    assert "back\nEOF\n" in b.output()


def test_muted_while_typing_a_message_sends_no_more_of_it(server: Assembly) -> None:
    boss = online(server, "root1")
    a, b = online(server, "alice"), online(server, "bob")
    a.run("write bob")
    a.send("first line")
    assert "first line\n" in b.output()
    boss.run("mute alice 1h")
    a.send("second line")
    assert "write: you are muted until" in a.output()
    assert "second line" not in b.output()


def test_mute_and_unmute_answers(server: Assembly) -> None:
    boss = online(server, "root1")
    assert boss.run("mute alice") == "Usage: mute USER DURATION [REASON...]\nroot1@testhost:~$ "
    assert boss.run("mute alice 10") == (
        "mute: invalid duration '10' (use 90s, 30m, 12h or 7d)\n"
        "Usage: mute USER DURATION [REASON...]\nroot1@testhost:~$ "
    )
    assert boss.run("mute nobody 1m") == "mute: user 'nobody' does not exist\nroot1@testhost:~$ "
    assert boss.run("mute root1 1m") == (
        "mute: you cannot do that to your own account\nroot1@testhost:~$ "
    )
    assert boss.run("unmute alice") == "unmute: alice is not muted\nroot1@testhost:~$ "
    assert boss.run("kick alice") == "kick: alice is not logged in\nroot1@testhost:~$ "
    a = online(server, "alice")
    assert a.run("mute bob 1m") == "mute: permission denied\nalice@testhost:~$ "
    assert [r.action for r in audit.records(server.store.db, AuditQuery())] == []


def test_session_actions_are_recorded_with_the_tty_and_the_node(server: Assembly) -> None:
    boss = online(server, "root1")
    online(server, "alice")
    boss.run("kick alice bye")
    boss.run("mute bob 1h noisy")
    boss.run("unmute bob")
    boss.run("lock carol")
    boss.run("unlock carol")
    boss.run("wall hi all")
    boss.run("shutdown +10 soon")
    boss.run("shutdown -c")
    boss.run("userdel carol")
    assert boss.run("ban 203.0.113.0/24 2h spam").startswith("banned 203.0.113.0/24 until")
    assert boss.run("unban 203.0.113.0/24") == "unbanned 203.0.113.0/24\nroot1@testhost:~$ "
    found = audit.records(server.store.db, AuditQuery())
    tty = next(iter(server.hub.local_sessions())).tty
    assert [(r.actor, r.origin, r.node) for r in found] == [("root1", tty, "n1")] * 11
    assert [(r.action, r.target, r.reason) for r in reversed(found)] == [
        ("kick", "alice", "bye"), ("mute", "bob", "noisy"), ("unmute", "bob", None),
        ("lock", "carol", None), ("unlock", "carol", None), ("wall", None, "hi all"),
        ("shutdown", None, "soon"), ("shutdown cancel", None, None), ("userdel", "carol", None),
        ("ban", "203.0.113.0/24", "spam"), ("unban", "203.0.113.0/24", None),
    ]  # fmt: skip
    mute, shutdown, ban, unban = found[9], found[4], found[1], found[0]
    assert mute.expires == mute.at + 3600
    assert shutdown.expires == shutdown.at + 600
    assert ban.expires == ban.at + 7200 and unban.expires is None


# -- saved messages -------------------------------------------------------------------------


def test_one_sender_saves_at_most_20_unread_in_one_mailbox(server: Assembly) -> None:
    a = online(server, "alice")
    for n in range(SENDER_LIMIT):
        assert a.run(f"write bob note {n}").startswith(
            "write: bob is not logged in; message saved"
        )
    assert a.run("write bob one too many") == "write: bob's mailbox is full\nalice@testhost:~$ "
    assert a.run("write bob") == "write: bob's mailbox is full\nalice@testhost:~$ "
    c = online(server, "carol")
    assert c.run("write bob mine").startswith("write: bob is not logged in; message saved")
    first = people.saved_messages(server.store.db, "bob")[0]
    people.mark_read(server.store.db, "bob", [first.id])  # read messages no longer count
    assert a.run("write bob again").startswith("write: bob is not logged in; message saved")


def test_two_writers_at_once_cannot_pass_the_limit_together(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    setup = AccountDB.open(path)
    setup.create("bob", "x")
    for n in range(SENDER_LIMIT - 1):
        assert people.save_message(setup, "bob", "alice", b"m%d" % n, T0) == people.SAVED
    dbs = [AccountDB.open(path) for _ in range(2)]
    start = threading.Barrier(2)
    results: list[str] = []

    def save(db: AccountDB) -> None:
        start.wait()
        results.append(people.save_message(db, "bob", "alice", b"race", T0))

    threads = [threading.Thread(target=save, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [people.FULL, people.SAVED]
    assert len(people.saved_messages(setup, "bob")) == SENDER_LIMIT


# -- deleting an account --------------------------------------------------------------------


def test_deleting_an_account_takes_its_unread_sent_messages_ignores_and_mute(
    store: AccountStore,
) -> None:
    db = store.db
    people.save_message(db, "bob", "alice", b"unread", T0)
    people.save_message(db, "bob", "alice", b"read", T0)
    people.save_message(db, "alice", "bob", b"to alice", T0)
    people.mark_read(db, "bob", [people.saved_messages(db, "bob")[1].id])
    people.add_ignore(db, "carol", "alice")
    people.add_ignore(db, "alice", "carol")
    set_mute(db, "alice", T0 + 60, None, "boss", T0)
    db.delete("alice")
    assert [m.text for m in people.saved_messages(db, "bob")] == ["read"]
    conn: sqlite3.Connection = db._db
    assert conn.execute("SELECT count(*) FROM ignores").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM messages WHERE recipient='alice'").fetchone()[0] == 0
    assert active_mutes(db, T0) == []
    db.create("alice", "x")  # the name again: nothing inherited
    assert people.ignore_list(db, "bob") == []
    assert people.saved_messages(db, "alice") == []
    assert clear_mute(db, "alice", T0) is False


def test_a_running_session_forgets_a_deleted_name_it_ignored(server: Assembly) -> None:
    boss, b = online(server, "root1"), online(server, "bob")
    assert b.run("ignore carol") == "Ignoring carol.\nbob@testhost:~$ "
    assert server.hub.ignores("bob") == {"carol"}
    boss.run("userdel carol")
    assert server.hub.ignores("bob") == frozenset()
    add_user(server, "carol")
    c = online(server, "carol")
    assert c.run("write bob hello") == "carol@testhost:~$ "
    assert "hello\nEOF\n" in b.output()
    assert b.run("ignore") == "You are not ignoring anyone.\nbob@testhost:~$ "


def test_another_nodes_deletion_reaches_this_nodes_sessions(server: Assembly) -> None:
    b = online(server, "bob")
    b.run("ignore carol")
    b.run("ignore alice")
    heard = people.deletions(server.hub)
    heard("userdel", {"user": "carol"})
    assert server.hub.ignores("bob") == {"alice"}
    heard("userdel", {"user": "alice"})
    assert server.hub.ignores("bob") == frozenset()
    heard("cancel", {"by": "x"})  # someone else's announcement: nothing happens


# -- the control socket ---------------------------------------------------------------------


def test_the_control_socket_pages_a_large_ledger_and_refuses_a_bad_mute(tmp_path: Path) -> None:
    server = make_server_with(tmp_path, ("bob",), node="n1")
    for n in range(400):
        audit.append(server.store.db, T0 + n, "boss", "tel/1", "wall", None, "w" * 200, None, "n1")
    protocol = ControlProtocol(server.control)
    data, total = b"", 1
    while len(data) < total:
        page = fired(Deferred.fromCoroutine(protocol.audit(offset=len(data), limit=300)))
        assert len(page["chunk"]) <= PAGE
        data, total = data + page["chunk"], page["total"]
    records = json.loads(data)["records"]
    assert total > PAGE and len(records) == 300
    assert records[0]["time"] == rfc3339(T0 + 399) and records[0]["from"] == "tel/1"
    refused = fired(Deferred.fromCoroutine(protocol.mute(user="bob", seconds=0, reason="")))
    assert isinstance(refused, Failure) and refused.check(BadRequest)
    ghost = fired(Deferred.fromCoroutine(protocol.mute(user="ghost", seconds=60, reason="")))
    assert isinstance(ghost, Failure) and ghost.check(NoSuchUser)
    done = fired(Deferred.fromCoroutine(protocol.mute(user="bob", seconds=60, reason="")))
    assert done["until"] == server.clock.seconds() + 60
    [record] = audit.records(server.store.db, AuditQuery(actor=None, target="bob"))
    assert (record.origin, record.action, record.reason) == ("cli", "mute", None)


def test_an_otp_reset_is_recorded_and_a_reset_of_nothing_is_not(server: Assembly) -> None:
    server.clock.advance(T0)  # type: ignore[attr-defined]
    enable(server, online(server, "alice"))
    root = online(server, "root1")
    assert "otp: second factor of alice removed" in root.run("otp reset alice")
    assert "alice has no second factor" in root.run("otp reset alice")
    [record] = audit.records(server.store.db, AuditQuery())
    fields = (record.actor, record.action, record.target, record.node)
    assert fields == ("root1", "otp reset", "alice", "n1")
    assert record.origin.startswith("tel/")
