"""Detach and resume with real clients: a stock telnet killed mid-``write``, resumed over
OpenSSH with its messages and its half-typed line; a linger that runs out leaves the held
``write`` in the mailbox."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import RealServer, have_telnet, login
from test_ssh_integration import cli, needs_ssh, ssh_args

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RealServer]:
    srv = RealServer(
        tmp_path, "--ssh", "tcp:0:interface=127.0.0.1", "--linger", "300", "--cmd-rate", "0"
    ).start()
    try:
        for name in ("alice", "bob"):
            made = cli(srv.data, "useradd", name, "--password-stdin", stdin=b"password1\n")
            assert made.returncode == 0, made.stderr
        yield srv
    finally:
        srv.stop()


def _who(srv: RealServer) -> str:
    carol = login(srv.port, "admin", srv.admin_password())
    try:
        carol.send_line("who")
        return carol.expect("admin@testhost:~$ ")
    finally:
        carol.send_line("logout")  # a socket closed without it would leave a detached session
        carol.close()


@needs_ssh
@pytest.mark.skipif(not have_telnet(), reason="the telnet client is not installed")
def test_telnet_killed_mid_write_is_resumed_over_ssh_with_what_was_sent(
    server: RealServer,
) -> None:
    pexpect = pytest.importorskip("pexpect")
    bob = login(server.port, "bob", "password1")
    child = pexpect.spawn(
        "telnet", ["127.0.0.1", str(server.port)], encoding="utf-8", timeout=15,
        env={**os.environ, "TERM": "xterm"},
    )  # fmt: skip
    try:
        child.expect("login: ")
        child.sendline("alice")
        child.expect("Password: ")
        child.sendline("password1")
        child.expect(r"alice@testhost:~\$ ")
        child.sendline("write bob")
        bob.expect("Message from alice@testhost on ")
        child.sendline("see you in a minute")
        bob.expect("see you in a minute")
        child.send("half typed")  # no Enter: on the line when the connection goes
        child.expect("half typed")
    finally:
        child.kill(9)  # the client dies: no logout, no EOF typed
        child.close(force=True)
    bob.expect("EOF")  # the write ends for its reader as on a hang-up
    bob.expect("bob@testhost:~$ ")
    deadline = time.monotonic() + 10
    while "(detached)" not in (listing := _who(server)):
        assert time.monotonic() < deadline, listing
        time.sleep(0.1)
    tty = re.search(r"^alice\s+(tel/\d+) \(detached\)", listing, re.M)
    assert tty is not None, listing
    bob.send_line("write alice are you there?")
    bob.expect("bob@testhost:~$ ")
    admin = login(server.port, "admin", server.admin_password())
    admin.send_line("wall maintenance at noon")
    admin.expect("admin@testhost:~$ ")
    admin.send_line("logout")
    args = ssh_args(server, "alice@127.0.0.1")
    ssh = pexpect.spawn(args[0], args[1:], timeout=15, dimensions=(24, 80), encoding="utf-8")
    try:
        ssh.expect("password: ")
        ssh.sendline("password1")
        ssh.expect(
            rf"You have a detached session on {tty.group(1)} \(idle \d+ seconds?\)\. "
            r"Resume it\? \[Y/n\] "
        )
        ssh.sendline("y")
        ssh.expect("--- 2 messages while you were away ---")
        ssh.expect("are you there")
        ssh.expect("maintenance at noon")
        ssh.expect("---")
        ssh.expect(r"alice@testhost:~\$ half typed")
        ssh.send("\x15")  # ^U: the half-typed line goes
        ssh.sendline("who")
        ssh.expect(rf"alice\s+{tty.group(1)}\s")  # the same tty name
        ssh.expect(r"alice@testhost:~\$ ")
        ssh.sendline("logout")
        ssh.expect(pexpect.EOF)
    finally:
        ssh.close(force=True)
    assert "alice" not in _who(server)  # a logout ends it: nothing left detached
    assert "alice resumed " in server.log_text()


def test_a_write_held_until_the_linger_runs_out_is_in_the_mailbox(tmp_path: Path) -> None:
    srv = RealServer(tmp_path, "--linger", "1").start()
    try:
        for name in ("alice", "bob"):
            cli(srv.data, "useradd", name, "--password-stdin", stdin=b"password1\n")
        alice = login(srv.port, "alice", "password1")
        alice.sock.close()  # gone without a logout
        bob = login(srv.port, "bob", "password1")
        deadline = time.monotonic() + 10
        while True:
            bob.send_line("who")
            if "(detached)" in bob.expect("bob@testhost:~$ "):
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        bob.send_line("write alice the held one")
        bob.expect("bob@testhost:~$ ")
        deadline = time.monotonic() + 10
        while True:  # the linger (1 s) runs out: the session ends, its tty is free
            bob.send_line("who")
            if "alice" not in bob.expect("bob@testhost:~$ "):
                break
            assert time.monotonic() < deadline, "the detached session outlived its linger"
            time.sleep(0.05)
        again = login(srv.port, "alice", "password1")
        again.send_line("messages read 1")
        assert "the held one" in again.expect("alice@testhost:~$ ")
    finally:
        srv.stop()
