"""The output path's socket: a fixed kernel send buffer, so backpressure starts early."""

from __future__ import annotations

import socket

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from shellserver.ops.sockets import SEND_BUFFER, cap_send_buffer
from shellserver.wires.output import Output


class SocketTransport(StringTransport):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


def test_the_send_buffer_is_fixed_not_left_to_grow() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    tcp = socket.socket()
    try:
        for sock in (a, tcp):
            Output(SocketTransport(sock), Clock(), 1024, lambda: None)
            # Linux books double what was asked for its own overhead; never the 4 MiB autotuning
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * SEND_BUFFER
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= SEND_BUFFER
    finally:
        for sock in (a, b, tcp):
            sock.close()


def test_transports_without_a_socket_are_left_alone() -> None:
    cap_send_buffer(StringTransport())  # no getHandle
    cap_send_buffer(object())
    closed = socket.socket()
    closed.close()
    cap_send_buffer(SocketTransport(closed))  # OSError: nothing to tune
