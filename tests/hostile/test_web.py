"""Attacks on the browser terminal's WebSocket (``--web``), with the bystanders checked after each.

The attackers speak raw RFC 6455 over a socket (``RawWeb``): what a hostile
script, not a browser, can send.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import PASSWORD, RealServer

from hostile.arena import Arena, assert_clean

_CSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def masked(payload: bytes, opcode: int = 1, fin: bool = True, mask: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 0x10000:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    return head + (b"\0\0\0\0" if mask else b"") + payload


class RawWeb:
    """A WebSocket client on a bare socket, from a chosen loopback address."""

    def __init__(self, port: int, source: str, rcvbuf: int = 0) -> None:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.settimeout(10)
        self.sock = sock
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head, _, self.raw = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.text = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def keys(self, text: str) -> None:
        self.send(masked(("0" + text).encode()))

    def _frames(self) -> None:
        raw = self.raw
        while len(raw) >= 2:
            n, at = raw[1] & 0x7F, 2
            if n == 126:
                if len(raw) < 4:
                    break
                n, at = struct.unpack("!H", raw[2:4])[0], 4
            elif n == 127:
                if len(raw) < 10:
                    break
                n, at = struct.unpack("!Q", raw[2:10])[0], 10
            if len(raw) < at + n:
                break
            if raw[0] & 0x0F == 1:
                self.text += raw[at : at + n]
            raw = raw[at + n :]
        self.raw = raw

    def expect(self, want: str, timeout: float = 10.0) -> str:
        wanted = want.replace("\n", "\r\n").encode()
        deadline = time.monotonic() + timeout
        self._frames()
        while wanted not in _CSI.sub(b"", self.text):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            assert chunk, f"closed before {want!r}: {self.text[-300:]!r}"
            self.raw += chunk
            self._frames()
        seen = _CSI.sub(b"", self.text)
        self.text = b""
        return seen.decode("utf-8", "replace")

    def closed(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the socket (whatever it sent before)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def web_arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    work: Path = tmp_path_factory.mktemp("hostile-web")
    server = RealServer(
        work, "--web", "tcp:0:interface=127.0.0.1", "--max-registrations", "0"
    ).start()
    try:
        yield Arena(server)
    finally:
        server.stop()


def web(arena: Arena, rcvbuf: int = 0) -> RawWeb:
    return RawWeb(arena.server.web_port, arena.source(), rcvbuf)


def web_sign_up(c: RawWeb, name: str) -> RawWeb:
    c.expect("login: ")
    for line, prompt in [
        ("new", "Username: "),
        (name, "Password: "),
        (PASSWORD, "Password again: "),
        (PASSWORD, f"{name}@testhost:~$ "),
    ]:
        c.keys(line + "\r")
        c.expect(prompt)
    return c


def test_broken_and_oversize_frames_close_only_their_socket(web_arena: Arena) -> None:
    attacks = [
        masked(b"0hello", mask=False),  # a client frame must be masked
        bytes((0x83, 0x80)) + b"\0\0\0\0",  # reserved opcode
        masked(b"0\xff\xfe"),  # not UTF-8
        masked(b"\x00" * 10, opcode=2),  # binary
        masked(b"", opcode=8, fin=False),  # a fragmented control frame
        struct.pack("!BBQ", 0x81, 0xFF, 1 << 40) + b"\0\0\0\0" + b"x" * 1000,  # 1 TiB claimed
        b"".join(masked(b"y" * 30_000, opcode=1 if i == 0 else 0, fin=False) for i in range(3)),
    ]
    for attack in attacks:
        c = web(web_arena)
        c.expect("login: ")
        c.send(attack)
        assert c.closed(), attack[:16]
        c.close()
    web_arena.bystanders_ok()
    assert "Traceback" not in web_arena.server.log_text()


def test_a_browser_that_stops_reading_never_stalls_the_others(web_arena: Arena) -> None:
    sink = web_sign_up(web(web_arena, rcvbuf=4096), "websink")
    writers = [web_arena.register(f"webflood{i}") for i in range(8)]
    text = "w" * 3000
    for w in writers:
        w.send_bytes(b"".join(f"write websink {text}\r\n".encode() for _ in range(35)))
    web_arena.bystanders_ok()  # during the flood
    out = b""
    deadline = time.monotonic() + 15
    while b"websink is not reading; message dropped" not in out and time.monotonic() < deadline:
        for w in writers:
            out += w.drain(0.2)
    assert b"websink is not reading; message dropped" in out
    for w in writers:
        w.close()
    sink.close()
    web_arena.bystanders_ok()


def test_hostile_text_from_a_browser_reaches_others_sanitised(web_arena: Arena) -> None:
    c = web_sign_up(web(web_arena), "webevil")
    c.keys("write bob '\x16\x1b]0;pwned\x07 \u202e \x9b31m'\r")  # quoted: the OSC holds a ;
    web_arena.bob.expect("Message from webevil")
    assert_clean(web_arena.bob.drain(0.3))
    c.close()
    web_arena.bystanders_ok()


def test_idle_http_connections_from_one_address_are_capped(web_arena: Arena) -> None:
    source = web_arena.source()
    port = web_arena.server.web_port
    idle = []
    for _ in range(20):  # --max-unauth-per-addr
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        idle.append(s)
    extra = socket.socket()
    extra.bind((source, 0))
    extra.connect(("127.0.0.1", port))
    extra.settimeout(10)
    assert extra.recv(4096).startswith(b"HTTP/1.1 503")
    extra.close()
    web_arena.bystanders_ok()
    c = web(web_arena)  # another address is served
    c.expect("login: ")
    c.close()
    for s in idle:
        s.close()
