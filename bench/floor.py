"""The floor: the least a Twisted chat server can do for the same load.

A bare ``LineReceiver`` with a connection table and nothing else: no
sanitising, no wrapping, no store, no Deferreds. It speaks just enough of
shellserver's texts that the same load generator drives both:

- ``login: `` then ``Password: `` (the name is kept, the password ignored),
  then a prompt ending in ``:~$ `` after every command;
- ``write USER TEXT`` sends ``Message from NAME: TEXT`` to USER's connection;
- ``wall TEXT`` sends ``Broadcast from NAME: TEXT`` to every logged-in connection;
- ``mesg`` answers ``is y`` (the probe's cheap command).

Usage: ``python bench/floor.py`` — listens on 127.0.0.1, an ephemeral port,
and prints ``floor listening on port N``. It stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import resource
import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


class FloorProtocol(LineReceiver):
    """One connection of the floor: just enough of shellserver's dialogue for the same load
    generator, so the bench can say how much of shellserver's cost is Twisted's own."""

    MAX_LENGTH = 4096
    factory: FloorFactory

    def connectionMade(self) -> None:
        """Ask for the name, as shellserver's telnet wire does: the generator logs in unchanged."""
        self.name = b""
        self.state = 0  # 0: login, 1: password, 2: logged in
        self.transport.write(b"login: ")

    def connectionLost(self, reason: object = None) -> None:
        """Leave the table, so walls and writes never reach a gone connection."""
        if self.state == 2 and self.factory.users.get(self.name) is self:
            del self.factory.users[self.name]

    def lineReceived(self, line: bytes) -> None:
        """Login name, then any password, then commands: the dialogue the generator expects."""
        if self.state == 2:
            self.command(line)
        elif self.state == 0:
            self.name = line.strip()
            self.state = 1
            self.transport.write(b"Password: ")
        else:
            self.state = 2
            self.prompt = self.name + b"@floor:~$ "
            self.factory.users[self.name] = self
            self.transport.write(self.prompt)

    def command(self, line: bytes) -> None:
        """The few commands the load uses, with shellserver's texts, and the prompt after each,
        which the generator waits for."""
        verb, _, rest = line.partition(b" ")
        if verb == b"write":
            user, _, text = rest.partition(b" ")
            target = self.factory.users.get(user)
            if target is None:
                self.transport.write(b"write: " + user + b" is not logged in\r\n")
            else:
                target.transport.write(b"Message from " + self.name + b": " + text + b"\r\n")
        elif verb == b"wall":
            message = b"Broadcast from " + self.name + b": " + rest + b"\r\n"
            for p in self.factory.users.values():
                p.transport.write(message)
        elif verb == b"mesg":
            self.transport.write(b"is y\r\n")
        elif verb:
            self.transport.write(verb + b": command not found\r\n")
        self.transport.write(self.prompt)


class FloorFactory(Factory):
    """Holds the connection table, the one piece of state a chat server cannot do without."""

    protocol = FloorProtocol

    def __init__(self) -> None:
        self.users: dict[bytes, FloorProtocol] = {}


def main() -> None:
    """Listen on an ephemeral loopback port and say which, so ``run.py`` can start it like a
    server."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = reactor.listenTCP(0, FloorFactory(), backlog=1024, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(f"floor listening on port {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
