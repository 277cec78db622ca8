"""The Redis link's state machine, on a fake reactor: each connection attempt is taken from
MemoryReactorClock and accepted, refused or left hanging, and this test plays Redis on it.
The real endpoint, ClientService, timeouts and backoff all run, on the fake clock.
(tests/test_cluster_link.py runs the link against a real redis-server.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import machinetable
import pytest
from automat import NoTransition
from twisted.application.internet import ClientService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, clientFromString
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from shellserver.hub.cluster import linkstate
from shellserver.hub.cluster.link import (
    ClusterUnavailable,
    RedisLink,
    endpoint_description,
    endpoint_for,
)
from shellserver.hub.cluster.resp import Reader, encode
from shellserver.hub.cluster.url import RedisURL


class Transport(StringTransport):
    """A connection's far end: closing it is seen by the protocol in the next turn, as
    with TCP."""

    def __init__(self, clock: MemoryReactorClock) -> None:
        super().__init__()
        self.clock = clock
        self.protocol: Any = None
        self.lost = False

    def abortConnection(self) -> None:
        super().abortConnection()
        self.clock.callLater(0, self.lose, ConnectionAborted())

    def loseConnection(self) -> None:
        super().loseConnection()
        self.clock.callLater(0, self.lose, ConnectionDone())

    def lose(self, why: Exception) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(why))


class Conn:
    """One accepted connection, seen from Redis."""

    def __init__(self, protocol: Any, transport: Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self.reader = Reader()

    def commands(self) -> list[list[bytes]]:
        data = self.transport.value()
        self.transport.clear()
        return self.reader.feed(data)

    def reply(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def close(self) -> None:
        """Redis closes it (restarted, killed)."""
        self.transport.lose(ConnectionDone())

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting or self.transport.lost


def subscribed(channels: list[bytes]) -> bytes:
    return b"".join(
        b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:%d\r\n" % (len(c), c, i + 1)
        for i, c in enumerate(channels)
    )


class Redis:
    """Plays Redis to the link on the fake reactor."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor
        self.taken = 0

    def attempts(self) -> list[tuple[Any, Any]]:
        """Connection attempts made since the last call: (factory, connector)."""
        new = [
            (client[2], self.reactor.connectors[i])
            for i, client in enumerate(self.reactor.tcpClients)
            if i >= self.taken
        ]
        self.taken = len(self.reactor.tcpClients)
        return new

    def accept(self, attempt: tuple[Any, Any]) -> Conn:
        factory, _ = attempt
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6379))
        transport = Transport(self.reactor)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return Conn(protocol, transport)

    def refuse(self, attempt: tuple[Any, Any]) -> None:
        factory, connector = attempt
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))

    def serve(self, conn: Conn) -> list[list[bytes]]:
        """Answer the handshake (and PING) like Redis; returns what was asked."""
        asked = conn.commands()
        for command in asked:
            if command[0] == b"SELECT":
                conn.reply(b"+OK\r\n")
            elif command[0] == b"PING":
                conn.reply(b"+PONG\r\n")
            elif command[0] == b"SUBSCRIBE":
                conn.reply(subscribed(command[1:]))
        return asked

    def connect_all(self) -> dict[str, Conn]:
        """Accept every waiting attempt and answer its handshake: {"commands", "subscriber"}."""
        conns: dict[str, Conn] = {}
        for attempt in self.attempts():
            conn = self.accept(attempt)
            asked = self.serve(conn)
            conns["commands" if asked[0][0] == b"SELECT" else "subscriber"] = conn
        return conns


class Events:
    def __init__(self) -> None:
        self.ups = 0
        self.downs = 0
        self.messages: list[tuple[str, bytes]] = []


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """Every line logged during the test (ClientService's and the link's alike)."""
    got: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        got.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield got
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def reactor() -> MemoryReactorClock:
    return MemoryReactorClock()


@pytest.fixture
def redis(reactor: MemoryReactorClock) -> Redis:
    return Redis(reactor)


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def link(reactor: MemoryReactorClock, events: Events) -> RedisLink:
    def up() -> None:
        events.ups += 1

    def down() -> None:
        events.downs += 1

    return RedisLink(
        "127.0.0.1",
        6379,
        3,
        reactor,
        up,
        down,
        lambda channel, data: events.messages.append((channel, data)),
    )


