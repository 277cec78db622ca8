"""A hostile SSH client (Twisted conch) in its own process: a pty, a long line, then a flood of
``window-change`` requests, all written at once as a script would.

Run as ``python sshflood.py PORT USER PASSWORD COUNT [COLS ROWS TERMLEN]``: it logs in with
the password, asks for a ``COLS`` x ``ROWS`` pty with a ``TERMLEN``-character ``TERM``,
starts a shell, types a 4,000-character line without Enter, sends ``COUNT`` window changes
(alternating sizes), waits until the server has been quiet for a second, and prints one
line: the bytes it got back after the flood started. Then it ends the line with ^C and
logs out. The OpenSSH client cannot do this: it sends one window change per resize of its
own terminal.
"""

from __future__ import annotations

import struct
import sys
import time
from typing import Any

from twisted.conch.ssh import channel, common, connection, transport, userauth
from twisted.internet import defer, protocol, reactor, task

LINE = "".join(chr(ord("a") + i % 26) for i in range(4000))


class Flood(channel.SSHChannel):
    name = b"session"

    def __init__(self, args: list[str], **kw: Any) -> None:
        super().__init__(**kw)
        self.count = int(args[0])
        self.cols, self.rows, self.termlen = (int(a) for a in args[1:4])
        self.got = b""
        self.after = 0
        self.flooding = False
        self.last = time.monotonic()

    def channelOpen(self, data: bytes) -> None:
        term = b"x" * self.termlen
        pty = common.NS(term) + struct.pack(">4L", self.cols, self.rows, 0, 0) + common.NS(b"")
        self.conn.sendRequest(self, b"pty-req", pty)
        self.conn.sendRequest(self, b"shell", b"")
        task.deferLater(reactor, 0, self.wait_for, b"$ ").addCallback(self.type_line)

    def dataReceived(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.flooding:
            self.after += len(data)
        else:
            self.got += data

    async def wait_for(self, want: bytes) -> None:
        deadline = time.monotonic() + 30
        while want not in self.got:
            if time.monotonic() > deadline:
                raise SystemExit(f"sshflood: no {want!r}: {self.got[-200:]!r}")
            await task.deferLater(reactor, 0.02, lambda: None)

    def type_line(self, _: object) -> defer.Deferred[None]:
        self.write(LINE.encode())
        return defer.ensureDeferred(self.flood())

    async def flood(self) -> None:
        await self.wait_for(LINE[-20:].encode())
        await task.deferLater(reactor, 0.3, lambda: None)
        self.flooding = True
        for i in range(self.count):
            size = struct.pack(">4L", 60 + i % 7, 20 + i % 3, 0, 0)
            self.conn.sendRequest(self, b"window-change", size)
        while time.monotonic() - self.last < 1.0:
            await task.deferLater(reactor, 0.1, lambda: None)
        print(self.after, flush=True)
        self.write(b"\x03exit\r")
        await task.deferLater(reactor, 0.5, lambda: None)
        self.loseConnection()

    def closed(self) -> None:
        self.conn.transport.loseConnection()


class Connection(connection.SSHConnection):
    def __init__(self, args: list[str]) -> None:
        super().__init__()
        self.args = args

    def serviceStarted(self) -> None:
        self.openChannel(Flood(self.args, conn=self))


class Auth(userauth.SSHUserAuthClient):
    def __init__(self, user: bytes, password: bytes, conn: Connection) -> None:
        super().__init__(user, conn)
        self.password = password

    def getPassword(self, prompt: bytes | None = None) -> defer.Deferred[bytes]:
        return defer.succeed(self.password)

    def getPublicKey(self) -> None:
        return None


class Client(transport.SSHClientTransport):
    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred[bool]:
        return defer.succeed(True)

    def connectionSecure(self) -> None:
        f: Any = self.factory
        self.requestService(Auth(f.user, f.password, Connection(f.args)))

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]


def main() -> None:
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    args = sys.argv[4:]
    if len(args) == 1:
        args += ["80", "24", "5"]
    factory = protocol.ClientFactory()
    factory.protocol = Client
    factory.user, factory.password, factory.args = user.encode(), password.encode(), args  # type: ignore[attr-defined]
    reactor.connectTCP("127.0.0.1", port, factory)  # type: ignore[attr-defined]
    reactor.callLater(120, reactor.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
