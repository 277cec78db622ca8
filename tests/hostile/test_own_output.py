"""Own output to a client that never reads: streamed, bounded, then aborted."""

from __future__ import annotations

import socket
import time

import pytest
from realserver import PASSWORD, sign_in

from hostile.arena import Arena, Peer

pytestmark = pytest.mark.integration


def vmrss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _deaf(arena: Arena, name: str) -> Peer:
    """A logged-in client with the smallest receive buffer, about to stop reading."""
    c = Peer.__new__(Peer)
    c.sock = socket.socket()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sock.bind((arena.source(), 0))
    c.sock.connect(("127.0.0.1", arena.port))
    c.sock.settimeout(10)
    c.buffer, c.raw_seen = b"", b""
    return sign_in(c, name, PASSWORD)


def test_a_paste_of_big_output_to_a_client_that_never_reads(arena: Arena) -> None:
    """40 pasted ``cat big`` (900 KB each) into a socket that never reads: memory stays
    bounded, bystanders are served throughout, and the client is aborted after the stall."""
    arena.register("deaf").close()
    (arena.server.data / "home" / "deaf" / "big").write_bytes((b"x" * 99 + b"\n") * 9000)
    c = _deaf(arena, "deaf")
    assert arena.server.proc is not None
    pid = arena.server.proc.pid
    before = vmrss(pid)
    seen = len(arena.server.log_text())
    c.send_bytes(b"cat big\r\n" * 40)  # and never read again
    peak, start = before, time.monotonic()
    while time.monotonic() - start < 25:
        peak = max(peak, vmrss(pid))
        if "deaf logged out" in arena.server.log_text()[seen:]:
            break
        arena.bystanders_ok()
        time.sleep(0.2)
    waited = time.monotonic() - start
    assert "deaf logged out" in arena.server.log_text()[seen:]  # aborted after the stall timeout
    assert waited > 9
    assert peak - before < 12 * 1024 * 1024, (before, peak)  # 40 x 900 KB would be 36 MB
    c.close()
    arena.bystanders_ok()
