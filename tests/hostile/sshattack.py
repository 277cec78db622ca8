"""Hostile SSH clients made with conch, each run in its own process (its own reactor).

``python sshattack.py MODE PORT SOURCE ...``:

- ``flood USER PASSWORD COMMAND COUNT COLS ROWS TERM``: logs in with a password, opens a
  session channel advertising a 4 GiB window, asks for a pty and a shell, types
  ``COMMAND`` ``COUNT`` times, then stops reading its socket for good. Prints
  ``flooding``; on a line on stdin it drops the connection (RST), prints ``closed`` and exits.
- ``queries USER BLOBFILE CONNECTIONS COUNT``: ``CONNECTIONS`` connections each send
  ``COUNT`` public-key queries (no signature) for the key blob in ``BLOBFILE``; prints
  ``answered OK FAILED DISCONNECTED`` summed over the connections.
- ``resize USER PASSWORD COLS ROWS TERMLEN LINE COUNT WINDOW``: a pty of COLS×ROWS with a
  TERM of TERMLEN characters, a LINE-character line typed, then COUNT ``window-change``
  requests. With WINDOW 0 it reads everything and prints ``done SECONDS BYTES`` once an
  ``echo`` typed after the resizes is answered; with a WINDOW in bytes it never widens that
  window (never takes channel data), prints ``sent`` and drops the connection on a line on
  stdin.
- ``malformed USER COUNT``: connections one after another, each sending public-key
  requests with malformed key blobs until the server drops it, ``COUNT`` requests in all;
  prints ``sent N connections C dropped D``.
"""

from __future__ import annotations

import os
import struct
import sys
from typing import Any

from twisted.conch.ssh import channel, common, connection, service, transport, userauth
from twisted.internet import defer, protocol, reactor, stdio
from twisted.protocols.basic import LineReceiver

MSG_USERAUTH_REQUEST = 50
MSG_USERAUTH_FAILURE = 51
MSG_USERAUTH_PK_OK = 60

R: Any = reactor


class Client(transport.SSHClientTransport):
    def __init__(self, on_secure: Any) -> None:
        self.on_secure = on_secure

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred[bool]:
        return defer.succeed(True)

    def connectionSecure(self) -> None:
        self.on_secure(self)

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        done = getattr(self.factory, "done", None)
        if done is not None and not done.called:
            done.callback(self)


def connect(port: int, source: str, on_secure: Any) -> defer.Deferred[Client]:
    f = protocol.ClientFactory()
    f.protocol = lambda: Client(on_secure)  # type: ignore[assignment,misc]
    f.done = defer.Deferred()  # type: ignore[attr-defined]
    R.connectTCP("127.0.0.1", port, f, bindAddress=(source, 0))
    return f.done  # type: ignore[attr-defined,no-any-return]


# -- flood: a huge window, then never read ---------------------------------------------


class Flood(channel.SSHChannel):
    name = b"session"

    def __init__(self, command: bytes, count: int, size: tuple[int, int], term: bytes, **kw: Any):
        super().__init__(localWindow=2**32 - 1, localMaxPacket=32768, **kw)
        self.command, self.count, self.size, self.term = command, count, size, term

    def channelOpen(self, specificData: bytes) -> None:
        cols, rows = self.size
        pty = common.NS(self.term) + struct.pack(">4L", cols, rows, 0, 0) + common.NS(b"")
        self.conn.sendRequest(self, b"pty-req", pty)
        self.conn.sendRequest(self, b"shell", b"")
        self.write(self.command + b"\r")
        R.callLater(0.5, self.flood)

    def flood(self) -> None:
        for _ in range(self.count - 1):
            self.write(self.command + b"\r")
        self.conn.transport.transport.pauseProducing()  # never read again
        print("flooding", flush=True)

    def dataReceived(self, data: bytes) -> None:
        pass


