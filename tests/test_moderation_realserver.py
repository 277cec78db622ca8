"""Moderation on the real server over loopback: an admin's telnet session and the operator's
CLI act, a muted user is refused while still reading, an account deleted and made again
inherits no ignore list, and ``shellserver audit`` lists every action in order."""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from realserver import RawClient, RealServer, have_telnet, login

pytestmark = pytest.mark.integration
#: The end of a mute as shown: the time, with the day before it once it is not today.
UNTIL = r"(?:\w{3} \w{3} \d\d )?\d\d:\d\d"
CLI = str(Path(sys.executable).with_name("shellserver"))
PW = "password1"
MUTED = re.compile(rf"you are muted until {UNTIL} \(flooding\)")


def cli(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--data", str(data), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RealServer]:
    lines = f"boss:{PW}:admin\nalice:{PW}\nbob:{PW}\ncarol:{PW}\n"
    r = cli(tmp_path / "data", "newusers", "--hash-cost", "4", stdin=lines)
    assert r.returncode == 0, r.stderr
    server = RealServer(tmp_path, "--node", "solo").start()
    try:
        yield server
    finally:
        server.stop()


class Telnet:
    """The stock ``telnet`` client, driven as an admin types into it (through pexpect)."""

    def __init__(self, port: int, user: str) -> None:
        pexpect = pytest.importorskip("pexpect")
        self.user = user
        self.child = pexpect.spawn(
            "telnet", ["127.0.0.1", str(port)], encoding="utf-8", timeout=10,
            env={**os.environ, "TERM": "dumb"},
        )  # fmt: skip
        self.child.expect("login: ")
        self.child.sendline(user)
        self.child.expect("Password: ")
        self.child.sendline(PW)
        self.child.expect(re.escape(f"{user}@testhost:~$ "))

    def send_line(self, line: str) -> None:
        self.child.sendline(line)

    def expect(self, text: str) -> str:
        """What came up to ``text`` (line ends as ``\n``), ``text`` included. In character mode
        a prompt is drawn at the start of a cleared line (CR, ``ESC [J``), which is left out."""
        pattern = r"\r\n(?:\r\x1b\[J)?".join(re.escape(part) for part in text.split("\n"))
        self.child.expect(pattern)
        seen = str(self.child.before + self.child.after)
        return seen.replace("\r\x1b[J", "").replace("\r\n", "\n")

    def close(self) -> None:
        self.child.close(force=True)


def run(c: RawClient | Telnet, line: str, user: str) -> str:
    c.send_line(line)
    return c.expect(f"{user}@testhost:~$ ")


def settle(c: RawClient | Telnet, user: str) -> None:
    """Take every message that came with or after the last prompt (a wall reaches its sender
    too), so the next command's prompt is not mistaken for a redrawn one."""
    c.send_line("echo settled")
    c.expect(f"settled\n{user}@testhost:~$ ")


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


@pytest.mark.skipif(not have_telnet(), reason="the telnet client is not installed")
def test_admin_actions_are_audited_and_a_muted_user_only_reads(srv: RealServer) -> None:
    data = srv.data
    boss = Telnet(srv.port, "boss")
    alice = login(srv.port, "alice", PW)
    bob = login(srv.port, "bob", PW)
    carol = login(srv.port, "carol", PW)
    assert "Ignoring carol." in run(bob, "ignore carol", "bob")
    run(alice, "join #den", "alice")

    run(boss, "wall hello everyone", "boss")
    for c, name in ((boss, "boss"), (alice, "alice"), (bob, "bob")):
        settle(c, name)
    assert "kick: ended 1 session of carol" in run(boss, "kick carol spamming", "boss")
    assert carol.closed()
    out = run(boss, "mute alice 10m flooding", "boss")
    assert re.search(rf"muted alice until {UNTIL} \(flooding\)", out), out

    # Muted: every way of sending is refused with the time and the reason...
    assert MUTED.search(run(alice, "write bob hi", "alice"))
    assert "write: you are muted" in run(alice, "write bob hi", "alice")
    assert "write: you are muted" in run(alice, "write carol saved for later", "alice")
    assert "say: you are muted" in run(alice, "say #den hi", "alice")
    assert "topic: you are muted" in run(alice, "topic #den new", "alice")
    # ... but reading goes on: a message to alice arrives, the topic is read.
    assert run(bob, "write alice are you there", "bob") == "bob@testhost:~$ "
    assert "are you there" in alice.expect("EOF\nalice@testhost:~$ ")
    assert "#den has no topic" in run(alice, "topic #den", "alice")
    assert "unmuted alice" in run(boss, "unmute alice", "boss")
    assert run(alice, "write bob free again", "alice") == "alice@testhost:~$ "
    assert "free again" in bob.expect("EOF\nbob@testhost:~$ ")

    assert "lock: bob is locked" in run(boss, "lock bob", "boss")
    assert bob.closed()
    assert "unlock: bob is unlocked" in run(boss, "unlock bob", "boss")
    bob = login(srv.port, "bob", PW)
    assert run(bob, "ignore", "bob") == "carol\nbob@testhost:~$ "

    # The operator: carol deleted and made again through the running server.
    assert cli(data, "userdel", "carol").returncode == 0
    r = cli(data, "useradd", "carol", "--password-stdin", stdin=PW + "\n")
    assert r.returncode == 0, r.stderr
    assert run(bob, "ignore", "bob") == "You are not ignoring anyone.\nbob@testhost:~$ "
    carol = login(srv.port, "carol", PW)
    assert run(carol, "write bob hello, I am new", "carol") == "carol@testhost:~$ "
    assert "hello, I am new" in bob.expect("EOF\nbob@testhost:~$ ")
    r = cli(data, "mute", "bob", "1h", "--reason", "cooling off")
    assert r.returncode == 0 and r.stdout.startswith("muted bob until "), r
    assert "write: you are muted" in run(bob, "write carol hi", "bob")
    r = cli(data, "unmute", "bob")
    assert r.returncode == 0 and r.stdout == "unmuted bob\n", r
    r = cli(data, "unmute", "bob")
    assert r.returncode == 1 and "bob is not muted" in r.stderr
    r = cli(data, "passwd", "alice", "--password-stdin", stdin="another password\n")
    assert r.returncode == 0, r.stderr
    r = cli(data, "ban", "carol", "30m", "evading")
    assert r.returncode == 0, r.stderr
    assert cli(data, "unban", "carol").returncode == 0

    run(boss, "shutdown +30 maintenance", "boss")
    settle(boss, "boss")
    run(boss, "shutdown -c", "boss")
    settle(boss, "boss")

    r = cli(data, "audit", "--json")
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)["records"]
    assert [x["id"] for x in records] == sorted((x["id"] for x in records), reverse=True)
    got = [
        (x["actor"], x["from"], x["action"], x["target"], x["reason"], x["node"])
        for x in reversed(records)
    ]
    tty = boss_tty(boss)
    op, here = me(), socket.gethostname().split(".")[0]
    assert got == [
        (op, "cli", "newusers", None, "4 created, 0 updated", here),
        ("boss", tty, "wall", None, "hello everyone", "solo"),
        ("boss", tty, "kick", "carol", "spamming", "solo"),
        ("boss", tty, "mute", "alice", "flooding", "solo"),
        ("boss", tty, "unmute", "alice", None, "solo"),
        ("boss", tty, "lock", "bob", None, "solo"),
        ("boss", tty, "unlock", "bob", None, "solo"),
        (op, "cli", "userdel", "carol", None, "solo"),
        (op, "cli", "useradd", "carol", None, "solo"),
        (op, "cli", "mute", "bob", "cooling off", "solo"),
        (op, "cli", "unmute", "bob", None, "solo"),
        (op, "cli", "passwd", "alice", None, "solo"),
        (op, "cli", "ban", "carol", "evading", "solo"),
        (op, "cli", "unban", "carol", None, "solo"),
        ("boss", tty, "shutdown", None, "maintenance", "solo"),
        ("boss", tty, "shutdown cancel", None, None, "solo"),
    ]
    mutes = [x for x in records if x["action"] == "mute"]
    assert all(x["expires"] and x["expires"] > x["time"] for x in mutes)

    # The filters and the limit.
    by_boss = json.loads(cli(data, "audit", "--json", "--actor", "boss").stdout)["records"]
    assert {x["actor"] for x in by_boss} == {"boss"} and len(by_boss) == 8
    on_alice = json.loads(cli(data, "audit", "--json", "--target", "alice").stdout)["records"]
    assert [x["action"] for x in on_alice] == ["passwd", "unmute", "mute"]
    last = json.loads(cli(data, "audit", "--json", "--limit", "2", "--since", "1d").stdout)
    assert [x["action"] for x in last["records"]] == ["shutdown cancel", "shutdown"]
    table = cli(data, "audit", "--target", "alice").stdout.splitlines()
    assert table[0].split() == ["TIME", "ACTOR", "FROM", "ACTION", "TARGET", "NODE", "REASON"]
    assert table[3].split()[2:7] == ["boss", tty, "mute", "alice", "solo"]
    assert cli(data, "audit", "--since", "5").returncode == 2

    # The ledger outlives the server: read with it stopped, as the operator would.
    boss.close()
    srv.stop()
    r = cli(data, "audit", "--json", "--limit", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["records"][0]["action"] == "shutdown cancel"


def boss_tty(boss: Telnet) -> str:
    boss.send_line("who")
    out = boss.expect("boss@testhost:~$ ")
    found = re.search(r"^boss +(tel/\d+)", out, re.M)
    assert found, out
    return found.group(1)


def test_with_the_server_stopped_the_cli_mutes_and_records(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = cli(data, "newusers", "--hash-cost", "4", stdin=f"boss:{PW}:admin\nbob:{PW}\n")
    assert r.returncode == 0, r.stderr
    r = cli(data, "--node", "n7", "mute", "bob", "2h", "--reason", "spam")
    assert r.returncode == 0 and re.fullmatch(rf"muted bob until {UNTIL} \(spam\)\n", r.stdout)
    assert cli(data, "mute", "ghost", "2h").returncode == 1
    assert cli(data, "mute", "bob", "2").returncode == 2
    for change in ("lock", "unlock"):
        r = cli(data, change, "bob")
        assert r.returncode == 0, r.stderr
    assert cli(data, "ban", "198.51.100.7", "perm", "scanner").returncode == 0
    assert cli(data, "unban", "198.51.100.7").returncode == 0
    key = Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() + " bob@laptop\n"
    r = cli(data, "addkey", "bob", stdin=line)
    assert r.returncode == 0, r.stderr
    fingerprint = r.stdout.split()[2]
    records = json.loads(cli(data, "audit", "--json").stdout)["records"]
    assert (records[0]["action"], records[0]["target"]) == ("addkey", "bob")
    assert records.pop(0)["reason"] == fingerprint
    assert [(x["action"], x["target"], x["from"]) for x in records] == [
        ("unban", "198.51.100.7", "cli"),
        ("ban", "198.51.100.7", "cli"),
        ("unlock", "bob", "cli"),
        ("lock", "bob", "cli"),
        ("mute", "bob", "cli"),
        ("newusers", None, "cli"),
    ]
    assert (records[1]["reason"], records[1]["expires"]) == ("scanner", None)  # perm
    assert records[4]["node"] == "n7" and records[4]["reason"] == "spam"
    assert records[4]["expires"] > records[4]["time"]
    # The server started on that store holds the mute.
    srv = RealServer(tmp_path).start()
    try:
        bob = login(srv.port, "bob", PW)
        assert "write: you are muted until" in run(bob, "write boss hi", "bob")
        assert cli(data, "unmute", "bob").stdout == "unmuted bob\n"
        assert "message saved" in run(bob, "write boss hi", "bob")
    finally:
        srv.stop()


def test_a_refused_newusers_with_the_server_stopped_is_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    assert cli(data, "newusers", "--hash-cost", "4", stdin=f"dave:{PW}:admin\n").returncode == 0
    r = cli(data, "newusers", "--hash-cost", "4", stdin=f"dave:{PW}:user\n")
    assert (r.returncode, r.stderr) == (
        1,
        "shellserver newusers: dave is the last administrator\n",
    )
    records = json.loads(cli(data, "audit", "--json").stdout)["records"]
    assert [x["reason"] for x in records] == ["1 created, 0 updated"]  # the refused one: none
