"""The send-buffer cap and TCP_NODELAY reach the real socket on every wire.

A real client connects to the real server (``twistd -n shellserver``) on each wire: plain
and TLS telnet, the browser's WebSocket over plain TCP and TLS, and SSH, and the three plain
ones behind the PROXY header (``haproxy:`` listeners, whose wrapper stands between the wire and
its socket). The test then
takes a duplicate of the server's own accepted socket (``pidfd_getfd``, Linux 5.6+: the
descriptor whose peer is our client) and reads the options back with ``getsockopt``, so
what is checked is the kernel's view, not what the code believes it set.

Under ``ssl:`` endpoints Twisted's ``getHandle()`` is the OpenSSL connection, not the
socket: before the fix a TLS connection kept Linux's autotuned send buffer (up to 4 MiB)
and Nagle's algorithm, and SSH never set TCP_NODELAY.
"""

from __future__ import annotations

import ctypes
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from realserver import RawClient, RealServer
from test_ssh_integration import self_signed

from shellserver.ops.sockets import SEND_BUFFER

pytestmark = pytest.mark.integration

_libc = ctypes.CDLL(None, use_errno=True)
SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438


def server_side(pid: int, client: socket.socket) -> socket.socket:
    """A duplicate of the server process's socket connected to ``client``."""
    pidfd = _libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        pytest.skip(f"pidfd_open: {os.strerror(ctypes.get_errno())}")
    try:
        want = client.getsockname()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for name in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                        continue
                except FileNotFoundError:
                    continue
                fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
                if fd < 0:
                    pytest.skip(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
                sock = socket.socket(fileno=fd)
                try:
                    if sock.type == socket.SOCK_STREAM and sock.getpeername() == want:
                        return sock
                except OSError:
                    pass
                sock.close()
            time.sleep(0.05)
        raise AssertionError("the server has no socket connected to the client")
    finally:
        os.close(pidfd)


def assert_tuned(sock: socket.socket) -> None:
    # Linux books twice what was asked for its own overhead; never the 4 MiB autotuning
    assert SEND_BUFFER <= sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * SEND_BUFFER
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def read_until(sock: socket.socket | ssl.SSLSocket, want: bytes, timeout: float = 10) -> bytes:
    got = b""
    sock.settimeout(timeout)
    while want not in got:
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    return got


def tls(port: int, cert: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(cert))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="testhost")


def websocket(sock: socket.socket | ssl.SSLSocket, port: int) -> None:
    """The WebSocket handshake on ``/ws``, then the first frame (the login prompt)."""
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" % port
    )
    assert read_until(sock, b"login: ").startswith(b"HTTP/1.1 101")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, Path]]:
    work = tmp_path_factory.mktemp("sockopts")
    key, cert = self_signed(work)
    tls_args = f"privateKey={key}:certKey={cert}"
    srv = RealServer(
        work,
        "--telnet", f"ssl:0:interface=127.0.0.1:{tls_args}",
        "--web", "tcp:0:interface=127.0.0.1",
        "--web", f"ssl:0:interface=127.0.0.1:{tls_args}",
        "--ssh", "tcp:0:interface=127.0.0.1",
        "--telnet", "haproxy:tcp:0:interface=127.0.0.1",
        "--web", "haproxy:tcp:0:interface=127.0.0.1",
        "--ssh", "haproxy:tcp:0:interface=127.0.0.1",
    ).start()  # fmt: skip
    try:
        yield srv, cert
    finally:
        srv.stop()


def _telnet(srv: RealServer, cert: Path) -> socket.socket | ssl.SSLSocket:
    c = RawClient(srv.listening("telnet")[0])
    c.expect("login: ")
    return c.sock


def _telnet_tls(srv: RealServer, cert: Path) -> socket.socket | ssl.SSLSocket:
    sock = tls(srv.listening("telnet")[1], cert)
    read_until(sock, b"login: ")
    return sock


def _web(srv: RealServer, cert: Path) -> socket.socket | ssl.SSLSocket:
    port = srv.listening("web")[0]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    websocket(sock, port)
    return sock


def _web_tls(srv: RealServer, cert: Path) -> socket.socket | ssl.SSLSocket:
    port = srv.listening("web")[1]
    sock = tls(port, cert)
    websocket(sock, port)
    return sock


def _ssh(srv: RealServer, cert: Path) -> socket.socket | ssl.SSLSocket:
    deadline = time.monotonic() + 10
    while not srv.listening("ssh"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sock = socket.create_connection(("127.0.0.1", srv.listening("ssh")[0]), timeout=10)
    read_until(sock, b"SSH-2.0-shellserver")
    return sock


def proxied(port: int) -> socket.socket:
    """A connection to a ``haproxy:`` listener, opened with the PROXY v2 header a balancer
    sends (naming another client)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = socket.inet_aton("192.0.2.9") + socket.inet_aton("127.0.0.1")
    body += port.to_bytes(2, "big") + port.to_bytes(2, "big")
    sock.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + len(body).to_bytes(2, "big") + body)
    return sock


def _telnet_proxied(srv: RealServer, cert: Path) -> socket.socket | ssl.SSLSocket:
    sock = proxied(srv.listening("telnet")[2])
    read_until(sock, b"login: ")
    return sock


def _web_proxied(srv: RealServer, cert: Path) -> socket.socket | ssl.SSLSocket:
    port = srv.listening("web")[2]
    sock = proxied(port)
    websocket(sock, port)
    return sock


def _ssh_proxied(srv: RealServer, cert: Path) -> socket.socket | ssl.SSLSocket:
    deadline = time.monotonic() + 10
    while len(srv.listening("ssh")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sock = proxied(srv.listening("ssh")[1])
    read_until(sock, b"SSH-2.0-shellserver")
    return sock


WIRES: dict[str, Callable[[RealServer, Path], socket.socket | ssl.SSLSocket]] = {
    "telnet": _telnet,
    "telnet-tls": _telnet_tls,
    "web": _web,
    "web-tls": _web_tls,
    "ssh": _ssh,
    "telnet-proxied": _telnet_proxied,
    "web-proxied": _web_proxied,
    "ssh-proxied": _ssh_proxied,
}


@pytest.mark.parametrize("wire", list(WIRES))
def test_send_buffer_and_nodelay_reach_the_real_socket(
    servers: tuple[RealServer, Path], wire: str
) -> None:
    srv, cert = servers
    assert srv.proc is not None
    client = WIRES[wire](srv, cert)
    try:
        theirs = server_side(srv.proc.pid, client)
        try:
            assert_tuned(theirs)
        finally:
            theirs.close()
    finally:
        client.close()
