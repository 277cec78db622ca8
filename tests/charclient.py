"""A character-mode telnet client for tests: answers negotiation, renders on a pyte screen.

It accepts what the server offers (ECHO, SGA, BINARY), reports its window size
(NAWS) and terminal type (TTYPE), and feeds everything else into a
``pyte.Screen``, so a test asserts what a person would see.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pyte

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SGA, BINARY, TTYPE, NAWS = 1, 3, 0, 24, 31


class CharClient:
    def __init__(self, port: int, cols: int = 80, rows: int = 24, term: str = "XTERM") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.cols, self.rows, self.term = cols, rows, term
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.closed = False
        self._state = 0
        self._cmd = 0
        self._sb = bytearray()
        self.raw = bytearray()

    # -- sending -----------------------------------------------------------------

    def type(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.sock.sendall(data.replace(b"\xff", b"\xff\xff"))

    def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.screen.resize(rows, cols)
        self._naws()

    def _naws(self) -> None:
        size = bytes([self.cols >> 8, self.cols & 255, self.rows >> 8, self.rows & 255])
        self.sock.sendall(bytes([IAC, SB, NAWS]) + size + bytes([IAC, SE]))

    # -- receiving -----------------------------------------------------------------

    def pump(self, timeout: float = 0.2) -> bool:
        """Read what is there (waiting up to ``timeout``); False when nothing came."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.raw += data
        self._feed(data)
        return True

    def wait(self, check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.closed or time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{self.text()}")
            self.pump(0.1)

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        """Until ``text`` is on the screen (trailing blanks are not kept on screen lines)."""
        want = text.rstrip(" ")
        self.wait(lambda: want in self.text(), timeout, repr(text))

    def settle(self, quiet: float = 0.3) -> None:
        """Read until nothing arrives for ``quiet`` seconds."""
        while self.pump(quiet):
            pass

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines()).rstrip("\n")

    def cursor(self) -> tuple[int, int]:
        return self.screen.cursor.y, self.screen.cursor.x

    def line_at_cursor(self) -> str:
        return self.lines()[self.screen.cursor.y]

    def close(self) -> None:
        self.sock.close()

    def _feed(self, data: bytes) -> None:
        out = bytearray()
        for b in data:
            st = self._state
            if st == 0:
                if b == IAC:
                    self._state = 1
                else:
                    out.append(b)
            elif st == 1:
                if b == IAC:
                    out.append(b)
                    self._state = 0
                elif b in (WILL, WONT, DO, DONT):
                    self._cmd, self._state = b, 2
                elif b == SB:
                    self._sb.clear()
                    self._state = 3
                else:
                    self._state = 0
            elif st == 2:
                self._state = 0
                self._negotiate(self._cmd, b)
            elif st == 3:
                if b == IAC:
                    self._state = 4
                else:
                    self._sb.append(b)
            elif st == 4:
                self._state = 0 if b == SE else 3
                if b == SE and bytes(self._sb[:2]) == bytes([TTYPE, 1]):
                    reply = bytes([IAC, SB, TTYPE, 0]) + self.term.encode() + bytes([IAC, SE])
                    self.sock.sendall(reply)
        if out:
            self.stream.feed(bytes(out))

    def _negotiate(self, cmd: int, opt: int) -> None:
        if cmd == WILL and opt in (ECHO, SGA, BINARY):
            self.sock.sendall(bytes([IAC, DO, opt]))
        elif cmd == DO and opt in (SGA, BINARY, TTYPE):
            self.sock.sendall(bytes([IAC, WILL, opt]))
        elif cmd == DO and opt == NAWS:
            self.sock.sendall(bytes([IAC, WILL, NAWS]))
            self._naws()
        elif cmd == DO:
            self.sock.sendall(bytes([IAC, WONT, opt]))


def login(port: int, name: str, password: str, cols: int = 80, rows: int = 24) -> CharClient:
    c = CharClient(port, cols, rows)
    c.wait_for("login: ")
    c.type(name + "\r")
    c.wait_for("Password: ")
    c.type(password + "\r")
    c.wait_for(f"{name}@testhost:~$")
    c.settle(0.05)
    return c
