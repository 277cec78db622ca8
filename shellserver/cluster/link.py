"""One node's connections to Redis: commands, Lua scripts, publish and subscribe, reconnects.

The cluster must never make a user wait on Redis: a command fails at once with
:class:`ClusterUnavailable` while the link is down, and within ``timeout`` seconds
when Redis does not answer (a paused or wedged server), so callers fall back to
local behaviour (``write: cluster unavailable``) instead of hanging.

Two TCP connections: one for commands (request, reply, in order) and one in
subscriber mode (RESP2 allows nothing but (UN)SUBSCRIBE and PING on it). They
come and go together: the link is *up* only when both are, and losing either
is an outage. The wire format is :mod:`shellserver.cluster.resp` (each read is
parsed completely in the reactor turn it arrived in); the connections, the
reactor, the backoff and the "up after re-subscribing" order are ours.

Types, decided once here: arguments may be ``str`` (sent as UTF-8), ``bytes``
or ``int``; replies come back as Redis sent them, without guessing: bulk
strings as ``bytes``, status replies (``OK``) as ``str``, integers as ``int``,
nil as ``None``, arrays as ``list``. Channel names are ``str``, message
payloads ``bytes``. Redis error replies become :class:`RedisReplyError` (with
Redis's text, e.g. ``ERR unknown command ...``, ``NOSCRIPT ...``); one inside an
array reply stays an element of the list.
Pub/sub channels are global to the Redis server, not per database: callers
prefix their channel names.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.defer import (
    TimeoutError as DeferredTimeout,
)
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import TimeoutError as TxTimeoutError
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.cluster.resp import Arg, ProtocolError, Reader, encode
from shellserver.cluster.resp import RedisReplyError as RedisReplyError  # where callers find it
from shellserver.hub import ClusterUnavailable as ClusterUnavailable  # where callers find it

_log = Logger()

TIMEOUT = 2.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


def _nothing(*_: object) -> None:
    return None


def backoff(attempt: int) -> float:
    """Seconds before reconnect attempt ``attempt`` (0 first): 0.1 doubling to 5, jittered
    down by up to a quarter so that nodes restarted together do not reconnect in step."""
    nominal = min(BACKOFF_FIRST * 2.0 ** min(attempt, 20), BACKOFF_MAX)
    return nominal * random.uniform(0.75, 1.0)


class _Connection(Protocol):
    """One connection to Redis: commands out, each read's replies handed to
    :meth:`replyReceived` in order, all within the turn the read came in."""

    transport: Any  # a TCP transport (write, abortConnection) once connected

    def __init__(self, lost: Callable[[_Connection], None]) -> None:
        self._reader = Reader()
        self._lost = lost
        self.gone: Deferred[None] = Deferred()
        #: why we closed it: the server is not speaking RESP2 (not Redis, or a broken one)
        self.broken = ""

    @property
    def why(self) -> str:
        return f"not RESP2 from the server: {self.broken}" if self.broken else "connection lost"

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._reader.feed(data)
        except ProtocolError as e:
            self.broken = str(e)  # said in the link's one "unavailable" line
            self.transport.abortConnection()
            return
        for reply in replies:
            self.replyReceived(reply)

    def replyReceived(self, reply: Any) -> None:
        raise NotImplementedError

    def failAll(self) -> None:
        """The connection is gone: every request still waiting fails."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.failAll()
        self.gone.callback(None)
        self._lost(self)


class _Commands(_Connection):
    """The command connection: requests answered in order, one reply each."""

    def __init__(self, lost: Callable[[_Connection], None]) -> None:
        super().__init__(lost)
        self._waiting: deque[Deferred[Any]] = deque()

    def execute(self, *args: Arg) -> Deferred[Any]:
        """Send one command; fires with its reply, or fails with RedisReplyError."""
        if not self.connected:
            return fail(ClusterUnavailable("cluster unavailable"))
        data = encode(args)  # TypeError for a bad argument, before anything is queued
        d: Deferred[Any] = Deferred()
        self._waiting.append(d)
        self.transport.write(data)
        return d

    def replyReceived(self, reply: Any) -> None:
        if not self._waiting:
            return  # nothing asked: cannot happen with Redis, and must not raise here
        # a request that timed out was cancelled: firing it again does nothing
        d = self._waiting.popleft()
        if isinstance(reply, RedisReplyError):
            d.errback(reply)
        else:
            d.callback(reply)

    def failAll(self) -> None:
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(ClusterUnavailable(f"cluster unavailable: {self.why}"))


