"""The real server: goodbye notices are the last thing sent; own output is bounded."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from charclient import login as char_login
from realserver import RawClient, RealServer, login

pytestmark = pytest.mark.integration


def new_user(server: RealServer, name: str, pw: str = "correct horse") -> None:
    c = RawClient(server.port)
    c.expect("login: ")
    c.send_line("new")
    c.expect("Username: ")
    c.send_line(name)
    c.expect("Password: ")
    c.send_line(pw)
    c.expect("Password again: ")
    c.send_line(pw)
    c.expect(f"{name}@testhost:~$ ")
    c.send_line("exit")
    assert c.closed()


def rest(c: RawClient) -> str:
    assert c.closed()
    return c.buffer.decode("utf-8", "replace").replace("\r\n", "\n")


def test_kick_and_shutdown_notices_are_the_last_thing_sent(server: RealServer) -> None:
    new_user(server, "bob")
    admin = login(server.port, "admin", server.admin_password())
    bob = login(server.port, "bob", "correct horse")
    screen_bob = char_login(server.port, "bob", "correct horse")
    admin.send_line("kick bob enough")
    admin.expect("admin@testhost:~$ ")
    assert rest(bob).endswith("You have been logged out by admin: enough\n")
    screen_bob.wait(lambda: not screen_bob.pump(0.2) and screen_bob.closed, what="close")
    last = [line for line in screen_bob.lines() if line][-1]
    assert last == "You have been logged out by admin: enough"

    bob = login(server.port, "bob", "correct horse")
    server.stop()
    assert rest(bob).rstrip("\n").endswith("The system is going down NOW!")


def vmrss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_paste_of_big_output_to_a_client_that_never_reads(server: RealServer) -> None:
    """40 pasted cats into a socket that never reads: memory stays bounded, then an abort."""
    new_user(server, "bob")
    big = server.data / "home" / "bob" / "big"
    big.write_bytes((b"x" * 99 + b"\n") * 9000)  # 900 KB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    c = RawClient.__new__(RawClient)
    c.sock, c.buffer, c.raw_seen = sock, b"", b""
    c.expect("login: ")
    c.send_line("bob")
    c.expect("Password: ")
    c.send_line("correct horse")
    c.expect("bob@testhost:~$ ")
    assert server.proc is not None
    pid = server.proc.pid
    before = vmrss(pid)
    seen = len(server.log_text())
    c.send_bytes(b"cat big\r\n" * 40)  # and never read again
    peak = before
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        peak = max(peak, vmrss(pid))
        if "bob logged out" in server.log_text()[seen:]:
            break
        time.sleep(0.2)
    waited = 25 - (deadline - time.monotonic())
    assert "bob logged out" in server.log_text()[seen:]  # aborted after the stall timeout
    assert waited > 9
    assert peak - before < 12 * 1024 * 1024, (before, peak)  # 40 x 900 KB would be 36 MB
    sock.close()
