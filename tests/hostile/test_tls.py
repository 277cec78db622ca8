"""Clients that stop reading, over TLS telnet (an ``ssl:`` listener).

Under TLS the wire's transport is Twisted's TLS wrapper, not the TCP connection:
the wrapper must still pass the socket's backpressure on to the session's
output, and the socket under it must still get the fixed send buffer, or a
client that stops reading would swallow megabytes in Twisted's buffers and the
kernel's before anything was dropped or the client aborted. These attacks are
the plain-telnet ones of ``test_wire.py`` and ``test_own_output.py`` over TLS,
with the bystanders' round trips watched and the server's memory read.
"""

from __future__ import annotations

import fcntl
import socket
import ssl
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import PASSWORD, RealServer, sign_in
from test_socket_options import server_side
from test_ssh_integration import self_signed

from hostile.arena import Arena, Peer
from hostile.test_own_output import vmrss
from shellserver.ops.sockets import SEND_BUFFER

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
MAX_OUTPUT = 64 * 1024
#: What the server may grow by besides the session's cap: Twisted's transport buffer
#: (64 KiB), one piece of own output, the TLS objects, allocator slack.
CONSTANT = 8 * MiB


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    """The hostile arena (plain telnet for the bystanders) with a TLS telnet listener too."""
    work: Path = tmp_path_factory.mktemp("hostile-tls")
    key, cert = self_signed(work)  # cert.pem in the server's work dir, for the clients
    server = RealServer(
        work,
        "--telnet", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        "--max-output", str(MAX_OUTPUT),
        "--max-registrations", "0",
        "--cmd-rate", "0",
    ).start()  # fmt: skip
    try:
        yield Arena(server)
    finally:
        server.stop()


def tls_deaf(arena: Arena, name: str, rcvbuf: int = 4096) -> Peer:
    """``name`` logged in over TLS with a receive buffer of ``rcvbuf`` bytes (0: Linux's
    autotuning), about to stop reading."""
    deadline = time.monotonic() + 10
    while len(arena.server.listening("telnet")) < 2:
        assert time.monotonic() < deadline, "no TLS telnet listener"
        time.sleep(0.05)
    port = arena.server.listening("telnet")[1]
    raw = socket.socket()
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.bind((arena.source(), 0))
    raw.connect(("127.0.0.1", port))
    raw.settimeout(10)
    context = ssl.create_default_context(cafile=str(arena.server.workdir / "cert.pem"))
    c = Peer.__new__(Peer)
    c.sock = context.wrap_socket(raw, server_hostname="testhost")
    c.buffer, c.raw_seen = b"", b""
    return sign_in(c, name, PASSWORD)


def unsent(sock: socket.socket) -> int:
    """Bytes the kernel holds in ``sock``'s send queue (``SIOCOUTQ``)."""
    got = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    return int(struct.unpack("i", got)[0])


def _wait_logged_out(arena: Arena, name: str, seen: int, pid: int, peak: int) -> tuple[float, int]:
    """Seconds until ``name`` is logged out (the stall abort), and the peak RSS meanwhile."""
    start = time.monotonic()
    while f"{name} logged out" not in arena.server.log_text()[seen:]:
        assert time.monotonic() - start < 25, f"{name} was never aborted"
        peak = max(peak, vmrss(pid))
        time.sleep(0.2)
    return time.monotonic() - start, peak


def test_a_tls_client_that_stops_reading_during_a_write_flood(arena: Arena) -> None:
    """Five writers send 600 KB of ``write`` to a TLS client that stopped reading: past
    ``--max-output`` their messages are dropped and they are told, the kernel holds at most
    the fixed send buffer for the client, the client is aborted after the stall, and the
    server holds no more than the cap and a constant for it.

    Before (the socket options set through ``getHandle()``, the OpenSSL connection under
    TLS): the socket's send buffer autotuned to 3,939,840 bytes, the kernel took 300 KB for
    the client, and the client was never aborted."""
    arena.register("tlssink").close()
    sink = tls_deaf(arena, "tlssink")
    writers = [arena.register(f"tlswriter{i}") for i in range(5)]
    assert arena.server.proc is not None
    pid = arena.server.proc.pid
    before, seen = vmrss(pid), len(arena.server.log_text())
    text = "w" * 3000
    told = b""
    with arena.watch():
        for w in writers:
            w.send_bytes(b"".join(f"write tlssink {text}\r\n".encode() for _ in range(40)))
        deadline = time.monotonic() + 15
        while b"tlssink is not reading; message dropped" not in told:
            assert time.monotonic() < deadline, told[-300:]
            for w in writers:
                told += w.drain(0.1)
        theirs = server_side(pid, sink.sock)  # the server's own socket to the client
        try:
            assert theirs.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * SEND_BUFFER
            assert unsent(theirs) <= 2 * SEND_BUFFER
        finally:
            theirs.close()
    waited, peak = _wait_logged_out(arena, "tlssink", seen, pid, vmrss(pid))
    print(f"\nRSS {before / MiB:.1f} → peak {peak / MiB:.1f} MiB; aborted after {waited:.1f} s")
    assert peak - before < MAX_OUTPUT + CONSTANT, (before, peak)
    for c in [sink, *writers]:
        c.close()
    arena.bystanders_ok()


def test_a_paste_of_big_output_to_a_tls_client_that_never_reads(arena: Arena) -> None:
    """20 pasted ``cat big`` (900 KB each) into a TLS connection that never reads: the
    output waits for the client within the cap, and the client is aborted after the stall."""
    arena.register("tlsdeaf").close()
    (arena.server.data / "home" / "tlsdeaf" / "big").write_bytes((b"x" * 99 + b"\n") * 9000)
    deaf = tls_deaf(arena, "tlsdeaf")
    assert arena.server.proc is not None
    pid = arena.server.proc.pid
    before, seen = vmrss(pid), len(arena.server.log_text())
    with arena.watch():
        deaf.send_bytes(b"cat big\r\n" * 20)  # and never read again
        waited, peak = _wait_logged_out(arena, "tlsdeaf", seen, pid, before)
    print(f"\nRSS {before / MiB:.1f} → peak {peak / MiB:.1f} MiB; aborted after {waited:.1f} s")
    assert waited > 9  # the stall timeout, not a crash
    assert peak - before < MAX_OUTPUT + CONSTANT, (before, peak)  # 20 x 900 KB: 18 MB
    deaf.close()
    arena.bystanders_ok()
