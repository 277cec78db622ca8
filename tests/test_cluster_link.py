"""RedisLink against a real redis-server: commands, scripts, pub/sub, outages, a hung Redis."""

from __future__ import annotations

import fcntl
import json
import struct
import termios
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from conftest import LoggedErrors
from redisserver import RedisServer, free_port
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from shellserver.hub.cluster import scripts
from shellserver.hub.cluster.link import (
    ClusterUnavailable,
    RedisLink,
    RedisReplyError,
    backoff,
)
from shellserver.hub.cluster.resp import Reader, encode


class Events:
    def __init__(self) -> None:
        self.ups = 0
        self.downs = 0
        self.messages: list[tuple[str, bytes]] = []

    def up(self) -> None:
        self.ups += 1

    def down(self) -> None:
        self.downs += 1

    def message(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data))


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.02, lambda: None)


async def failure_of(d: Any) -> BaseException:
    try:
        await d
    except Exception as e:
        return e
    raise AssertionError("expected a failure")


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def make_link(events: Events) -> Iterator[Callable[..., RedisLink]]:
    links: list[RedisLink] = []

    def make(port: int, **kw: Any) -> RedisLink:
        link = RedisLink(
            "127.0.0.1",
            port,
            kw.pop("db", 3),
            reactor,
            on_up=kw.pop("on_up", events.up),
            on_down=events.down,
            on_message=events.message,
            **kw,
        )
        links.append(link)
        link.start()
        return link

    yield make
    for link in links:
        pytest_twisted.blockon(link.stop())


@pytest_twisted.ensureDeferred
async def test_round_trip_types(redis_server: RedisServer, make_link: Any, events: Events) -> None:
    link = make_link(redis_server.port)
    await until(lambda: link.available)
    assert events.ups == 1
    assert await link.call("SET", "k", b"\xff\x00v") == b"OK"
    assert await link.call("GET", "k") == b"\xff\x00v"
    assert await link.call("SET", "n", 41) == b"OK"
    assert await link.call("INCR", "n") == 42
    assert await link.call("GET", "missing") is None
    assert await link.call("HSET", "h", "a", "1", "b", "2") == 2
    assert sorted(await link.call("HGETALL", "h")) == [b"1", b"2", b"a", b"b"]
    # the db was selected: db 0 does not have the key
    assert await link.call("DBSIZE") == 3
    err = await failure_of(link.call("HGET", "k", "x"))
    assert isinstance(err, RedisReplyError) and "WRONGTYPE" in str(err)
    err = await failure_of(link.call("NOSUCHCOMMAND"))
    assert isinstance(err, RedisReplyError)
    # still up after error replies
    assert await link.call("PING") == b"PONG"