def fired(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


# -- the table ------------------------------------------------------------------------


def documented() -> set[tuple[str, str, str, str]]:
    """The rows of linkstate's docstring table: (state, input, next, output)."""
    return machinetable.documented(linkstate)


def test_the_docstring_table_is_the_machine() -> None:
    machinetable.assert_table_is_machine(
        linkstate,
        linkstate.LinkMachine,
        {"stopped", "connecting", "up", "down"},
        {"start", "stop", "connected", "failed"},
    )


def test_each_transition_names_its_state() -> None:
    """``state`` (what ``available`` reads) is what the machine entered, for every row."""

    class Core:
        state = "stopped"

        def _connect(self) -> None: ...
        def _close(self) -> None: ...
        def _drop(self) -> None: ...
        def _went_up(self) -> None: ...
        def _went_down(self) -> None: ...
        def _log_down(self, why: str) -> None: ...

    into = {"stopped": [], "connecting": ["start"], "up": ["start", "connected"]}
    into["down"] = [*into["up"], "failed"]
    for state, symbol, new, _ in documented():
        core = Core()
        machine = linkstate.LinkMachine(core)
        for step in [*into[state], symbol]:
            if step == "failed":
                machine.failed("why")
            else:
                getattr(machine, step)()
        assert core.state == new, (state, symbol)


# -- the transitions, on the fake reactor ---------------------------------------------


def test_connecting_up_lost_backoff_up(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, events: Events, lines: list[str]
) -> None:
    link.subscribe("ss:a")
    link.start()
    assert link.state == "connecting" and not link.available
    attempts = redis.attempts()
    assert [c[:2] for c in reactor.tcpClients] == [("127.0.0.1", 6379)] * 2
    cmd, sub = (redis.accept(a) for a in attempts)
    assert cmd.commands() == [[b"SELECT", b"3"]]
    assert sub.commands() == [[b"SUBSCRIBE", b"ss:a"]]
    cmd.reply(b"+OK\r\n")
    assert link.state == "connecting"  # the subscriber is not confirmed yet
    sub.reply(subscribed([b"ss:a"]))
    assert link.state == "up" and link.available and events.ups == 1
    sub.reply(encode(("message", "ss:a", b"hi")))
    assert events.messages == [("ss:a", b"hi")]

    d = link.call("GET", "k")
    assert cmd.commands() == [[b"GET", b"k"]]
    cmd.close()  # Redis went away with a call in flight
    assert fired(d)[0].check(ClusterUnavailable)
    assert link.state == "down" and events.downs == 1 and not link.available
    assert sub.closed  # losing either connection drops both
    assert fired(link.call("PING"))[0].check(ClusterUnavailable)  # at once, while down

    reactor.advance(0)  # the subscriber's loss arrives
    reactor.advance(0.07)
    assert redis.attempts() == []  # backing off: 0.1 s, jittered down by at most a quarter
    reactor.advance(0.03)
    again = redis.attempts()
    assert len(again) == 2
    for attempt in again:
        redis.refuse(attempt)
    reactor.advance(0.14)
    assert redis.attempts() == []  # the second wait is 0.2 s (jittered)
    reactor.advance(0.06)
    conns = redis.connect_all()
    assert link.state == "up" and events.ups == 2 and events.downs == 1
    assert link.call("PING") is not None and conns["commands"].commands() == [[b"PING"]]

    said = lines  # nothing per retry: ClientService's own lines are muted
    assert len(said) == 3, lines
    assert "connected to redis://127.0.0.1:6379/3" in said[0]
    assert "unavailable (connection lost); acting locally, reconnecting" in said[1]
    assert "connected to" in said[2]


def test_stop_while_connecting(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, events: Events
) -> None:
    link.start()
    reactor.advance(0.5)
    attempts = redis.attempts()
    assert len(attempts) == 2
    done = fired(link.stop())
    assert done == [None] and link.state == "stopped"
    assert all(connector.stoppedConnecting for _, connector in attempts)
    reactor.advance(60)
    assert redis.attempts() == [] and events.ups == events.downs == 0


def test_stop_while_preparing(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, events: Events
) -> None:
    """A connection waiting for SELECT's answer is closed by stop, and its late loss is no
    error (ClientService alone would raise NoTransition for it)."""
    link.start()
    cmd, sub = (redis.accept(a) for a in redis.attempts())
    done = fired(link.stop())
    assert cmd.closed and sub.closed and done == []
    reactor.advance(0)
    assert done == [None]
    cmd.reply(b"+OK\r\n")  # too late: nothing happens
    reactor.advance(60)
    assert redis.attempts() == [] and events.ups == 0 and link.state == "stopped"


def test_stop_while_up_then_start_again(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, events: Events
) -> None:
    link.start()
    conns = redis.connect_all()
    assert link.available
    waiting = link.call("GET", "k")
    done = fired(link.stop())
    assert link.state == "stopped" and not link.available
    assert conns["commands"].closed and conns["subscriber"].closed
    reactor.advance(0)
    assert done == [None]
    assert fired(waiting)[0].check(ClusterUnavailable)
    assert events.downs == 0  # a stop is not an outage
    reactor.advance(60)
    assert redis.attempts() == []
    assert fired(link.stop()) == [None]  # twice is fine

    link.start()
    redis.connect_all()
    assert link.available and events.ups == 2


def test_start_again_before_the_old_connections_are_gone(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, events: Events, lines: list[str]
) -> None:
    """The old connections' losses arrive after the new start: they are not an outage."""
    link.start()
    redis.connect_all()  # up
    link.stop()
    link.start()
    reactor.advance(0)  # the losses of the up pair
    assert link.state == "connecting" and events.downs == 0
    preparing = [redis.accept(a) for a in redis.attempts()]  # the ClientServices restarted
    assert len(preparing) == 2
    link.stop()
    link.start()
    reactor.advance(0)  # the losses of the pair being prepared
    assert link.state == "connecting" and events.downs == 0, lines
    redis.connect_all()
    assert link.state == "up" and events.ups == 2
    assert [line for line in lines if "unavailable" in line] == []


def test_redis_refusing_select(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, events: Events, lines: list[str]
) -> None:
    """An error reply to SELECT fails the attempt: the connection is closed, the service
    backs off further each time, one line is logged, and the link never goes up."""
    link.start()
    waits = []
    for _ in range(5):
        attempts = redis.attempts()
        for attempt in attempts:
            conn = redis.accept(attempt)
            if conn.commands()[0][0] == b"SELECT":
                conn.reply(b"-ERR DB index is out of range\r\n")
                assert conn.closed
            else:
                conn.reply(b"+PONG\r\n")  # the subscriber is fine, and stays
        reactor.advance(0)
        started = reactor.seconds()
        while not redis.taken < len(reactor.tcpClients):
            reactor.advance(0.005)
        waits.append(reactor.seconds() - started)
    assert link.state == "down" and events.ups == 0 and events.downs == 0
    for n, waited in enumerate(waits):
        nominal = min(0.1 * 2**n, 5.0)
        assert 0.75 * nominal - 0.01 <= waited <= nominal + 0.01, waits
    assert lines == [
        "cluster: redis://127.0.0.1:6379/3 unavailable (ERR DB index is out of range); "
        "acting locally, reconnecting"
    ]
    assert len(reactor.tcpClients) == 2 + 5  # the subscriber connected once


def test_select_unanswered_times_out(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, lines: list[str]
) -> None:
    link.start()
    cmd, sub = (redis.accept(a) for a in redis.attempts())
    redis.serve(sub)
    reactor.advance(1.9)
    assert not cmd.closed
    reactor.advance(0.1)
    assert cmd.closed and link.state == "down"
    assert "no answer to SELECT in 2 s" in " ".join(lines)


def test_subscriber_unanswered_times_out(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, lines: list[str]
) -> None:
    link.start()
    cmd, sub = (redis.accept(a) for a in redis.attempts())
    redis.serve(cmd)
    assert sub.commands() == [[b"PING"]]  # no channels yet: PING proves it answers
    reactor.advance(2)
    assert sub.closed and not cmd.closed and link.state == "down"
    assert "(no answer to PING in 2 s)" in " ".join(lines)


def test_a_call_unanswered_drops_the_link(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, events: Events
) -> None:
    link.start()
    conns = redis.connect_all()
    d = link.call("GET", "k")
    reactor.advance(2)
    assert fired(d)[0].check(ClusterUnavailable)
    assert link.state == "down" and events.downs == 1
    assert conns["commands"].closed and conns["subscriber"].closed


def test_no_messages_while_down(
    link: RedisLink, redis: Redis, reactor: MemoryReactorClock, events: Events
) -> None:
    """A subscriber prepared while the command connection is still missing waits for it:
    what it hears before the link is up is not handed on (on_up comes first)."""
    link.subscribe("ss:a")
    link.start()
    cmd, sub = (redis.accept(a) for a in redis.attempts())
    redis.serve(sub)
    sub.reply(encode(("message", "ss:a", b"early")))
    assert events.messages == [] and link.state == "connecting"
    redis.serve(cmd)
    sub.reply(encode(("message", "ss:a", b"late")))
    assert events.messages == [("ss:a", b"late")] and events.ups == 1


def test_stop_from_on_up(reactor: MemoryReactorClock, redis: Redis) -> None:
    """A callback may stop the link: Automat runs that input after the current one."""
    stopped: list[Any] = []

    def up() -> None:
        stopped.append(fired(link.stop()))

    link = RedisLink("127.0.0.1", 6379, 0, reactor, up, lambda: None, lambda c, d: None)
    link.start()
    conns = redis.connect_all()
    assert link.state == "stopped" and len(stopped) == 1
    reactor.advance(0)
    assert stopped == [[None]]
    assert conns["commands"].closed and conns["subscriber"].closed
    reactor.advance(60)
    assert redis.attempts() == []


# -- endpoints and Twisted's contract ------------------------------------------------


def test_endpoint_from_the_url(reactor: MemoryReactorClock) -> None:
    assert endpoint_description(RedisURL("redis.example", 6380, 2), 2.0) == (
        "tcp:host=redis.example:port=6380:timeout=2"
    )
    assert endpoint_description(RedisURL("::1", 6379, 0), 0.5) == (
        "tcp:host=\\:\\:1:port=6379:timeout=1"
    )
    endpoint = clientFromString(reactor, endpoint_description(RedisURL("::1", 6379, 0), 2))
    assert isinstance(endpoint, TCP4ClientEndpoint)
    endpoint.connect(Factory.forProtocol(Protocol))
    assert reactor.tcpClients[0][:2] == ("::1", 6379) and reactor.tcpClients[0][3] == 2


def test_a_host_name_tries_every_address_it_has(reactor: MemoryReactorClock) -> None:
    """An address goes through its ``tcp:`` string; a name through HostnameEndpoint, which
    resolves IPv6 as well as IPv4 (``tcp:`` would look up IPv4 only)."""
    assert isinstance(endpoint_for(reactor, RedisURL("127.0.0.1", 6379, 0), 2), TCP4ClientEndpoint)
    assert isinstance(endpoint_for(reactor, RedisURL("::1", 6379, 0), 2), TCP4ClientEndpoint)
    assert isinstance(
        endpoint_for(reactor, RedisURL("redis.example", 6379, 0), 2), HostnameEndpoint
    )


def test_clientservice_still_cannot_lose_a_refused_connection(
    reactor: MemoryReactorClock,
) -> None:
    """Why the link puts a gate in front of ClientService: a connection its
    prepareConnection refused is left open, and its loss raises NoTransition. If this
    fails, Twisted has fixed it and the gate (shellserver/hub/cluster/link.py) can go."""
    transport = StringTransport()
    clients: list[Any] = []

    class Endpoint:
        def connect(self, factory: Any) -> Deferred[Any]:
            client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6379))
            client.makeConnection(transport)
            clients.append(client)
            return succeed(client)

    service = ClientService(
        Endpoint(),  # type: ignore[arg-type]
        Factory.forProtocol(Protocol),
        retryPolicy=lambda n: 1.0,
        clock=reactor,
        prepareConnection=lambda p: fail(ValueError("refused")),
    )
    service.startService()
    assert not transport.disconnecting  # left open
    with pytest.raises(NoTransition):
        clients[0].connectionLost(Failure(ConnectionDone()))
    service.stopService()