class _Subscriber(_Connection):
    """The subscriber connection. Redis answers ``SUBSCRIBE a b`` with one confirmation
    per channel, interleaved with messages, so this counts them: a request's Deferred fires
    with its last one."""

    def __init__(
        self, lost: Callable[[_Connection], None], message: Callable[[bytes, bytes], None]
    ) -> None:
        super().__init__(lost)
        self._message = message
        self._expect: deque[tuple[Deferred[None], list[int]]] = deque()

    def request(self, *args: Arg) -> Deferred[None]:
        """Send ``SUBSCRIBE``/``UNSUBSCRIBE`` with channels, or ``PING``."""
        if not self.connected:
            return fail(ClusterUnavailable("cluster unavailable"))
        data = encode(args)
        d: Deferred[None] = Deferred()
        self._expect.append((d, [max(1, len(args) - 1)]))
        self.transport.write(data)
        return d

    def replyReceived(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            self._message(reply[1], reply[2])
            return
        if not self._expect:
            return
        d, left = self._expect[0]
        if isinstance(reply, RedisReplyError):
            self._expect.popleft()
            d.errback(reply)
            return
        left[0] -= 1
        if left[0] <= 0:
            self._expect.popleft()
            d.callback(None)

    def failAll(self) -> None:
        expect, self._expect = self._expect, deque()
        for d, _ in expect:
            d.errback(ClusterUnavailable(f"cluster unavailable: {self.why}"))


class _OneShot(Factory):
    """Hands out one protocol instance; quiet (connectProtocol's factory logs "Starting
    factory" on each attempt, and a node retrying every few seconds would flood the log)."""

    noisy = False

    def __init__(self, proto: Protocol) -> None:
        self._proto = proto

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        self._proto.factory = self
        return self._proto


@define(eq=False)
class Script:
    """A Lua script run by its SHA1 (``EVALSHA``); when Redis no longer has it (restarted,
    ``SCRIPT FLUSH``) the ``NOSCRIPT`` error is answered by sending the source (``EVAL``),
    which caches it again."""

    link: RedisLink
    source: str
    sha: str = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(self, keys: list[str], args: list[str | int | bytes]) -> Deferred[Any]:
        tail = (len(keys), *keys, *args)

        def again(failure: Failure) -> Deferred[Any] | Failure:
            if failure.check(RedisReplyError) and str(failure.value).startswith("NOSCRIPT"):
                return self.link.call("EVAL", self.source, *tail)
            return failure

        return self.link.call("EVALSHA", self.sha, *tail).addErrback(again)


def _is_reactor(_inst: Any, _attr: Any, value: Any) -> None:
    if not (IReactorTCP.providedBy(value) and IReactorTime.providedBy(value)):
        raise TypeError("RedisLink needs a reactor with IReactorTCP and IReactorTime")


@define(eq=False)
class RedisLink:
    """A node's link to Redis. :meth:`start` connects and keeps reconnecting (0.1 s doubling
    to 5 s) until :meth:`stop`. ``on_up`` runs each time the link becomes usable, after the
    subscriptions are in place, so the caller can republish its state; ``on_down`` once per
    outage (not on :meth:`stop`, nor when the first connection fails: the link starts down).
    ``on_message(channel, payload)`` gets every message on a subscribed channel. Exceptions
    from the callbacks are logged, never raised into the reactor."""

    host: str
    port: int
    db: int
    #: Both IReactorTCP (connecting) and IReactorTime (timeouts, backoff).
    reactor: IReactorTime = field(validator=_is_reactor)
    on_up: Callable[[], None]
    on_down: Callable[[], None]
    on_message: Callable[[str, bytes], None]
    timeout: float = TIMEOUT

    _state: str = field(default="stopped", init=False)  # stopped|connecting|up|waiting
    _attempt: int = field(default=0, init=False)
    _was_up: bool = field(default=False, init=False)
    _logged: bool = field(default=False, init=False)
    _commands: _Commands | None = field(default=None, init=False)
    _subscriber: _Subscriber | None = field(default=None, init=False)
    _connecting: Deferred[None] | None = field(default=None, init=False)
    _retry: IDelayedCall | None = field(default=None, init=False)
    #: What the caller wants subscribed, and what Redis has confirmed on this connection.
    _channels: set[str] = field(factory=set, init=False)
    _subscribed: set[str] = field(factory=set, init=False)

    @property
    def available(self) -> bool:
        """Connected, selected and subscribed: commands are sent now."""
        return self._state == "up"

    @property
    def address(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._state != "stopped":
            return
        self._attempt = 0
        self._connect()

    def stop(self) -> Deferred[None]:
        """Stop reconnecting and close the connections; fires once both are closed.
        Calls still waiting fail with ClusterUnavailable."""
        self._state = "stopped"
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
        gone = [p.gone for p in self._drop()]
        return gatherResults(gone).addCallback(_nothing)

    # -- commands ---------------------------------------------------------------------

    def call(self, *args: Arg) -> Deferred[Any]:
        """One Redis command, e.g. ``call("HSET", key, field, value)``."""
        proto = self._commands
        if self._state != "up" or proto is None:
            return fail(ClusterUnavailable("cluster unavailable"))
        try:
            d = proto.execute(*args)
        except Exception:
            return fail()
        return self._guard(d, str(args[0]) if args else "?")

    def script(self, source: str) -> Script:
        return Script(self, source)

    def publish(self, channel: str, data: bytes) -> Deferred[int]:
        """Fires with the number of subscribers (across the cluster) that received it."""
        return self.call("PUBLISH", channel, data)

    def subscribe(self, *channels: str) -> Deferred[None]:
        """Add channels; they stay subscribed across reconnects. Fires once Redis confirmed,
        or at once while the link is down (``on_up`` then says they are in place)."""
        self._channels.update(channels)
        return self._sync()

    def unsubscribe(self, *channels: str) -> Deferred[None]:
        self._channels.difference_update(channels)
        return self._sync()

    def _sync(self) -> Deferred[None]:
        sub = self._subscriber
        if self._state != "up" or sub is None:
            return succeed(None)
        add = sorted(self._channels - self._subscribed)
        drop = sorted(self._subscribed - self._channels)
        self._subscribed = set(self._channels)
        waits = []
        if add:
            waits.append(self._guard(sub.request("SUBSCRIBE", *add), "SUBSCRIBE"))
        if drop:
            waits.append(self._guard(sub.request("UNSUBSCRIBE", *drop), "UNSUBSCRIBE"))
        # an outage is the link's business (on_down, resubscribe on on_up), not the caller's
        return gatherResults(waits, consumeErrors=True).addBoth(_nothing)

    def _guard(self, d: Deferred[Any], what: str) -> Deferred[Any]:
        """Bound a request by ``timeout``; no answer means Redis is wedged: drop the link."""

        def map_error(failure: Failure) -> Failure:
            if failure.check(CancelledError, DeferredTimeout, TxTimeoutError):
                self._went_down(f"no answer to {what} in {self.timeout:g} s")
                return Failure(ClusterUnavailable("cluster unavailable: Redis did not answer"))
            return failure

        d.addTimeout(self.timeout, self.reactor)
        return d.addErrback(map_error)

    # -- connecting -------------------------------------------------------------------

    def _connect(self) -> None:
        self._retry = None
        self._state = "connecting"
        d = Deferred.fromCoroutine(self._open())
        self._connecting = d
        d.addCallbacks(self._opened, self._failed)

    async def _open(self) -> None:
        endpoint = HostnameEndpoint(self.reactor, self.host, self.port, timeout=self.timeout)
        cmd = _Commands(self._protocol_lost)
        await endpoint.connect(_OneShot(cmd))
        self._commands = cmd
        await self._guard(cmd.execute("SELECT", self.db), "SELECT")
        sub = _Subscriber(self._protocol_lost, self._received)
        await endpoint.connect(_OneShot(sub))
        self._subscriber = sub
        wanted = sorted(self._channels)
        if wanted:
            await self._guard(sub.request("SUBSCRIBE", *wanted), "SUBSCRIBE")
        else:
            await self._guard(sub.request("PING"), "PING")
        self._subscribed = set(wanted)

    def _opened(self, _: None) -> None:
        self._connecting = None
        if self._state != "connecting":
            return
        self._state = "up"
        self._attempt = 0
        if self._logged or not self._was_up:
            _log.info("cluster: connected to {address}", address=self.address)
        self._logged = False
        self._was_up = True
        self._sync()  # channels added while the connect was under way
        self._safely(self.on_up)

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if self._state != "connecting":
            return  # stopped, or the failure came with an outage already handled
        self._drop()
        lost = failure.check(CancelledError)  # _protocol_lost cancelled a half-open attempt
        self._log_down("connection lost" if lost else failure.getErrorMessage() or repr(failure))
        self._state = "waiting"
        self._schedule()

    def _schedule(self) -> None:
        delay = backoff(self._attempt)
        self._attempt += 1
        self._retry = self.reactor.callLater(delay, self._connect)

    def _protocol_lost(self, proto: _Connection) -> None:
        if proto is not self._commands and proto is not self._subscriber:
            return  # one we dropped already
        if self._state == "up":
            self._went_down(proto.why)
        elif self._state == "connecting" and self._connecting is not None:
            self._connecting.cancel()  # half open: _failed closes the other and retries

    def _went_down(self, why: str) -> None:
        """An outage while up: once, whichever of the connections noticed first."""
        if self._state != "up":
            return
        self._state = "waiting"
        self._drop()
        self._log_down(why)
        self._safely(self.on_down)
        if self._state == "waiting" and self._retry is None:
            self._schedule()

    def _drop(self) -> list[_Commands | _Subscriber]:
        """Forget both connections and close them; returns the ones that were open."""
        protos = [p for p in (self._commands, self._subscriber) if p is not None]
        self._commands = self._subscriber = None
        self._subscribed = set()
        for p in protos:
            if p.transport is not None and not p.gone.called:
                p.transport.abortConnection()
        return [p for p in protos if not p.gone.called]

    def _log_down(self, why: str) -> None:
        if self._logged:
            return
        self._logged = True
        _log.warn(
            "cluster: {address} unavailable ({why}); acting locally, reconnecting",
            address=self.address,
            why=why,
        )

    # -- callbacks --------------------------------------------------------------------

    def _received(self, channel: bytes, data: bytes) -> None:
        self._safely(self.on_message, channel.decode("utf-8", "replace"), data)

    def _safely(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            _log.failure("cluster: the {name} callback failed", name=getattr(fn, "__name__", fn))
