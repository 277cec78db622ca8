"""The protocol pieces of the load generator's session kinds, kept apart so they can be tested.

- :class:`TelnetAnswers`: a telnet client's side of the negotiation, as netkit
  ``telnet`` answers shellserver's offers: ``DO ECHO`` and ``DO SGA`` (so the
  server's editor draws and echoes: character mode), ``WILL SGA``, ``WILL NAWS``
  with an 80×24 window, ``WILL TTYPE`` and the terminal type when asked; binary
  mode refused, as telnet(1) does unless told ``-8``.
- :func:`ws_handshake`, :func:`ws_text` and :class:`WsReader`: just enough of
  RFC 6455 for the browser page's protocol (docs/web-protocol.md): the upgrade
  request, masked text frames from the client, and the server's frames read
  back to their payloads (pings answered, close noticed).
- :class:`Markers`' own-echo rule lives in :class:`Scanner`: a session whose
  server echoes what it types (character mode, SSH with a pty, the browser) sees
  its own marker once as the echo of its command line; that sighting is skipped,
  so only the delivery counts.
"""

from __future__ import annotations

import base64
import os
import re
import struct

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
BINARY, ECHO, SGA, TTYPE, NAWS = 0, 1, 3, 24, 31
TTYPE_IS, TTYPE_SEND = 0, 1

#: What a wall or a write carries for the generator to find: ``~wN~`` or ``~mN~``.
MARK = re.compile(rb"~([wm])(\d+)~")


class TelnetAnswers:
    """The answers of netkit telnet in its default (character-mode-capable) setup.

    :meth:`feed` takes what the server sent, in any pieces, and returns the
    bytes to send back. Each option is answered once (an answer is only sent on
    a change of state, as RFC 1143 asks), so two peers never loop.
    """

    #: Options we let the server turn on at its end (it said WILL): DO.
    accept_his = frozenset({ECHO, SGA})
    #: Options we turn on at our end when asked (it said DO): WILL.
    accept_ours = frozenset({SGA, NAWS, TTYPE})

    def __init__(self, cols: int = 80, rows: int = 24, term: bytes = b"XTERM") -> None:
        self.cols, self.rows, self.term = cols, rows, term
        self.his: set[int] = set()
        self.ours: set[int] = set()
        self.answered: set[tuple[int, int]] = set()
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        """The replies to every complete command in ``data`` (an incomplete one waits)."""
        data = self._tail + data if self._tail else data
        self._tail = b""
        out = bytearray()
        i, n = 0, len(data)
        while True:
            i = data.find(b"\xff", i)
            if i < 0 or i + 1 >= n:
                if i >= 0:
                    self._tail = data[i:]
                break
            cmd = data[i + 1]
            if cmd in (WILL, WONT, DO, DONT):
                if i + 2 >= n:
                    self._tail = data[i:]
                    break
                out += self._answer(cmd, data[i + 2])
                i += 3
            elif cmd == SB:
                end = data.find(b"\xff\xf0", i + 2)
                if end < 0:
                    self._tail = data[i:]
                    break
                out += self._subnegotiation(data[i + 2 : end])
                i = end + 2
            else:  # IAC IAC (a 255 data byte) or a two-byte command: nothing to answer
                i += 2
        return bytes(out)

    def _answer(self, cmd: int, opt: int) -> bytes:
        if cmd in (WILL, WONT):
            on = cmd == WILL and opt in self.accept_his
            if (opt in self.his) == on and (cmd, opt) in self.answered:
                return b""
            self.answered.add((cmd, opt))
            (self.his.add if on else self.his.discard)(opt)
            reply = bytes((IAC, DO if on else DONT, opt))
        else:
            on = cmd == DO and opt in self.accept_ours
            if (opt in self.ours) == on and (cmd, opt) in self.answered:
                return b""
            self.answered.add((cmd, opt))
            (self.ours.add if on else self.ours.discard)(opt)
            reply = bytes((IAC, WILL if on else WONT, opt))
        if on and cmd == DO and opt == NAWS:
            size = struct.pack(">HH", self.cols, self.rows).replace(b"\xff", b"\xff\xff")
            reply += bytes((IAC, SB, NAWS)) + size + bytes((IAC, SE))
        return reply

    def _subnegotiation(self, body: bytes) -> bytes:
        if body[:2] == bytes((TTYPE, TTYPE_SEND)) and TTYPE in self.ours:
            return bytes((IAC, SB, TTYPE, TTYPE_IS)) + self.term + bytes((IAC, SE))
        return b""


def ws_handshake(host: str, port: int, path: str = "/ws") -> bytes:
    """The upgrade request of a client that is not a browser (no ``Origin``)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def ws_text(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked frame from the client (RFC 6455 requires the mask), a text frame by default."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack(">H", n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack(">Q", n)
    return head + mask + _unmask(payload, mask)


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class WsReader:
    """The server's frames back to terminal output.

    :meth:`feed` returns ``(text, replies)``: the payload bytes of the text and
    continuation frames complete so far, and the pongs to send for pings.
    :attr:`closed` turns true at a close frame. The server never masks.
    """

    def __init__(self) -> None:
        self._buf = b""
        self.closed = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Take whatever bytes arrived, whole frames or not: TCP cuts frames anywhere."""
        buf = self._buf + data if self._buf else data
        text, replies = bytearray(), bytearray()
        i, n = 0, len(buf)
        while i + 2 <= n:
            op, size = buf[i] & 0x0F, buf[i + 1] & 0x7F
            head = 2
            if size == 126:
                if i + 4 > n:
                    break
                size, head = struct.unpack_from(">H", buf, i + 2)[0], 4
            elif size == 127:
                if i + 10 > n:
                    break
                size, head = struct.unpack_from(">Q", buf, i + 2)[0], 10
            if i + head + size > n:
                break
            payload = buf[i + head : i + head + size]
            i += head + size
            if op in (0x0, 0x1):
                text += payload
            elif op == 0x9:
                replies += ws_text(payload, opcode=0xA)
            elif op == 0x8:
                self.closed = True
        self._buf = buf[i:]
        return bytes(text), bytes(replies)


class Scanner:
    """Finds the markers in a session's output, skipping its own typed ones when the server
    echoes: :meth:`typed` notes a marker sent, :meth:`scan` returns those that arrived."""

    def __init__(self, echoes: bool) -> None:
        self.echoes = echoes
        self.own: set[bytes] = set()
        self.tail = b""

    def typed(self, line: str) -> None:
        """``line`` was sent; its marker's first sighting is its echo, when there is one."""
        if self.echoes:
            m = MARK.search(line.encode())
            if m:
                self.own.add(m.group(0))

    def scan(self, data: bytes) -> list[tuple[bytes, int]]:
        """The markers delivered in ``data`` (a marker cut between two reads is found once)."""
        s = self.tail + data if self.tail else data
        found = []
        end = 0
        own = self.own
        for m in MARK.finditer(s):
            end = m.end()
            if own and m.group(0) in own:
                own.discard(m.group(0))
                continue
            found.append((m.group(1), int(m.group(2))))
        self.tail = s[end:][-24:]
        return found
