"""A whole server without sockets: real store (SQLite in tmp), fake clock, telnet over
StringTransport."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.filepath import FilePath

from shellserver.app.assembly import Assembly, assemble
from shellserver.app.config import Config
from shellserver.files.homefs import Homes
from shellserver.hub.local import Hub
from shellserver.ops.threads import inline_runner
from shellserver.store.accounts import ROLE_ADMIN, AccountDB, AccountStore
from shellserver.wires.telnet.protocol import TelnetProtocol

COST = 4
_IAC_SEQ = re.compile(rb"\xff[\xfb-\xfe].|\xff[\xf0-\xfa]", re.S)


#: ``make_server``'s keywords that are parts, not options (the rest are ``Config`` fields).
PARTS = ("hub", "clock", "stop", "registry", "run_io", "initial_password", "metrics", "store")


def make_server(tmp_path: Path, **overrides: Any) -> Assembly:
    """A server assembled as the service does, on a ``Clock``, inline runners and a store in
    ``tmp_path``. Keywords are ``Config`` fields, or parts to use instead of the defaults
    (``hub``, ``clock``, ``stop``, ``registry``, ``run_io``, ``initial_password``, ``store``)."""
    parts = {key: overrides.pop(key) for key in PARTS if key in overrides}
    # Sessions end with their connections unless a test asks for --linger: most tests
    # drop a connection to end a session, as they did before sessions could be detached.
    config = evolve(Config(hostname="testhost", hash_cost=COST, linger=0), **overrides)
    clock = parts.pop("clock", None)
    clock = Clock() if clock is None else clock
    store = parts.pop("store", None)
    if store is None:
        db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
        store = AccountStore(db, inline_runner, inline_runner, COST)
    hub = parts.pop("hub", None)
    hub = Hub(node=config.node, clock=clock) if hub is None else hub
    home_root = tmp_path / "home"
    home_root.mkdir(mode=0o700, exist_ok=True)
    homes = Homes(FilePath(str(home_root)), config.quota, inline_runner)
    stop = parts.pop("stop", lambda: None)
    spent = parts.pop("initial_password", str(tmp_path / "initial-admin-password"))
    server = assemble(config, clock, store, hub, homes, stop, spent, **parts)
    server.admin.mutes.refresh()  # as the service does at its start
    return server


def add_user(
    server: Assembly, name: str, password: str = "password1", admin: bool = False
) -> None:
    role = ROLE_ADMIN if admin else "user"
    d = server.store.create_user(name, password, role)
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert not failures, failures


def make_server_with(
    tmp_path: Path, users: tuple[str, ...], admins: tuple[str, ...] = ("root1",), **overrides: Any
) -> Assembly:
    """A server with these accounts, each with the password ``password1`` (``overrides`` as
    :func:`make_server` takes them)."""
    server = make_server(tmp_path, **overrides)
    for name in users:
        add_user(server, name)
    for name in admins:
        add_user(server, name, admin=True)
    return server


def online(
    server: Assembly, name: str, peer: str = "10.0.0.1", password: str = "password1"
) -> Client:
    """A client logged in as ``name``, its output so far read."""
    c = Client(server, peer=peer)
    assert f"{name}@testhost" in c.login(name, password)
    c.output()
    return c


def hold_db_call(server: Assembly, call: str) -> Deferred[Any]:
    """The store's ``call`` waits for the returned Deferred; its other calls run at once."""
    pending: Deferred[Any] = Deferred()

    def run_db(f: Any, *args: Any) -> Deferred[Any]:
        return pending if f.__name__ == call else inline_runner(f, *args)

    server.store.run_db = run_db
    return pending


class Counting:
    """An inline runner that records which store functions ran (how many trips a path makes
    to the store: each is a thread hand-off and a reactor wake-up in the real server)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.calls.append(f.__name__)
        return inline_runner(f, *args, **kwargs)


class Client:
    """A telnet client that never negotiates (like nc), speaking to a TelnetProtocol."""

    def __init__(self, server: Assembly, peer: str = "10.0.0.1") -> None:
        self.server = server
        self.clock: Clock = server.clock  # type: ignore[assignment]
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        self.protocol = TelnetProtocol(
            server.new_connection, self.clock, server.config.max_line, server.config.max_output
        )
        self.protocol.makeConnection(self.transport)
        self.closed = False

    def raw(self) -> bytes:
        self.clock.advance(0)  # the end of the reactor turn: prompts redrawn after messages
        data = self.transport.value()
        self.transport.clear()
        return data

    def output(self) -> str:
        """What the user would see: negotiation removed, CR LF as newlines."""
        data = _IAC_SEQ.sub(b"", self.raw()).replace(b"\xff\xff", b"\xff")
        return data.decode("utf-8", "replace").replace("\r\n", "\n")

    def send(self, line: str) -> None:
        self.protocol.dataReceived(line.encode("utf-8", "surrogateescape") + b"\r\n")

    def send_bytes(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def login(self, name: str, password: str = "password1") -> str:
        self.send(name)
        self.send(password)
        return self.output()

    def run(self, line: str) -> str:
        """Type a command, return its output (including the next prompt)."""
        self.output()
        self.send(line)
        return self.output()

    @property
    def disconnecting(self) -> bool:
        return bool(self.transport.disconnecting)

    def drop(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost()


def held_drains(monkeypatch: Any) -> list[Deferred[None]]:
    """Make every ``Terminal.drain`` wait until the test fires it: a client that reads only
    when told. Returns the waiting Deferreds, oldest first."""
    from shellserver.terminal.discipline import Terminal

    waits: list[Deferred[None]] = []

    def drain(self: Terminal) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        waits.append(d)
        return d

    monkeypatch.setattr(Terminal, "drain", drain)
    return waits