class Auth(userauth.SSHUserAuthClient):
    def __init__(self, user: bytes, password: bytes, instance: Any) -> None:
        super().__init__(user, instance)
        self.password = password
        self.preferredOrder = [b"password"]

    def getPassword(self, prompt: Any = None) -> defer.Deferred[bytes]:
        return defer.succeed(self.password)


class Quit(LineReceiver):
    delimiter = b"\n"

    def __init__(self, action: Any) -> None:
        self.action = action

    def lineReceived(self, line: bytes) -> None:
        self.action()


def flood(port: int, source: str, user: str, password: str, command: str, count: str,
          cols: str, rows: str, term: str) -> None:  # fmt: skip
    class Conn(connection.SSHConnection):
        def serviceStarted(self) -> None:
            super().serviceStarted()
            size = (int(cols), int(rows))
            self.openChannel(Flood(command.encode(), int(count), size, term.encode(), conn=self))

    clients: list[Client] = []

    def secure(t: Client) -> None:
        clients.append(t)
        t.requestService(Auth(user.encode(), password.encode(), Conn()))

    def close() -> None:
        for t in clients:
            t.transport.abortConnection()
        print("closed", flush=True)
        R.callLater(0.1, R.stop)

    stdio.StandardIO(Quit(close))
    connect(port, source, secure)
    R.run()


# -- resize: a huge pty, a long line, then window-change requests --------------------------


class Resizer(channel.SSHChannel):
    """A pty of ``size`` with a long TERM, a long line typed, then ``count`` window-change
    requests; reads everything. Prints ``done SECONDS BYTES`` once the server has answered
    an echo typed after the resizes (the time from the first resize)."""

    name = b"session"

    def __init__(
        self, size: tuple[int, int], term: bytes, line: int, count: int, window: int, **kw: Any
    ) -> None:
        super().__init__(localWindow=window or 2**20, localMaxPacket=32768, **kw)
        self.size, self.term, self.line, self.count = size, term, line, count
        self.stalled = bool(window)
        self.got = 0
        self.tail = b""
        self.start = 0.0

    def channelOpen(self, specificData: bytes) -> None:
        cols, rows = self.size
        pty = common.NS(self.term) + struct.pack(">4L", cols, rows, 0, 0) + common.NS(b"")
        self.conn.sendRequest(self, b"pty-req", pty)
        self.conn.sendRequest(self, b"shell", b"")
        R.callLater(0.5, self.type_line)

    def type_line(self) -> None:
        self.write(b"x" * self.line)
        R.callLater(0.3, self.resize)

    def resize(self) -> None:
        import time

        self.start = time.monotonic()
        for i in range(self.count):
            cols, rows = (65535, 65535) if i % 2 else (80 + i % 50, 24)
            self.conn.sendRequest(self, b"window-change", struct.pack(">4L", cols, rows, 0, 0))
        if self.stalled:
            print("sent", flush=True)
            return
        self.write(b"\x15echo resized-done\r")  # ^U: the long line goes, then a command

    def dataReceived(self, data: bytes) -> None:
        import time

        self.got += len(data)
        self.tail = (self.tail + data)[-200:]
        if self.start and b"resized-done\r\n" in self.tail:
            print("done", f"{time.monotonic() - self.start:.3f}", self.got, flush=True)
            self.start = 0.0
            R.callLater(0, R.stop)


def resize(port: int, source: str, user: str, password: str, cols: str, rows: str,
           term_length: str, line: str, count: str, window: str) -> None:  # fmt: skip
    class Conn(connection.SSHConnection):
        def serviceStarted(self) -> None:
            super().serviceStarted()
            term = b"x" * int(term_length)
            size = (int(cols), int(rows))
            self.openChannel(Resizer(size, term, int(line), int(count), int(window), conn=self))

        def adjustWindow(self, channel: Any, bytesToAdd: int) -> None:
            if not int(window):  # a stalled client never widens its window
                super().adjustWindow(channel, bytesToAdd)

    clients: list[Client] = []

    def secure(t: Client) -> None:
        clients.append(t)
        t.requestService(Auth(user.encode(), password.encode(), Conn()))

    def close() -> None:
        for t in clients:
            t.transport.abortConnection()
        print("closed", flush=True)
        R.callLater(0.1, R.stop)

    stdio.StandardIO(Quit(close))
    connect(port, source, secure)
    R.callLater(120, R.stop)
    R.run()


