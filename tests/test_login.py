"""The login dialogue over a real TelnetProtocol (no sockets): SPEC §3."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Client, add_user, make_server

from shellserver.server import Server


@pytest.fixture
def server(tmp_path: Path) -> Server:
    srv = make_server(tmp_path)
    add_user(srv, "alice")
    return srv


def test_banner_then_login_prompt(server: Server) -> None:
    c = Client(server)
    out = c.output()
    assert out.startswith("shellserver on testhost\n")
    assert "'new'" in out and out.endswith("login: ")


def test_login_shows_first_login_then_prompt(server: Server) -> None:
    c = Client(server)
    out = c.login("alice")
    assert "This is your first login." in out
    assert out.endswith("alice@testhost:~$ ")
    c.drop()
    c2 = Client(server, peer="10.9.9.9")
    out = c2.login("alice")
    assert "Last login: " in out and "from 10.0.0.1" in out


def test_password_prompt_turns_echo_off_and_back_on(server: Server) -> None:
    c = Client(server)
    assert c.raw().startswith(b"\xff\xfb\x01")  # WILL ECHO is offered at connect
    c.send("alice")
    assert c.raw() == b"Password: "  # still ours: the client (never negotiating) echoes nothing
    c.send("password1")
    # The line ends at once; echo comes back with the first thing shown after it.
    assert c.raw().startswith(b"\r\n\xff\xfc\x01")


def test_failed_logins_delay_grow_and_close_after_three(server: Server) -> None:
    c = Client(server)
    clock = c.clock
    for attempt, delay in enumerate([1, 2, 4], start=1):
        c.output()
        c.login("alice", "wrong-password")
        clock.advance(delay - 0.01)
        assert "Login incorrect" not in c.output()
        clock.advance(0.01)
        out = c.output()
        assert "Login incorrect" in out
        if attempt < 3:
            assert out.endswith("login: ")
    assert c.disconnecting


def test_unknown_user_gets_the_same_answer(server: Server) -> None:
    c = Client(server)
    c.output()
    c.login("nobody-here", "whatever1")
    c.clock.advance(1)
    assert c.output() == "Login incorrect\nlogin: "


def test_ten_failures_from_an_address_block_it(server: Server) -> None:
    for _ in range(4):
        c = Client(server, peer="10.6.6.6")
        for delay in (1, 2, 4):
            c.login("alice", "nope-nope")
            c.clock.advance(delay)
    c = Client(server, peer="10.6.6.6")
    assert "Too many failed logins; try again later" in c.output()
    assert c.disconnecting
    other = Client(server, peer="10.7.7.7")
    assert "alice@testhost" in other.login("alice")
    server.clock.advance(301)  # type: ignore[attr-defined]
    assert "alice@testhost" in Client(server, peer="10.6.6.6").login("alice")


def test_login_timeout(server: Server) -> None:
    c = Client(server)
    c.clock.advance(59)
    assert not c.disconnecting
    c.clock.advance(1)
    assert "Login timed out after 60 seconds." in c.output()
    assert c.disconnecting


def test_logged_in_sessions_do_not_time_out_at_login(server: Server) -> None:
    c = Client(server)
    c.login("alice")
    c.clock.advance(120)
    assert not c.disconnecting


def test_registration(server: Server) -> None:
    c = Client(server)
    c.send("new")
    assert c.output().endswith("Username: ")
    for bad, why in [
        ("Bob", "Usernames are"),
        ("9lives", "Usernames are"),
        ("x" * 33, "Usernames are"),
        ("root", "reserved"),
        ("alice", "taken"),
    ]:
        c.send(bad)
        out = c.output()
        assert why in out and out.endswith("Username: "), (bad, out)
    c.send("bob")
    c.send("short")
    assert "at least 8" in c.output()
    c.send("longenough")
    c.send("different1")
    assert "do not match" in c.output()
    c.send("longenough")
    c.send("longenough")
    out = c.output()
    assert "Welcome, bob!" in out and out.endswith("bob@testhost:~$ ")


def test_registration_closed(tmp_path: Path) -> None:
    server = make_server(tmp_path, registration=False)
    c = Client(server)
    assert "'new'" not in c.output()
    c.send("new")
    assert "Registration is closed" in c.output()


def test_locked_account_is_told_after_the_right_password(server: Server) -> None:
    server.store.set_locked("alice", True)
    c = Client(server)
    assert "locked" in c.login("alice")
    assert c.disconnecting


def test_ctrl_d_at_login_closes(server: Server) -> None:
    c = Client(server)
    c.send_bytes(b"\x04")
    assert c.disconnecting


def test_ctrl_c_at_password_returns_to_login(server: Server) -> None:
    c = Client(server)
    c.send("alice")
    c.output()
    c.send_bytes(b"\x03")
    assert c.output().endswith("login: ")


@pytest.mark.parametrize("on_max", ["refuse", "replace"])
def test_max_sessions(tmp_path: Path, on_max: str) -> None:
    server = make_server(tmp_path, max_sessions=1, on_max=on_max)
    add_user(server, "alice")
    first = Client(server)
    first.login("alice")
    second = Client(server, peer="10.0.0.2")
    out = second.login("alice")
    if on_max == "refuse":
        assert "Too many sessions for alice (limit 1)" in out
        assert second.disconnecting and not first.disconnecting
    else:
        assert out.endswith("alice@testhost:~$ ")
        assert "replaced by a new login from 10.0.0.2" in first.output()
        assert first.disconnecting and not second.disconnecting


def test_connection_lost_while_logging_in_leaves_nothing_behind(server: Server) -> None:
    from typing import Any

    from twisted.internet.defer import Deferred

    from shellserver.threads import inline_runner

    pending: Deferred[None] = Deferred()

    def run_db(f: Any, *args: Any) -> Deferred[Any]:
        return pending if f.__name__ == "last_login" else inline_runner(f, *args)

    server.store.run_db = run_db
    c = Client(server)
    c.login("alice")
    c.drop()
    pending.callback(None)
    assert len(server.hub) == 0
    assert server.hub.allocate_tty("tel") == "tel/0"
    assert not server.connections
