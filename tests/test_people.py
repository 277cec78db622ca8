"""Saved messages and ignore lists through the whole stack, without sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import StoreMaker
from harness import COST, Client, add_user, make_server, make_server_with, online
from twisted.internet.defer import Deferred

from shellserver.app.assembly import Assembly
from shellserver.ops.threads import inline_runner
from shellserver.shell import people
from shellserver.shell.people import MAILBOX_LIMIT
from shellserver.store.accounts import AccountStore


@pytest.fixture
def server(tmp_path: Path, store_maker: StoreMaker) -> Assembly:
    """Each test on SQLite and on PostgreSQL."""
    store = AccountStore(store_maker.open(), inline_runner, inline_runner, COST)
    return make_server_with(tmp_path, ("alice", "bob", "carol"), store=store)


def saved_count(server: Assembly, name: str) -> int:
    return len(people.saved_messages(server.store.db, name))


def test_write_to_an_offline_user_saves_it_and_login_counts_it(server: Assembly) -> None:
    a = online(server, "alice")
    assert a.run("write bob hello bob") == (
        "write: bob is not logged in; message saved\nalice@testhost:~$ "
    )
    a.run("write bob second one")
    b = Client(server)
    out = b.login("bob", "password1")
    notice = "You have 2 new messages; type 'messages' to read them.\n"
    assert "This is your first login.\n" + notice + "bob@testhost:~$ " in out
    b.drop()
    b = Client(server)
    assert "You have 2 new messages" in b.login("bob", "password1")
    b.run("messages read 1")
    b.drop()
    out = Client(server).login("bob", "password1")
    assert "You have 1 new message; type 'messages' to read them.\n" in out


def test_no_notice_without_new_messages(server: Assembly) -> None:
    out = Client(server).login("bob", "password1")
    assert "new message" not in out


def test_unknown_and_bad_names_are_just_not_logged_in(server: Assembly) -> None:
    a = online(server, "alice")
    assert a.run("write nosuch hi").startswith("write: nosuch is not logged in\n")
    assert a.run("write B\x1bX hi").startswith("write: B^[X is not logged in\n")
    assert a.run("write nosuch").startswith("write: nosuch is not logged in\n")


def test_multi_line_write_to_an_offline_user(server: Assembly) -> None:
    a = online(server, "alice")
    a.run("write bob")
    a.send("line one")
    a.send("line \x1b two")
    assert a.run(".").startswith("write: bob is not logged in; message saved\n")
    b = online(server, "bob")
    out = b.run("messages read 1")
    assert out.startswith("Message 1 from alice at ")
    assert ":\nline one\nline ^[ two\nbob@testhost:~$ " in out


def test_caps_per_message_and_per_recipient(server: Assembly) -> None:
    a = online(server, "alice")
    # One line fits (lines are at most 4096 bytes); several may not.
    a.run("write bob")
    for _ in range(5):
        a.send("y" * 1000)
    a.send("after the limit is still part of the message")
    assert a.run(".").startswith("write: message too long to save (at most 4096 bytes)\n")
    assert saved_count(server, "bob") == 0
    for i in range(MAILBOX_LIMIT):  # from several senders: one may save only 20
        sender = f"sender{i // people.SENDER_LIMIT}"
        assert people.save_message(server.store.db, "bob", sender, b"m%d" % i, 1.0) == "saved"
    assert a.run("write bob one more").startswith("write: bob's mailbox is full\n")
    assert a.run("write bob").startswith("write: bob's mailbox is full\n")
    assert saved_count(server, "bob") == MAILBOX_LIMIT


def test_messages_list_read_rm(server: Assembly) -> None:
    a = online(server, "alice")
    a.run("write bob first \x1b[31m message")
    c = online(server, "carol")
    c.run("write bob " + "z" * 200)
    b = online(server, "bob")
    lines = b.run("messages").splitlines()
    assert lines[0].startswith("N  1  alice  ") and lines[0].endswith("  first ^[[31m message")
    assert lines[1].startswith("N  2  carol  ") and lines[1].endswith("z…")
    assert len(lines[1]) == 79
    assert lines[2] == "bob@testhost:~$ "
    b.run("messages read 2")
    lines = b.run("messages").splitlines()  # what was read is no longer marked N
    assert lines[0].startswith("N  1  alice  ") and lines[1].startswith("   2  carol  ")
    assert b.run("messages read 3").startswith("messages: 3: no such message\n")
    assert b.run("messages read x").startswith("Usage: messages [read N|all] [rm N|all]\n")
    assert b.run("messages delete 1").startswith("Usage: ")
    out = b.run("messages read all")
    assert "Message 1 from alice" in out and "Message 2 from carol" in out
    assert all(m.read for m in people.saved_messages(server.store.db, "bob"))
    assert b.run("messages").startswith("   1  alice  ")
    assert b.run("messages rm 1") == "bob@testhost:~$ "
    assert b.run("messages").startswith("   1  carol  ")
    b.run("messages rm all")
    assert b.run("messages").startswith("No saved messages.\n")


def test_ignore_commands_and_lists(server: Assembly) -> None:
    b = online(server, "bob")
    assert b.run("ignore").startswith("You are not ignoring anyone.\n")
    assert b.run("ignore alice").startswith("Ignoring alice.\n")
    assert b.run("ignore alice").startswith("ignore: you are already ignoring alice\n")
    assert b.run("ignore carol").startswith("Ignoring carol.\n")
    assert b.run("ignore").startswith("alice\ncarol\nbob@")
    assert b.run("ignore bob").startswith("ignore: you cannot ignore yourself\n")
    assert b.run("ignore nosuch").startswith("ignore: no such user: nosuch\n")
    assert b.run("ignore \x1b").startswith("ignore: no such user: ^[\n")
    assert b.run("ignore a b").startswith("Usage: ignore [USER]\n")
    assert b.run("unignore carol").startswith("No longer ignoring carol.\n")
    assert b.run("unignore carol").startswith("unignore: you are not ignoring carol\n")
    assert b.run("unignore").startswith("Usage: unignore USER\n")
    assert people.ignore_list(server.store.db, "bob") == ["alice"]


def test_ignored_writes_look_like_mesg_n(server: Assembly) -> None:
    a = online(server, "alice")
    b = online(server, "bob")
    b.run("ignore alice")
    b.output()
    assert a.run("write bob hi").startswith("write: bob has messages disabled\n")
    assert a.run("write bob tel/1 hi").startswith("write: bob has messages disabled\n")
    assert b.output() == ""
    c = online(server, "carol")
    c.run("write bob hi from carol")
    assert "hi from carol" in b.output()
    # Mid-message: lines stop when bob starts ignoring.
    b.run("unignore alice")
    a.run("write bob")
    a.send("one")
    assert "one" in b.output()
    b.run("ignore alice")
    b.output()
    assert a.run("two").startswith("write: bob has messages disabled\n")
    assert b.output() == ""
    # wall and admin notices are never ignored.
    b.run("ignore root1")
    admin = online(server, "root1")
    admin.run("wall still reaches you")
    assert "still reaches you" in b.output()
    assert admin.run("write bob hi").startswith("write: bob has messages disabled\n")


def test_ignore_reaches_every_session_and_offline_messages(server: Assembly) -> None:
    b1 = online(server, "bob")
    b2 = online(server, "bob")
    b1.run("ignore alice")
    a = online(server, "alice")
    assert a.run("write bob tel/1 hi").startswith("write: bob has messages disabled\n")
    b1.drop()
    b2.drop()
    assert server.hub.ignores("bob") == frozenset()  # forgotten with the last session
    assert a.run("write bob while away").startswith("write: bob has messages disabled\n")
    assert saved_count(server, "bob") == 0
    # Loaded again at the next login, from the store.
    b = online(server, "bob")
    assert server.hub.ignores("bob") == {"alice"}
    assert a.run("write bob hi").startswith("write: bob has messages disabled\n")
    b.drop()


def test_ignoring_discards_what_they_saved(server: Assembly) -> None:
    a = online(server, "alice")
    a.run("write bob pest")
    c = online(server, "carol")
    c.run("write bob friend")
    b = online(server, "bob")
    b.run("ignore alice")
    b.output()
    assert b.run("messages").startswith("N  1  carol  ")


def test_userdel_takes_messages_and_ignores_along(server: Assembly) -> None:
    a = online(server, "alice")
    a.run("write bob hi")
    people.add_ignore(server.store.db, "carol", "bob")
    server.store.db.delete("bob")
    db = server.store.db._db
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM ignores").fetchone()[0] == 0


def test_writing_to_someone_online_never_asks_the_store(server: Assembly) -> None:
    a = online(server, "alice")
    b = online(server, "bob")
    b.run("ignore carol")
    a.output()
    b.output()

    def no_store(*args: object, **kwargs: object) -> None:
        raise AssertionError("the online write path went to the store")

    server.store.run_db = no_store  # type: ignore[method-assign]
    assert a.run("write bob hi") == "alice@testhost:~$ "
    assert "hi\nEOF\n" in b.output()


def test_a_multi_line_offline_message_is_paced_by_the_command_bucket(tmp_path: Path) -> None:
    """As for an online ``write``: a paste is held to the rate, not refused, and none is lost."""
    server = make_server(tmp_path, cmd_burst=3, cmd_rate=2.0)
    add_user(server, "alice")
    add_user(server, "bob")
    a = online(server, "alice")
    a.run("write bob")  # one token
    for n in range(6):
        a.send(f"line {n}")
    a.send(".")
    assert saved_count(server, "bob") == 0  # two lines taken, the third waits for a token
    server.clock.advance(1.5)  # type: ignore[attr-defined]
    assert saved_count(server, "bob") == 0
    server.clock.advance(0.5)  # type: ignore[attr-defined]
    assert a.output().startswith("write: bob is not logged in; message saved\n")
    text = people.saved_messages(server.store.db, "bob")[0].text
    assert text == "\n".join(f"line {n}" for n in range(6))


def test_the_last_session_ending_while_another_logs_in_keeps_the_ignore_list(
    tmp_path: Path,
) -> None:
    motd = tmp_path / "motd"
    motd.write_text("hello\n")
    held: list[Deferred[bytes]] = []  # while not empty, the motd waits for its Deferred

    def run_io(f: Any, *args: Any) -> Any:
        return held[0] if held else inline_runner(f, *args)

    server = make_server(tmp_path, motd=str(motd), run_io=run_io)
    for name in ("alice", "bob"):
        add_user(server, name)
    b1 = online(server, "bob")
    b1.run("ignore alice")
    # bob logs in again; while the motd is read, his other session goes.
    pending: Deferred[bytes] = Deferred()
    held.append(pending)
    b2 = Client(server)
    b2.login("bob", "password1")
    b1.drop()
    held.clear()
    pending.callback(b"hello\n")
    assert "bob@testhost" in b2.output()
    assert server.hub.ignores("bob") == {"alice"}
    a = online(server, "alice")
    assert a.run("write bob hi").startswith("write: bob has messages disabled\n")
