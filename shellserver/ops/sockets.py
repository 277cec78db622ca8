"""The socket options every interactive connection gets, whatever wraps its socket.

The kernel's send buffer is fixed at :data:`SEND_BUFFER`: left alone, Linux grows it up to
4 MiB (``tcp_wmem``), so a client that stops reading could swallow megabytes before the
transport ever pauses us. ``TCP_NODELAY`` keeps a line and its prompt from waiting on the
client's delayed ACK. They live here, below the wires, because every listener needs them:
the telnet, SSH and web wires, and the HTTP connection guard of the page and the metrics.
"""

from __future__ import annotations

import socket

#: Bytes the kernel may hold for one client (Linux books twice this for its own overhead).
SEND_BUFFER = 64 * 1024


def socket_of(transport: object) -> socket.socket | None:
    """The kernel socket under ``transport``, through any wrapping, or None.

    A plain TCP transport's ``getHandle()`` is its socket, but under ``ssl:``
    endpoints Twisted points ``getHandle`` at the OpenSSL connection, and a
    wrapping protocol (``TLSMemoryBIOProtocol``, ``WrappingFactory``'s
    ``ProtocolWrapper``) stands between a protocol and its socket. The socket
    itself is still the TCP connection's ``socket`` attribute, one or more
    ``.transport`` steps down: walk them (a few at most).
    """
    for _ in range(5):
        if transport is None:
            return None
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        handle = getattr(transport, "getHandle", None)
        try:
            sock = handle() if handle is not None else None
        except Exception:  # a test transport, a connection already gone
            sock = None
        if isinstance(sock, socket.socket):
            return sock
        transport = getattr(transport, "transport", None)
    return None


def cap_send_buffer(transport: object, size: int = SEND_BUFFER) -> None:
    """Fix the send buffer of the socket under ``transport`` (TCP, TLS, SSH); others are left."""
    sock = socket_of(transport)
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError:
        pass  # not a socket we can tune (closed already)


def interactive(transport: object) -> None:
    """``TCP_NODELAY`` on the socket under ``transport``, as sshd sets it for an interactive
    session: output goes out when written, in as many sends as the terminal makes (a line,
    then its prompt). With Nagle's algorithm on, the second small send waits for the
    client's ACK of the first, and a client delaying its ACKs makes that up to 40 ms: the
    login storm's longest stall doubled when output was written through (docs/performance.md,
    fifth round)."""
    sock = socket_of(transport)
    try:
        if sock is not None and sock.type == socket.SOCK_STREAM and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # not a TCP socket (a Unix socket), or closed already


def tune(transport: object) -> None:
    """Both socket options of an interactive connection: :func:`cap_send_buffer`, then
    :func:`interactive`. A wire whose output does not go through :class:`Output` (SSH's
    transport under its channels) calls this itself."""
    cap_send_buffer(transport)
    interactive(transport)
