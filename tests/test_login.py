"""The login dialogue over a real TelnetProtocol (no sockets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import Client, add_user, hold_db_call, make_server

from shellserver.app.assembly import Assembly
from shellserver.files.tree import Tree
from shellserver.ops.threads import inline_runner
from shellserver.store.accounts import StoreUnavailable, _take_logins


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    srv = make_server(tmp_path)
    add_user(srv, "alice")
    return srv


def test_banner_then_login_prompt(server: Assembly) -> None:
    c = Client(server)
    out = c.output()
    assert out.startswith("shellserver on testhost\n")
    assert "'new'" in out and out.endswith("login: ")


def test_login_shows_first_login_then_prompt(server: Assembly) -> None:
    c = Client(server)
    out = c.login("alice")
    assert "This is your first login." in out
    assert out.endswith("alice@testhost:~$ ")
    c.drop()
    c2 = Client(server, peer="10.9.9.9")
    out = c2.login("alice")
    assert "Last login: " in out and "from 10.0.0.1" in out


def test_the_motd_is_read_off_the_reactor_and_shown_sanitised(tmp_path: Path) -> None:
    motd = tmp_path / "motd"
    motd.write_bytes(b"Welcome \x1b[2J to the box\r\nsecond line")
    read: list[str] = []

    def runner(f: Any, *args: Any) -> Any:
        read.append(f.__name__)
        return inline_runner(f, *args)

    server = make_server(tmp_path, motd=str(motd), run_io=runner)
    add_user(server, "alice")
    out = Client(server).login("alice")
    assert "Welcome ^[[2J to the box\nsecond line\nThis is your first login." in out
    assert read == ["_read_motd"]  # through the I/O runner, not on the reactor thread
    motd.unlink()  # an unreadable motd: logged, and the login goes on without it
    out = Client(server).login("alice")
    assert "Welcome" not in out and "alice@testhost" in out


def test_password_prompt_turns_echo_off_and_back_on(server: Assembly) -> None:
    c = Client(server)
    assert c.raw().startswith(b"\xff\xfb\x01")  # WILL ECHO is offered at connect
    c.send("alice")
    assert c.raw() == b"Password: "  # still ours: the client (never negotiating) echoes nothing
    c.send("password1")
    # The line ends at once; echo comes back with the first thing shown after it.
    assert c.raw().startswith(b"\r\n\xff\xfc\x01")


def test_failed_logins_delay_grow_and_close_after_three(server: Assembly) -> None:
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


def test_unknown_user_gets_the_same_answer(server: Assembly) -> None:
    c = Client(server)
    c.output()
    c.login("nobody-here", "whatever1")
    c.clock.advance(1)
    assert c.output() == "Login incorrect\nlogin: "


def test_ten_failures_from_an_address_block_it(server: Assembly) -> None:
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


def test_login_timeout(server: Assembly) -> None:
    c = Client(server)
    c.clock.advance(59)
    assert not c.disconnecting
    c.clock.advance(1)
    assert "Login timed out after 60 seconds." in c.output()
    assert c.disconnecting


def test_logged_in_sessions_do_not_time_out_at_login(server: Assembly) -> None:
    c = Client(server)
    c.login("alice")
    c.clock.advance(120)
    assert not c.disconnecting


def test_registration(server: Assembly) -> None:
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


def test_name_checks_at_registration_are_paced(server: Assembly) -> None:
    looked: list[str] = []
    real_run = server.store.run_db

    def run(f: Any, *args: Any) -> Any:
        if f.__name__ == "get":
            looked.append(args[0])
        return real_run(f, *args)

    server.store.run_db = run
    c = Client(server)
    c.send("new")
    c.output()
    for _ in range(8):  # a client typing taken names as fast as it can
        c.send("alice")
    assert len(looked) == 5  # five at once, then one a second
    server.clock.advance(1)  # type: ignore[attr-defined]
    assert len(looked) == 6
    server.clock.advance(2)  # type: ignore[attr-defined]
    assert len(looked) == 8 and c.output().count("taken") == 8


def test_registration_closed(tmp_path: Path) -> None:
    server = make_server(tmp_path, registration=False)
    c = Client(server)
    assert "'new'" not in c.output()
    c.send("new")
    assert "Registration is closed" in c.output()


def test_locked_account_is_told_after_the_right_password(server: Assembly) -> None:
    server.store.set_locked("alice", True)
    c = Client(server)
    assert "locked" in c.login("alice")
    assert c.disconnecting


def test_ctrl_d_at_login_closes(server: Assembly) -> None:
    c = Client(server)
    c.send_bytes(b"\x04")
    assert c.disconnecting


def test_ctrl_c_at_password_returns_to_login(server: Assembly) -> None:
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


def test_connection_lost_while_logging_in_leaves_nothing_behind(server: Assembly) -> None:

    pending = hold_db_call(server, "last_login")
    c = Client(server)
    c.login("alice")
    c.drop()
    pending.callback(None)
    assert server.hub.counts()[0] == 0
    assert server.hub.allocate_tty("tel").result == "tel/0"
    assert not server.seats


def _clocked_hashing(server: Assembly, seconds_by_cost: dict[int, float]) -> list[str]:
    """Hashing that takes clock time by cost, as a thread pool would; returns the calls made."""

    from twisted.internet.task import deferLater

    calls: list[str] = []

    def run(f: Any, *args: Any) -> Any:
        calls.append(f.__name__)
        if f.__name__ == "verify_password":
            cost = int(args[1].split("ln=")[1].split(",")[0])
        else:  # hash_password(password, cost) or dummy_hash(cost)
            cost = args[-1]
        return deferLater(server.clock, seconds_by_cost[cost], f, *args)  # type: ignore[arg-type]

    real_db = server.store.run_db

    def db(f: Any, *args: Any) -> Any:
        if f.__name__ == "_read_and_check_cheap":  # every hash goes to the pool, as dear ones do
            return real_db(server.store.db.get_hash, args[0]).addCallback(lambda got: (got, None))
        return real_db(f, *args)

    server.store.run_hash = run
    server.store.run_db = db
    return calls


def test_failure_answers_at_the_same_moment_whatever_the_hashing_took(tmp_path: Path) -> None:
    from shellserver.store.passwords import hash_password

    server = make_server(tmp_path, hash_cost=5)
    server.store.db.create("quick", hash_password("password1", 4))  # newusers --hash-cost 4
    server.store.db.create("usual", hash_password("password1", 5))
    calls = _clocked_hashing(server, {4: 0.002, 5: 0.15})
    clients = {
        name: Client(server, peer=f"10.1.1.{i}")
        for i, name in enumerate(["quick", "usual", "nobody-at-all"])
    }
    for name, c in clients.items():
        c.output()
        c.login(name, "wrong-password")
    server.clock.advance(0.999)  # type: ignore[attr-defined]
    assert calls.count("verify_password") == 3  # the unknown name was hashed too
    assert all("Login incorrect" not in c.output() for c in clients.values())
    server.clock.advance(0.002)  # type: ignore[attr-defined]
    assert all(c.output() == "Login incorrect\nlogin: " for c in clients.values())


def test_parallel_connections_get_ten_guesses_checked_in_all(server: Assembly) -> None:
    calls = _clocked_hashing(server, {4: 0.01})
    clients = [Client(server, peer="10.6.6.6") for _ in range(20)]
    for _round in range(3):
        for c in clients:
            if not c.disconnecting:
                c.send("alice")
                c.send("wrong-password")
        server.clock.advance(5)  # type: ignore[attr-defined]
    assert calls.count("verify_password") == 10
    assert all(c.disconnecting for c in clients)
    for c in clients:
        c.drop()
    assert "Too many failed logins" in Client(server, peer="10.6.6.6").output()


def test_a_success_does_not_count_towards_the_block(server: Assembly) -> None:
    for _ in range(20):
        c = Client(server, peer="10.6.6.6")
        assert "alice@testhost" in c.login("alice")
        c.drop()
    for delay in (1, 2, 4):
        c = Client(server, peer="10.6.6.6")
        c.login("alice", "nope-nope")
        server.clock.advance(delay)  # type: ignore[attr-defined]
    assert "alice@testhost" in Client(server, peer="10.6.6.6").login("alice")


def _disk_full(*args: object) -> None:
    import sqlite3

    raise sqlite3.OperationalError("database or disk is full")


@pytest.fixture
def critical_lines() -> Any:
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.critical:
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest.mark.parametrize("where", ["get_hash"])
def test_disk_full_at_login_says_so_and_keeps_the_connection(
    server: Assembly, critical_lines: list[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setattr(server.store.db, where, _disk_full)
    c = Client(server)
    c.output()
    for _ in range(3):
        out = c.login("alice")
        assert out.endswith("Service temporarily unavailable\nlogin: "), out
        assert not c.disconnecting
    assert len(critical_lines) == 1  # once a minute, however many fail
    monkeypatch.undo()
    assert c.login("alice").endswith("alice@testhost:~$ ")
    monkeypatch.setattr(server.store.db, where, _disk_full)
    server.clock.advance(59)  # type: ignore[attr-defined]
    Client(server).login("alice")
    assert len(critical_lines) == 1
    server.clock.advance(2)  # type: ignore[attr-defined]
    Client(server).login("alice")
    assert len(critical_lines) == 2
    assert server.hub.counts()[0] == 1


def test_a_login_whose_record_cannot_be_written_still_logs_in(
    server: Assembly, critical_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full: the user gets in (to delete files); the record is dropped with a log line."""
    monkeypatch.setattr(server.store.db, "record_logins", _disk_full)
    monkeypatch.setattr(server.store.db, "record_logout", _disk_full)
    sessions = []
    for _ in range(3):
        c = Client(server)
        out = c.login("alice")
        assert out.endswith("alice@testhost:~$ "), out
        assert "unavailable" not in out
        sessions.append(c)
    assert server.hub.counts()[0] == 3
    assert len(critical_lines) == 1, critical_lines  # once a minute
    assert critical_lines[0].startswith("recording a login failed, logged in without a login")
    c = sessions[0]
    c.send("echo still here")
    assert "still here" in c.output()
    monkeypatch.undo()
    assert "Last login" not in Client(server).login("alice")  # nothing was recorded
    for c in sessions:
        c.drop()  # no logout record to write: nothing logged, no traceback


