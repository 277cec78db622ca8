"""People and rooms on the real server over loopback: saved messages across a
restart, ignore lists, every room command, a room of 500 sessions with a member that never
reads, and a store made by the previous schema migrated at start."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import RawClient, RealServer, login

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("shellserver"))
DATA = Path(__file__).parent / "data"
PW = "password1"


def newusers(data: Path, names: list[str]) -> None:
    """Accounts made offline, before the server starts (cheap hashes)."""
    lines = "".join(f"{n}:{PW}\n" for n in names)
    r = subprocess.run(
        [CLI, "--data", str(data), "newusers", "--hash-cost", "4"],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


@pytest.fixture
def people_server(tmp_path: Path) -> Iterator[RealServer]:
    newusers(tmp_path / "data", ["alice", "bob", "carol"])
    srv = RealServer(tmp_path).start()
    try:
        yield srv
    finally:
        srv.stop()


def run(c: RawClient, line: str, user: str) -> str:
    c.send_line(line)
    return c.expect(f"{user}@testhost:~$ ")


def test_a_saved_message_survives_a_restart(tmp_path: Path) -> None:
    newusers(tmp_path / "data", ["alice", "bob"])
    srv = RealServer(tmp_path).start()
    try:
        alice = login(srv.port, "alice", PW)
        out = run(alice, "write bob see you after the restart", "alice")
        assert "write: bob is not logged in; message saved\n" in out
        alice.send_line("write bob")
        alice.send_line("second, \x1b[31mred\x1b[0m")
        alice.send_line(".")
        assert "write: bob is not logged in; message saved\n" in alice.expect("alice@testhost:~$ ")
        alice.close()
    finally:
        srv.stop()
    srv.log.unlink()  # the next start logs its own port
    srv = RealServer(tmp_path).start()
    try:
        bob = RawClient(srv.port)
        bob.expect("login: ")
        bob.send_line("bob")
        bob.expect("Password: ")
        bob.send_line(PW)
        out = bob.expect("bob@testhost:~$ ")
        assert "You have 2 new messages; type 'messages' to read them.\n" in out
        out = run(bob, "messages", "bob")
        assert "1  alice  " in out and "  see you after the restart\n" in out
        assert "2  alice  " in out
        out = run(bob, "messages read all", "bob")
        assert "see you after the restart\n" in out
        assert "second, ^[[31mred^[[0m\n" in out and "\x1b" not in out
        assert "\n" + "".join(run(bob, "messages rm 1", "bob").splitlines()[-1:]) == (
            "\nbob@testhost:~$ "
        )
        out = run(bob, "messages", "bob")
        assert "1  alice  " in out and "2  alice" not in out
        bob.close()
    finally:
        srv.stop()


def test_ignore_on_loopback(people_server: RealServer) -> None:
    port = people_server.port
    alice, bob, carol = (login(port, n, PW) for n in ("alice", "bob", "carol"))
    assert "Ignoring alice.\n" in run(bob, "ignore alice", "bob")
    assert "alice\n" in run(bob, "ignore", "bob")
    assert "write: bob has messages disabled\n" in run(alice, "write bob psst", "alice")
    run(carol, "write bob hello from carol", "carol")
    got = bob.expect("EOF\nbob@testhost:~$ ")
    assert "hello from carol" in got and "psst" not in got
    assert "No longer ignoring alice.\n" in run(bob, "unignore alice", "bob")
    run(alice, "write bob now you hear me", "alice")
    assert "now you hear me" in bob.expect("EOF\nbob@testhost:~$ ")
    # Kept in the store: ignoring while away refuses saving, as it would mesg n.
    run(bob, "ignore alice", "bob")
    bob.send_line("exit")
    assert bob.closed()
    out = run(alice, "write bob while you are away", "alice")
    assert "write: bob has messages disabled\n" in out


def heard(c: RawClient, text: str, user: str) -> str:
    """A message shown on its own line, with the prompt drawn again under it."""
    return c.expect(f"{text}\n{user}@testhost:~$ ")


def test_every_room_command_on_loopback(people_server: RealServer) -> None:
    port = people_server.port
    alice, bob = login(port, "alice", PW), login(port, "bob", PW)
    assert "[#lobby] alice has joined\n" in run(alice, "join #lobby", "alice")
    run(bob, "join #lobby", "bob")
    heard(alice, "[#lobby] bob has joined", "alice")
    run(alice, "say #lobby hi bob \x07", "alice")
    heard(bob, "[#lobby] alice: hi bob ^G", "bob")
    out = run(alice, "topic #lobby all welcome", "alice")
    assert "[#lobby] alice set the topic: all welcome\n" in out
    heard(bob, "[#lobby] alice set the topic: all welcome", "bob")
    assert "topic: permission denied\n" in run(bob, "topic #lobby mine", "bob")
    assert "[#lobby] topic: all welcome\n" in run(bob, "topic #lobby", "bob")
    out = run(bob, "rooms", "bob")
    assert "#lobby" in out and " 2  all welcome\n" in out
    out = run(bob, "who #lobby", "bob")
    assert "\nalice " in out and "\nbob " in out
    assert "[#lobby] bob has left\n" in run(bob, "part #lobby", "bob")
    heard(alice, "[#lobby] bob has left", "alice")
    assert "join: bad room name: #Bad" in run(bob, "join #Bad", "bob")
    alice.send_line("exit")
    assert alice.closed()
    assert "No rooms.\n" in run(bob, "rooms", "bob")  # the empty room and its topic are gone


def _connect(port: int, name: str, i: int, rcvbuf: int | None = None) -> RawClient:
    """From its own loopback address: logins under way count per address."""
    c = RawClient.__new__(RawClient)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((f"127.3.{i // 200}.{i % 200 + 1}", 0))
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    c.sock, c.buffer, c.raw_seen = sock, b"", b""
    c.send_line(name)
    return c


def test_a_room_of_500_with_a_member_that_never_reads(tmp_path: Path) -> None:
    n = 500
    names = [f"u{i}" for i in range(n)]
    newusers(tmp_path / "data", names)
    limits = ("--max-unauth", "0", "--max-unauth-per-addr", "0", "--cmd-rate", "0")
    srv = RealServer(tmp_path, *limits, "--max-output", "64K").start()
    try:
        clients = [
            _connect(srv.port, name, i, 4096 if name == "u1" else None)
            for i, name in enumerate(names)
        ]
        for c in clients:
            c.expect("Password: ", timeout=30)
            c.send_line(PW)
        for name, c in zip(names, clients, strict=True):
            c.expect(f"{name}@testhost:~$ ", timeout=30)
            c.send_line("join #big")
        for name, c in zip(names, clients, strict=True):
            if name != "u1":
                c.expect(f"[#big] {name} has joined\n", timeout=30)
        sayer, writer = clients[0], clients[2]  # clients[1] (u1) never reads
        # u1 never reads again: fill its socket buffers and its output cap.
        writer.send_line("write u1")
        line = "z" * 4000
        dropped = False
        for _ in range(100):
            writer.send_bytes((line + "\r\n").encode() * 50)
            try:
                writer.expect("write: u1 is not reading; message dropped", timeout=0.05)
                dropped = True
                break
            except AssertionError:
                continue
        assert dropped, "u1's output never reached the cap"
        writer.send_line(".")
        started = time.monotonic()
        sayer.send_line("say #big hello everyone")
        sayer.expect("[#big] u0: hello everyone\nu0@testhost:~$ ", timeout=30)
        for name, c in zip(names[2:], clients[2:], strict=True):
            got = c.expect("[#big] u0: hello everyone\n", timeout=30)
            assert "\x1b" not in got.replace("\r\x1b[K", ""), name
        assert time.monotonic() - started < 20
        # Still responsive, for a fresh login too.
        other = login(srv.port, "u499", PW)
        other.send_line("rooms")
        assert "#big" in other.expect("u499@testhost:~$ ", timeout=5)
        for c in clients:
            c.close()
    finally:
        srv.stop()


def test_the_server_migrates_a_store_made_by_the_previous_schema(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    shutil.copyfile(DATA / "store-v1.sqlite", data / "accounts.sqlite3")
    srv = RealServer(tmp_path).start()
    try:
        alice = login(srv.port, "alice", "alice-password")
        out = run(alice, "write bob saved in a migrated store", "alice")
        assert "write: bob is not logged in; message saved\n" in out
        bob = RawClient(srv.port)
        bob.expect("login: ")
        bob.send_line("bob")
        bob.expect("Password: ")
        bob.send_line("bob-password")
        assert "You have 1 new message;" in bob.expect("bob@testhost:~$ ")
    finally:
        srv.stop()
    backup = sqlite3.connect(data / "accounts.sqlite3.v1.bak")
    assert backup.execute("PRAGMA user_version").fetchone()[0] == 1
    backup.close()
    # A store newer than the server is refused with one clear line.
    conn = sqlite3.connect(data / "accounts.sqlite3")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    srv.log.unlink()
    with pytest.raises(RuntimeError, match="schema version 99"):
        RealServer(tmp_path).start()
