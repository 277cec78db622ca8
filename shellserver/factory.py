"""The telnet listener's factory: one TelnetProtocol per connection, wired to the server."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from shellserver.server import Server
from shellserver.telnet import TelnetProtocol


class TelnetFactory(Factory):
    noisy = False

    def __init__(self, server: Server, clock: IReactorTime) -> None:
        self.server = server
        self.clock = clock

    def buildProtocol(self, addr: Any) -> TelnetProtocol:
        cfg = self.server.config
        protocol = TelnetProtocol(
            self.server.new_connection, self.clock, cfg.max_line, cfg.max_output
        )
        protocol.factory = self
        return protocol