# -- raw userauth requests -------------------------------------------------------------------


class RawAuth(service.SSHService):
    """The ssh-userauth service as a script: sends requests, counts the answers."""

    name = b"ssh-userauth"

    def __init__(self, requests: list[bytes], tally: dict[str, int]) -> None:
        self.requests = requests
        self.tally = tally
        self.answers = 0

    def serviceStarted(self) -> None:
        for payload in self.requests:
            self.transport.sendPacket(MSG_USERAUTH_REQUEST, payload)
            self.tally["sent"] += 1

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        if messageNum == MSG_USERAUTH_PK_OK:
            self.tally["ok"] += 1
        elif messageNum == MSG_USERAUTH_FAILURE:
            self.tally["failed"] += 1
        else:
            return
        self.answers += 1
        if self.answers == len(self.requests):  # all answered: this client is done
            self.tally["closed_by_us"] = self.tally.get("closed_by_us", 0) + 1
            self.transport.loseConnection()


def publickey(user: bytes, blob: bytes, algorithm: bytes = b"ssh-ed25519") -> bytes:
    return (
        common.NS(user) + common.NS(b"ssh-connection") + common.NS(b"publickey")
        + b"\x00" + common.NS(algorithm) + common.NS(blob)
    )  # fmt: skip


def queries(port: int, source: str, user: str, blobfile: str, conns: str, count: str) -> None:
    blob = open(blobfile, "rb").read()  # noqa: SIM115
    tally = {"sent": 0, "ok": 0, "failed": 0, "dropped": 0}
    requests = [publickey(user.encode(), blob)] * int(count)

    def secure(t: Client) -> None:
        t.requestService(RawAuth(requests, tally))

    def lost(_: object) -> None:
        tally["dropped"] += 1

    ds = []
    for _ in range(int(conns)):
        d = connect(port, source, secure)
        d.addCallback(lost)
        ds.append(d)
    done = defer.DeferredList(ds)
    done.addCallback(lambda _: R.stop())
    R.callLater(20, R.stop)  # a server that keeps answering keeps the connections open
    R.run()
    dropped = tally["dropped"] - tally.get("closed_by_us", 0)  # closed by the server
    print("answered", tally["ok"], tally["failed"], dropped, flush=True)


def malformed(port: int, source: str, user: str, count: str) -> None:
    left = int(count)
    tally = {"sent": 0, "ok": 0, "failed": 0, "connections": 0, "dropped": 0}

    def bad_blob() -> bytes:
        return common.NS(b"ssh-ed25519") + common.NS(os.urandom(7))

    def secure(t: Client) -> None:
        nonlocal left
        batch = min(left, 50)
        left -= batch
        requests = [publickey(user.encode(), bad_blob()) for _ in range(batch)]
        t.requestService(RawAuth(requests, tally))

    def again(_: object) -> None:
        tally["dropped"] += 1
        if left > 0:
            tally["connections"] += 1
            connect(port, source, secure).addCallback(again)
        else:
            R.stop()

    tally["connections"] += 1
    connect(port, source, secure).addCallback(again)
    R.callLater(60, R.stop)
    R.run()
    print("sent", tally["sent"], "connections", tally["connections"], "dropped",
          tally["dropped"], flush=True)  # fmt: skip


if __name__ == "__main__":
    mode, port, source, *rest = sys.argv[1:]
    modes = {"flood": flood, "queries": queries, "malformed": malformed, "resize": resize}
    modes[mode](int(port), source, *rest)
