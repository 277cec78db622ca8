"""A client for the browser terminal's ``/ws``, on Twisted's own ``WebSocketClientEndpoint``.

It speaks the page's protocol (``page.js``): ``"0" + keys`` and ``"1" + "COLS ROWS"``
out, terminal output in. Used under pytest-twisted (the reactor runs in the test).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import defer, reactor
from twisted.python.failure import Failure
from twisted.web.websocket import WebSocketClientEndpoint

_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class WebClient:
    """Collects what the server sends; ``expect`` waits for a text to show up."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.text = ""
        self.seen = ""
        #: Fires (with None) when the connection is gone; ``reason`` says how.
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None
        self._waiting: list[tuple[str, defer.Deferred[str]]] = []

    # WebSocketProtocol
    def negotiationStarted(self, transport: Any) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        plain = _CSI.sub("", message).replace("\r\n", "\n")
        self.text += plain
        self.seen += plain
        self._check()

    def bytesMessageReceived(self, data: bytes) -> None:
        raise AssertionError("the server sent a binary frame")

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        for want, d in self._waiting:
            d.errback(AssertionError(f"closed before {want!r}; got {self.text!r}"))
        self._waiting = []
        self.reason = reason
        self.lost.callback(None)

    # Test side
    def buildProtocol(self, url: str) -> WebClient:
        return self

    def keys(self, text: str) -> None:
        self.transport.sendTextMessage("0" + text)

    def line(self, text: str) -> None:
        self.keys(text + "\r")

    def resize(self, cols: int, rows: int) -> None:
        self.transport.sendTextMessage(f"1{cols} {rows}")

    def expect(self, want: str, timeout: float = 10.0) -> defer.Deferred[str]:
        d: defer.Deferred[str] = defer.Deferred()
        self._waiting.append((want, d))
        self._check()
        if not d.called:
            d.addTimeout(timeout, reactor)
        return d

    def _check(self) -> None:
        for want, d in list(self._waiting):
            if want in self.text:
                i = self.text.index(want) + len(want)
                seen, self.text = self.text[:i], self.text[i:]
                self._waiting.remove((want, d))
                d.callback(seen)


async def connect(url: str, **kwargs: Any) -> WebClient:
    client = WebClient()
    endpoint = WebSocketClientEndpoint.new(reactor, url, **kwargs)
    await endpoint.connect(client)
    return client


async def sign_up(client: WebClient, name: str, password: str) -> None:
    await client.expect("login: ")
    for line, prompt in [
        ("new", "Username: "),
        (name, "Password: "),
        (password, "Password again: "),
        (password, f"{name}@testhost:~$ "),
    ]:
        client.line(line)
        await client.expect(prompt)