def test_a_logout_record_that_cannot_be_written_is_one_line(
    server: Assembly, critical_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = [Client(server) for _ in range(3)]
    for c in clients:
        c.login("alice")
    monkeypatch.setattr(server.store.db, "record_logout", _disk_full)
    for c in clients:
        c.drop()
    assert len(critical_lines) == 1  # and no traceback (the autouse fixture fails on one)


@pytest.mark.parametrize("where", ["create", "homes", "making the home"])
def test_disk_full_at_registration_says_so_and_keeps_the_connection(
    server: Assembly, critical_lines: list[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import errno

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "create":
        monkeypatch.setattr(server.store.db, "create", _disk_full)
    elif where == "homes":
        assert server.homes is not None
        monkeypatch.setattr(type(server.homes), "create", no_space)
    else:  # the disk fills as the new home's directory is made, on the I/O thread
        monkeypatch.setattr(Tree, "open_home", no_space)
    c = Client(server)
    c.output()
    for line in ["new", "bob", "longenough", "longenough"]:
        c.send(line)
    assert c.output().endswith("Service temporarily unavailable\nlogin: ")
    assert not c.disconnecting and len(critical_lines) == 1
    assert server.store.db.get("bob") is None  # nothing half-made
    monkeypatch.undo()
    for line in ["new", "bob", "longenough", "longenough"]:
        c.send(line)
    assert c.output().endswith("bob@testhost:~$ ")


def _register(c: Client, name: str) -> str:
    for line in ["new", name, "longenough", "longenough"]:
        c.send(line)
    return c.output()


def test_registrations_are_limited_per_address_per_hour(tmp_path: Path) -> None:
    server = make_server(tmp_path, max_registrations=2)
    for name in ["bob", "carol"]:
        assert _register(Client(server, peer="10.3.3.3"), name).endswith(f"{name}@testhost:~$ ")
    c = Client(server, peer="10.3.3.3")
    c.output()
    c.send("new")
    assert c.output() == "Too many accounts created from your address; try again later.\nlogin: "
    assert _register(Client(server, peer="10.4.4.4"), "dave").endswith("dave@testhost:~$ ")
    server.clock.advance(3601)  # type: ignore[attr-defined]
    assert _register(Client(server, peer="10.3.3.3"), "erin").endswith("erin@testhost:~$ ")


def test_parallel_registrations_cannot_pass_the_limit_together(tmp_path: Path) -> None:
    from twisted.internet.task import deferLater

    server = make_server(tmp_path, max_registrations=2)
    server.store.run_hash = lambda f, *a: deferLater(server.clock, 0.1, f, *a)  # type: ignore[misc]
    clients = [Client(server, peer="10.3.3.3") for _ in range(5)]
    outs = []
    for i, c in enumerate(clients):
        c.output()
        outs.append(_register(c, f"user{i}"))  # all pass the check at 'new' before any is made
    server.clock.advance(1)  # type: ignore[attr-defined]
    outs = [o + c.output() for o, c in zip(outs, clients, strict=True)]
    assert sum("Welcome" in o for o in outs) == 2
    assert sum("Too many accounts created" in o for o in outs) == 3
    assert server.store.db.count() == 2


def test_a_failed_registration_is_not_counted(tmp_path: Path) -> None:
    server = make_server(tmp_path, max_registrations=1)
    add_user(server, "bob")
    c = Client(server, peer="10.3.3.3")
    from shellserver.store.accounts import UserExists

    def raced(*args: object) -> None:
        raise UserExists("carol")

    server.store.db.create = raced  # type: ignore[method-assign]
    assert "taken a moment ago" in _register(c, "carol")
    del server.store.db.create
    assert _register(c, "carol").endswith("carol@testhost:~$ ")


def test_login_grace_ending_while_the_login_is_recorded_counts_nothing_twice(
    server: Assembly,
) -> None:
    pending = hold_db_call(server, "_take_logins")  # the batch that records logins
    c = Client(server)
    c.login("alice")
    server.clock.advance(60)  # type: ignore[attr-defined]
    assert "Login timed out" in c.output()
    assert server.admission.unauth == 0
    server.store.run_db = inline_runner
    pending.callback(_take_logins(server.store.db, server.store._logins))
    c.drop()
    assert (server.admission.unauth, server.admission.connections) == (0, 0)
    assert server.hub.counts()[0] == 0


def _store_down(*args: object) -> None:
    raise StoreUnavailable("the store at postgresql://app@db/shell: connection refused")


def test_a_store_that_cannot_be_reached_refuses_the_login_and_closes(
    server: Assembly, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.store.db, "get_hash", _store_down)
    c = Client(server)
    c.output()
    out = c.login("alice")
    assert out.endswith("Service temporarily unavailable; please try again later.\n"), out
    assert c.disconnecting


def test_a_store_that_cannot_be_reached_refuses_a_registration_and_closes(
    server: Assembly, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.store.db, "get", _store_down)
    c = Client(server)
    c.output()
    for line in ["new", "bob"]:
        c.send(line)
    assert c.output().endswith("Service temporarily unavailable; please try again later.\n")
    assert c.disconnecting


def test_commands_needing_a_store_that_cannot_be_reached_say_so(
    server: Assembly, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Client(server)
    assert c.login("alice").endswith("alice@testhost:~$ ")
    c.output()
    monkeypatch.setattr(server.store.db, "history", _store_down)
    assert c.run("last").startswith("last: service temporarily unavailable\n")
    assert c.run("whoami").startswith("alice\n")  # the session goes on
    assert not c.disconnecting
