"""The real service on loopback, as a user meets it: twistd, TCP, real clients."""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pytest
from realserver import TWISTD, RawClient, RealServer, have_telnet, login, register

pytestmark = pytest.mark.integration


def test_the_done_when_scenario(server: RealServer) -> None:
    """Register from two terminals, see both in who, write between them, admin walls both."""
    alice = register(server.port, "alice")
    bob = register(server.port, "bob")
    assert (server.data / "initial-admin-password").stat().st_mode & 0o777 == 0o600
    alice.send_line("who")
    out = alice.expect("$ ")
    assert "alice" in out and "bob" in out and "FROM" not in out

    alice.send_line("write bob hello bob")
    assert "Message from alice@testhost on tel/0" in bob.expect("EOF")
    bob.send_line("write alice")
    bob.send_line("line one")
    bob.send_line("line two")
    bob.send_line(".")
    got = alice.expect("EOF")
    assert "Message from bob@testhost on tel/1" in got
    # Line two follows line one as one block (replacing a reprinted prompt, if any).
    assert re.search(r"line one\n(\x1b\[K|\r\x1b\[K)?line two\n", got)

    admin = login(server.port, "admin", server.admin_password())
    admin.send_line("who")
    assert "127.0.0.1" in admin.expect("$ ")  # admins see FROM
    admin.send_line("wall maintenance at 18:00")
    for c in (alice, bob, admin):
        got = c.expect("maintenance at 18:00")
        assert "Broadcast message from admin@testhost (tel/2)" in got
    for c in (alice, bob, admin):
        c.send_line("exit")
        assert c.closed()


def test_crlf_variants_and_bare_lf_with_a_silent_client(server: RealServer) -> None:
    c = RawClient(server.port)
    c.expect("login: ")
    c.send_line("admin", end=b"\n")
    c.expect("Password: ")
    c.send_line(server.admin_password(), end=b"\r\x00")
    c.expect("admin@testhost:~$ ")
    c.send_line("whoami", end=b"\r")
    c.expect("admin\nadmin@testhost:~$ ")
    c.send_line("id", end=b"\r\n")
    assert "role=admin" in c.expect("$ ")
    assert b"\xff\xfb\x01" in c.raw_seen  # WILL ECHO for the password
    assert b"\xff\xfc\x01" in c.raw_seen  # WONT ECHO after it
    c.close()


def test_failed_login_is_generic_and_delayed(server: RealServer) -> None:
    c = RawClient(server.port)
    c.expect("login: ")
    c.send_line("nosuchuser")
    c.expect("Password: ")
    c.send_line("whatever1")
    assert "Login incorrect" in c.expect("login: ", timeout=5)
    c.close()


def test_second_server_on_the_same_data_dir_refuses(server: RealServer, tmp_path: Path) -> None:
    proc = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "shellserver", "--telnet", "tcp:0:interface=127.0.0.1",
         "--data", str(server.data), "--hash-cost", "4"],
        cwd=tmp_path, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert b"another shellserver is running" in proc.stderr + proc.stdout
    assert b"Traceback" not in proc.stderr + proc.stdout


def test_port_in_use_is_one_line_and_exit_1(server: RealServer, tmp_path: Path) -> None:
    proc = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "shellserver", "--telnet",
         f"tcp:{server.port}:interface=127.0.0.1", "--data", str(tmp_path / "other"),
         "--hash-cost", "4"],
        cwd=tmp_path, capture_output=True, timeout=60,
    )  # fmt: skip
    out = (proc.stderr + proc.stdout).decode()
    assert proc.returncode == 1, out
    assert "cannot listen on" in out and "Traceback" not in out


@pytest.mark.parametrize(
    "args, words",
    [
        (["--max-sessions", "many"], "--max-sessions"),
        (["--on-max", "sometimes"], "--on-max"),
        (["--registration", "maybe"], "--registration"),
        (["--telnet", "bogus:1"], "--telnet"),
        (["--quota", "lots"], "--quota"),
        (["--hash-cost", "99"], "--hash-cost"),
    ],
)
def test_bad_option_is_a_usage_error(tmp_path: Path, args: list[str], words: str) -> None:
    proc = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "shellserver", "--data", str(tmp_path / "d"), *args],
        cwd=tmp_path, capture_output=True, timeout=60,
    )  # fmt: skip
    out = (proc.stderr + proc.stdout).decode()
    assert proc.returncode != 0
    assert words in out and "Traceback" not in out


def test_twist_runner_starts_it_too(tmp_path: Path) -> None:
    srv = RealServer(tmp_path, runner="twist").start()
    try:
        c = RawClient(srv.port)
        assert "login: " in c.expect("login: ")
        c.close()
    finally:
        srv.stop()


@pytest.mark.skipif(not have_telnet(), reason="the telnet client is not installed")
def test_stock_telnet_client(server: RealServer) -> None:
    pexpect = pytest.importorskip("pexpect")
    register(server.port, "carol").close()
    child = pexpect.spawn(
        "telnet", ["127.0.0.1", str(server.port)], encoding="utf-8", timeout=10,
        env={**os.environ, "TERM": "dumb"},
    )  # fmt: skip
    try:
        child.expect("login: ")
        child.sendline("carol")
        child.expect("Password: ")
        child.sendline("correct horse")
        child.expect(r"carol@testhost:~\$ ")
        assert "correct horse" not in child.before
        child.sendline("whoami")
        child.expect(r"carol\r?\n")
        child.expect(r"\$ ")
        child.sendline("logout")
        child.expect("logout\r?\n")
        child.expect(pexpect.EOF)
        assert "$ " not in child.before  # no prompt after logging out
    finally:
        child.close(force=True)


@pytest.mark.skipif(not have_telnet(), reason="the telnet client is not installed")
def test_stock_telnet_client_registers_without_echoing_either_password(
    server: RealServer,
) -> None:
    """Two hidden questions in a row: the client must not echo the second one."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        "telnet", ["127.0.0.1", str(server.port)], encoding="utf-8", timeout=10,
        env={**os.environ, "TERM": "dumb"},
    )  # fmt: skip
    try:
        seen = io.StringIO()
        child.logfile_read = seen
        child.expect("login: ")
        child.sendline("new")
        child.expect("Username: ")
        child.sendline("dave")
        for prompt, answer in [
            ("Password: ", "short"),  # refused: the question again
            ("Password: ", "first secret"),
            ("Password again: ", "other secret"),  # mismatch: start over
            ("Password: ", "correct horse"),
            ("Password again: ", "correct horse"),
        ]:
            child.expect(prompt)
            child.sendline(answer)
        child.expect(r"dave@testhost:~\$ ")
        for secret in ("short", "first secret", "other secret", "correct horse"):
            assert secret not in seen.getvalue()
        child.sendline("whoami")  # echo is back on for ordinary input
        child.expect(r"whoami\r?\n")
        child.expect(r"dave\r?\n")
    finally:
        child.close(force=True)


def test_too_long_control_socket_path_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    proc = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "shellserver", "--telnet", "tcp:0:interface=127.0.0.1",
         "--data", str(deep), "--hash-cost", "4"],
        cwd=tmp_path, capture_output=True, timeout=60,
    )  # fmt: skip
    out = (proc.stderr + proc.stdout).decode()
    assert proc.returncode == 1
    assert "longer than 107 bytes" in out and "Traceback" not in out