@pytest_twisted.ensureDeferred
async def test_script_survives_redis_restart(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    link = make_link(redis_server.port)
    await until(lambda: link.available)
    script = link.script("redis.call('SET', KEYS[1], ARGV[1]); return {KEYS[1], ARGV[1], 7}")
    assert await script(["key"], [b"val"]) == [b"key", b"val", 7]
    assert await link.call("SCRIPT", "EXISTS", script.sha) == [1]

    redis_server.stop()
    await until(lambda: events.downs == 1)
    redis_server.start()
    await until(lambda: events.ups == 2)
    assert await link.call("SCRIPT", "EXISTS", script.sha) == [0]
    assert await script(["key2"], [5]) == [b"key2", b"5", 7]  # NOSCRIPT, then EVAL
    assert await link.call("SCRIPT", "EXISTS", script.sha) == [1]
    err = await failure_of(link.script("return redis.call('NOPE')")([], []))
    assert isinstance(err, RedisReplyError)


@pytest_twisted.ensureDeferred
async def test_publish_and_subscribe(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    link = make_link(redis_server.port)
    other = make_link(redis_server.port, on_up=lambda: None)
    await until(lambda: link.available and other.available)
    await link.subscribe("ss:a", "ss:b")
    assert await other.publish("ss:a", b"one\xff") == 1
    assert await other.publish("ss:b", b"two") == 1
    assert await other.publish("ss:c", b"nobody") == 0
    await until(lambda: len(events.messages) == 2)
    assert events.messages == [("ss:a", b"one\xff"), ("ss:b", b"two")]
    await link.unsubscribe("ss:a")
    assert await other.publish("ss:a", b"gone") == 0
    assert await other.publish("ss:b", b"three") == 1
    await until(lambda: len(events.messages) == 3)
    assert events.messages[-1] == ("ss:b", b"three")


@pytest_twisted.ensureDeferred
async def test_outage_and_recovery(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    logged: list[str] = []
    observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        await outage_and_recovery(redis_server, make_link, events)
    finally:
        globalLogPublisher.removeObserver(observer)
    # one line when it goes, one when it is back; nothing per reconnect attempt
    assert len(logged) == 3, logged
    assert "unavailable" in logged[1] and "connected" in logged[2]


async def outage_and_recovery(redis_server: RedisServer, make_link: Any, events: Events) -> None:
    link = make_link(redis_server.port)
    await link.subscribe("ss:x")  # before it is up: made when it connects
    await until(lambda: link.available)
    assert events.ups == 1

    redis_server.stop()
    await until(lambda: events.downs == 1)
    assert not link.available
    started = time.monotonic()
    err = await failure_of(link.call("GET", "k"))
    assert isinstance(err, ClusterUnavailable)
    assert time.monotonic() - started < 0.1
    assert isinstance(await failure_of(link.publish("ss:x", b"m")), ClusterUnavailable)
    await link.subscribe("ss:y")  # while down: remembered
    await deferLater(reactor, 1.0, lambda: None)  # a few failed reconnects
    assert events.downs == 1 and events.ups == 1

    redis_server.start()
    await until(lambda: events.ups == 2, timeout=10)
    assert link.available
    # both subscriptions were made again before on_up
    assert await link.publish("ss:x", b"1") == 1
    assert await link.publish("ss:y", b"2") == 1
    await until(lambda: len(events.messages) == 2)
    assert sorted(events.messages) == [("ss:x", b"1"), ("ss:y", b"2")]
    assert events.downs == 1


@pytest_twisted.ensureDeferred
async def test_killed_redis(redis_server: RedisServer, make_link: Any, events: Events) -> None:
    link = make_link(redis_server.port)
    await until(lambda: link.available)
    redis_server.kill()
    await until(lambda: events.downs == 1)
    redis_server.start()
    await until(lambda: events.ups == 2)
    assert await link.call("PING") == b"PONG"


@pytest_twisted.ensureDeferred
async def test_hung_redis_times_out(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    link = make_link(redis_server.port, timeout=1.0)
    await until(lambda: link.available)
    redis_server.pause()
    try:
        started = time.monotonic()
        err = await failure_of(link.call("GET", "k"))
        took = time.monotonic() - started
        assert isinstance(err, ClusterUnavailable)
        assert 0.9 < took < 3.0
        assert events.downs == 1 and not link.available
        # reconnects reach the kernel's backlog but get no answer: still down, no hang
        await deferLater(reactor, 1.5, lambda: None)
        assert not link.available and events.ups == 1
    finally:
        redis_server.resume()
    await until(lambda: events.ups == 2, timeout=10)
    assert await link.call("PING") == b"PONG"


@pytest_twisted.ensureDeferred
async def test_hung_redis_times_out_every_command_with_one_timer(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    """Commands waiting on a paused Redis share one timer (not one each), and every one of
    them still fails with ClusterUnavailable within the timeout, the link dropped once."""
    link = make_link(redis_server.port, timeout=1.0)
    await until(lambda: link.available)
    assert await link.call("PING") == b"PONG"
    redis_server.pause()
    try:
        timers = len(reactor.getDelayedCalls())
        started = time.monotonic()
        calls = [link.call("GET", f"k{i}") for i in range(200)]
        assert len(reactor.getDelayedCalls()) - timers <= 1
        await deferLater(reactor, 0.3, lambda: None)
        later = [link.call("GET", f"late{i}") for i in range(50)]  # the same timer still
        assert len(reactor.getDelayedCalls()) - timers <= 1
        errors = [await failure_of(d) for d in calls + later]
        took = time.monotonic() - started
        assert all(isinstance(e, ClusterUnavailable) for e in errors)
        assert str(errors[0]) == "cluster unavailable: Redis did not answer"
        assert 0.9 < took < 3.0
        assert events.downs == 1 and not link.available
    finally:
        redis_server.resume()
    await until(lambda: events.ups == 2, timeout=10)
    assert await link.call("PING") == b"PONG"


@pytest_twisted.ensureDeferred
async def test_deliver_script_decides_in_redis_time(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    """The DELIVER script, each answer: past the sender's deadline (Redis's clock) 'late' and
    nothing published; no such session 'gone'; mesg n or an ignoring recipient 'refused'
    (a notice, with no sender, still goes through); no node listening 'gone'; else 'ok'."""
    link = make_link(redis_server.port)
    await until(lambda: link.available)
    await link.subscribe("ss:3:node:b")
    deliver = link.script(scripts.DELIVER)
    seconds, micros = await link.call("TIME")
    now_ms = int(seconds) * 1000 + int(micros) // 1000

    def args(sender: str, deadline: int = now_ms + 60_000, channel: str = "ss:3:node:b") -> Any:
        return deliver([], ["ss:", "ss:3:all", "b", "12", sender, channel, b"{}", deadline])

    await link.call("DEL", "ss:s:b", "ss:ign")
    assert await args("ann") == b"gone"
    record = ["b", 12, "bob", "user", "tel/1", "", "", 0, 0, True, ""]
    await link.call("HSET", "ss:s:b", "12", json.dumps(record))
    assert await args("ann", deadline=now_ms - 1_000) == b"late"
    assert await args("ann") == b"ok"
    assert await args("ann", channel="ss:3:node:nobody") == b"gone"
    await link.call("HSET", "ss:ign", "bob", json.dumps(["zed", "ann"]))
    assert await args("ann") == b"refused"
    assert await args("cat") == b"ok"
    assert await args("") == b"ok"  # a notice
    record[9] = False  # mesg n
    await link.call("HSET", "ss:s:b", "12", json.dumps(record))
    assert await args("cat") == b"refused"
    assert await args("") == b"ok"
    await until(lambda: len(events.messages) == 4)
    assert events.messages == [("ss:3:node:b", b"{}")] * 4


def test_default_timeout_is_two_seconds() -> None:
    link = RedisLink("127.0.0.1", 1, 0, reactor, lambda: None, lambda: None, lambda c, d: None)
    assert link.timeout == 2.0


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_starts_while_redis_is_down(tmp_path: Any, make_link: Any, events: Events) -> None:
    redis = RedisServer(tmp_path / "redis")
    link = make_link(redis.port)
    try:
        await deferLater(reactor, 0.5, lambda: None)
        assert not link.available and events.ups == 0 and events.downs == 0
        assert isinstance(await failure_of(link.call("PING")), ClusterUnavailable)
        redis.start()
        await until(lambda: events.ups == 1, timeout=10)
        assert await link.call("PING") == b"PONG"
    finally:
        redis.stop()


@pytest_twisted.ensureDeferred
async def test_stop_while_connecting() -> None:
    ups: list[int] = []
    link = RedisLink(
        "127.0.0.1", free_port(), 0, reactor, lambda: ups.append(1), lambda: None, print
    )
    link.start()
    await deferLater(reactor, 0.3, lambda: None)
    await link.stop()
    assert not link.available and not ups
    await link.stop()  # twice is fine


@pytest_twisted.ensureDeferred
async def test_callback_errors_are_logged_not_raised(
    redis_server: RedisServer, make_link: Any, logged_errors: LoggedErrors
) -> None:
    def broken() -> None:
        raise ZeroDivisionError

    link = make_link(redis_server.port, on_up=broken)
    await until(lambda: link.available)
    assert await link.call("PING") == b"PONG"
    assert len(logged_errors.flush(ZeroDivisionError)) == 1


def test_backoff_doubles_to_five_seconds() -> None:
    for attempt, nominal in [(0, 0.1), (1, 0.2), (2, 0.4), (5, 3.2), (6, 5.0), (60, 5.0)]:
        assert 0.75 * nominal <= backoff(attempt) <= nominal


def test_reactor_is_checked() -> None:
    with pytest.raises(TypeError, match="IReactorTCP"):
        RedisLink("h", 1, 0, object(), print, print, print)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_bursts_keep_order(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    """Many requests in flight and many messages per read: replies stay paired and ordered."""
    link = make_link(redis_server.port)
    await until(lambda: link.available)
    await link.subscribe("ss:burst")
    big = bytes(range(256)) * 300
    sets = [link.call("SET", f"k{i}", big + str(i).encode()) for i in range(200)]
    assert await gatherResults(sets) == [b"OK"] * 200
    gets = [link.call("GET", f"k{i}") for i in range(200)]
    assert await gatherResults(gets) == [big + str(i).encode() for i in range(200)]
    pubs = [link.publish("ss:burst", big + str(i).encode()) for i in range(200)]
    assert await gatherResults(pubs) == [1] * 200
    await until(lambda: len(events.messages) == 200)
    assert events.messages == [("ss:burst", big + str(i).encode()) for i in range(200)]


def unread(proto: Any) -> int:
    """Bytes waiting in the kernel for ``proto``'s socket."""
    return struct.unpack("i", fcntl.ioctl(proto.transport.getHandle(), termios.FIONREAD, b"0000"))[
        0
    ]


async def held_back(
    proto: Any, send: Callable[[], object], size: int, delivered: Callable[[], int]
) -> list[int]:
    """Stop reading ``proto``'s socket, ``send()``, wait until Redis's answers (``size``
    bytes, less than one 64 KiB read) are all in the kernel, then read again. Returns, per
    dataReceived call after that, how many more ``delivered()`` counts when it returns: the
    replies of one read are all handed out within it (txredisapi's parser handed out one
    bulk string per reactor turn, and none in the first)."""
    assert size < 65536
    per_read: list[int] = []
    original = proto.dataReceived

    def counted(data: bytes) -> None:
        before = delivered()
        original(data)
        per_read.append(delivered() - before)

    proto.dataReceived = counted
    proto.transport.pauseProducing()
    send()
    await until(lambda: unread(proto) >= size)
    assert unread(proto) == size and delivered() == 0
    proto.transport.resumeProducing()
    await until(lambda: bool(per_read))
    return per_read


@pytest_twisted.ensureDeferred
async def test_one_read_many_messages_one_turn(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    link = make_link(redis_server.port)
    other = make_link(redis_server.port, on_up=lambda: None)
    await until(lambda: link.available and other.available)
    await link.subscribe("ss:many")
    payloads = [b"m%d" % i for i in range(300)]
    # what Redis pushes: an array of three bulk strings, the same bytes as a command
    size = sum(len(encode(("message", "ss:many", p))) for p in payloads)
    per_read = await held_back(
        link._subscriber,
        lambda: [other.publish("ss:many", p) for p in payloads],
        size,
        lambda: len(events.messages),
    )
    assert per_read == [300]
    assert events.messages == [("ss:many", p) for p in payloads]


@pytest_twisted.ensureDeferred
async def test_one_read_many_replies_one_turn(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    link = make_link(redis_server.port)
    await until(lambda: link.available)
    assert await link.call("SET", "k", b"v") == b"OK"
    script = "return {1, {KEYS[1], {ARGV[1]}}, 'x'}"
    calls: list[Any] = []
    fired: list[object] = []
    size = 0
    for i in range(100):
        n = b"%d" % i
        size += len(b"$1\r\nv\r\n" + b"$-1\r\n" + b"+PONG\r\n" + b":1\r\n")
        size += len(b"$%d\r\n%s\r\n" % (len(n), n))  # ECHO
        size += len(b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n*1\r\n$%d\r\n%s\r\n$1\r\nx\r\n" % (len(n), n))

    def send() -> None:
        for i in range(100):
            calls.extend(
                [
                    link.call("GET", "k"),
                    link.call("GET", "missing"),
                    link.call("PING"),
                    link.call("EXISTS", "k"),
                    link.call("ECHO", i),
                    link.call("EVAL", script, 1, "a", i),
                ]
            )
        for d in calls:
            d.addCallback(lambda r: fired.append(r) or r)

    per_read = await held_back(link._commands, send, size, lambda: len(fired))
    assert per_read == [600]
    results = await gatherResults(calls)
    for i in range(100):
        n = str(i).encode()
        assert results[6 * i : 6 * i + 6] == [b"v", None, b"PONG", 1, n, [1, [b"a", [n]], b"x"]]


@pytest_twisted.ensureDeferred
async def test_large_values_and_errors_in_arrays(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    link = make_link(redis_server.port)
    other = make_link(redis_server.port, on_up=lambda: None)
    await until(lambda: link.available and other.available)
    big = bytes(range(256)) * 1024 * 3  # 768 KiB, CRLF bytes inside: many reads each
    assert await link.call("SET", "big", big) == b"OK"
    assert await link.call("GET", "big") == big
    assert await link.call("MGET", "big", "none", "big") == [big, None, big]
    await link.subscribe("ss:big")
    assert await other.publish("ss:big", big) == 1
    await until(lambda: len(events.messages) == 1)
    assert events.messages == [("ss:big", big)]
    # an error inside an array (here from MULTI/EXEC) is an element, not a failure
    assert await link.call("MULTI") == b"OK"
    assert await link.call("SET", "s", "1") == b"QUEUED"
    assert await link.call("HGET", "s", "f") == b"QUEUED"
    done = await link.call("EXEC")
    assert done[0] == b"OK" and isinstance(done[1], RedisReplyError)
    assert "WRONGTYPE" in str(done[1])
    assert await link.call("GET", "s") == b"1"


@pytest_twisted.ensureDeferred
async def test_bad_argument_fails_the_call_not_the_link(
    redis_server: RedisServer, make_link: Any
) -> None:
    link = make_link(redis_server.port)
    await until(lambda: link.available)
    err = await failure_of(link.call("SET", "k", 1.5))
    assert isinstance(err, TypeError) and "str, bytes or int" in str(err)
    assert await link.call("PING") == b"PONG"  # nothing was sent, the replies stay paired


class NotQuiteRedis(Protocol):
    """Answers ``+OK`` to everything but ``GET``, which gets a reply that is not RESP2."""

    def __init__(self) -> None:
        self.reader = Reader()

    def dataReceived(self, data: bytes) -> None:
        for command in self.reader.feed(data):
            self.transport.write(b"?garbage\r\n" if command[0] == b"GET" else b"+OK\r\n")


@pytest_twisted.ensureDeferred
async def test_not_resp_is_an_outage_with_one_line(make_link: Any, events: Events) -> None:
    port = reactor.listenTCP(0, Factory.forProtocol(NotQuiteRedis), interface="127.0.0.1")
    logged: list[str] = []
    observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        link = make_link(port.getHost().port)
        await until(lambda: link.available)
        assert await link.call("SET", "k", "v") == b"OK"
        err = await failure_of(link.call("GET", "k"))
        assert isinstance(err, ClusterUnavailable)
        assert "not RESP2" in str(err) and '"?"' in str(err)
        await until(lambda: events.downs == 1)
        await until(lambda: events.ups == 2)  # it reconnects, as after any outage
    finally:
        globalLogPublisher.removeObserver(observer)
        await port.stopListening()
    down = [line for line in logged if "unavailable" in line]
    assert len(down) == 1 and "not RESP2 from the server: Protocol error" in down[0], logged


@pytest_twisted.ensureDeferred
async def test_redis_refusing_select_backs_off_with_one_line(
    redis_server: RedisServer, make_link: Any, events: Events
) -> None:
    """A database Redis does not have: each attempt is refused at SELECT and closed, the
    attempts back off (0.1, 0.2, 0.4, 0.8 s ...), one line says why, and it never goes up."""
    logged: list[str] = []
    observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        link = make_link(redis_server.port, db=99)
        await deferLater(reactor, 1.4, lambda: None)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert not link.available and events.ups == 0 and events.downs == 0
    assert logged == [
        f"cluster: redis://127.0.0.1:{redis_server.port}/99 unavailable"
        " (ERR DB index is out of range); acting locally, reconnecting"
    ]
    other = make_link(redis_server.port, db=0, on_up=lambda: None)
    await until(lambda: other.available)
    clients = await other.call("CLIENT", "LIST")
    assert clients.count(b"\n") == 3  # link's subscriber, other's two: the refused are closed
    stats = await other.call("INFO", "stats")
    received = int(stats.split(b"total_connections_received:")[1].split(b"\r\n")[0])
    assert 1 + 4 <= received - 2 <= 1 + 6  # subscriber, then 4 to 6 SELECTs in 1.4 s
