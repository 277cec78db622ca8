"""One node's connections to Redis: commands, Lua scripts, publish and subscribe, reconnects.

The cluster must never make a user wait on Redis: a command fails at once with
:class:`ClusterUnavailable` while the link is down, and within ``timeout`` seconds
when Redis does not answer (a paused or wedged server), so callers fall back to
local behaviour (``write: cluster unavailable``) instead of hanging.

Two connections: one for commands (request, reply, in order) and one in
subscriber mode (RESP2 allows nothing but (UN)SUBSCRIBE and PING on it). Each is
kept by its own Twisted ``ClientService``: it connects through a client endpoint
(built from the URL: TCP, TLS with the server's certificate and name checked, or a unix
socket; :func:`endpoint_for`), runs ``prepareConnection`` (``AUTH`` when the URL has a
password, then SELECT on the command connection, SUBSCRIBE again on the subscriber) and
retries on ``backoffPolicy`` (0.1 s doubling
to 5 s, jittered). The link is *up* only when both are prepared, and losing either
is an outage: :mod:`shellserver.hub.cluster.linkstate` is the machine that says so
(its table lists every state and transition). The wire format is
:mod:`shellserver.hub.cluster.resp` (each read is parsed completely in the reactor turn
it arrived in).

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
import math
import random
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from attrs import define, field
from OpenSSL.SSL import Error as SSLError
from service_identity import VerificationError
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.abstract import isIPAddress, isIPv6Address
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
from twisted.internet.endpoints import (
    HostnameEndpoint,
    UNIXClientEndpoint,
    clientFromString,
    quoteStringArgument,
    wrapClientTLS,
)
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.error import TimeoutError as TxTimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import Logger, LogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from shellserver.hub.cluster.linkstate import LinkInputs, LinkMachine
from shellserver.hub.cluster.resp import Arg, ProtocolError, Reader, encode
from shellserver.hub.cluster.resp import (
    RedisReplyError as RedisReplyError,  # where callers find it
)
from shellserver.hub.cluster.url import RedisURL
from shellserver.hub.local import ClusterUnavailable as ClusterUnavailable  # where callers find it

_log = Logger()

TIMEOUT = 2.0
#: While the link stays down, the "unavailable" line is said again at most this often (a
#: wrong password is an outage that lasts until an operator notices).
REMIND = 60.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0

#: The nominal delays: 0.1 s doubling to 5 s (jitter is applied by :func:`backoff`).
_curve = backoffPolicy(BACKOFF_FIRST, BACKOFF_MAX, 2.0, jitter=lambda: 0.0)


def _nothing(*_: object) -> None:
    return None


def backoff(attempt: int) -> float:
    """Seconds before reconnect attempt ``attempt`` (0 first): 0.1 doubling to 5, jittered
    down by up to a quarter so that nodes restarted together do not reconnect in step.
    (``backoffPolicy``'s own jitter adds up to a second, which would swamp 0.1 s.)"""
    return _curve(attempt) * random.uniform(0.75, 1.0)


def _retry_policy(failed: int) -> float:
    """ClientService counts failed attempts from 1; :func:`backoff` from 0."""
    return backoff(failed - 1)


def endpoint_description(url: RedisURL, timeout: float) -> str:
    """The client endpoint string for ``url`` (``tcp:host=...:port=...:timeout=...``);
    another transport (TLS, a unix socket) is another string, nothing else changes."""
    host = quoteStringArgument(url.host)
    return f"tcp:host={host}:port={url.port}:timeout={max(1, math.ceil(timeout))}"


def endpoint_for(reactor: Any, url: RedisURL, timeout: float) -> IStreamClientEndpoint:
    """Where the link connects: an address through its endpoint string; a host name through
    ``HostnameEndpoint``, which (unlike ``tcp:``, IPv4 only) tries every address the name has,
    IPv6 and IPv4, as the link did before it ran on ``ClientService``; a unix socket by its
    path. ``rediss://`` puts TLS over the TCP endpoint (:func:`tls_options`).

    Raises ValueError when the CA file of ``?ca=`` cannot be read."""
    seconds = max(1, math.ceil(timeout))
    if url.scheme == "unix":
        return UNIXClientEndpoint(reactor, url.path, timeout=seconds)
    endpoint: IStreamClientEndpoint
    if isIPAddress(url.host) or isIPv6Address(url.host):
        endpoint = clientFromString(reactor, endpoint_description(url, timeout))
    else:
        endpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=seconds)
    if url.tls:
        endpoint = wrapClientTLS(tls_options(url), endpoint)
    return endpoint


def tls_options(url: RedisURL) -> Any:
    """TLS client options for ``rediss://``: the server's certificate must chain to the CA of
    ``?ca=FILE`` (else to the system's trusted authorities) and name the URL's host (a name,
    or an IP address in the certificate's subjectAltName), as any TLS client checks.

    Raises ValueError naming the file when it cannot be read or holds no PEM certificate."""
    root = None
    if url.ca is not None:
        try:
            with open(url.ca, "rb") as f:
                pem = f.read(1024 * 1024)
            root = Certificate.loadPEM(pem)
        except OSError as e:
            raise ValueError(f"cannot read the CA file {url.ca}: {e.strerror}") from None
        except Exception:
            raise ValueError(f"the CA file {url.ca} holds no PEM certificate") from None
    return optionsForClientTLS(url.host, trustRoot=root)


def _auth_hint(why: str) -> str:
    """Redis's refusal of ``AUTH`` (or of a command without it), with what to check: the
    words differ between versions and say nothing of where the password comes from."""
    if why.startswith(("WRONGPASS", "NOAUTH", "ERR invalid password", "ERR AUTH", "NOPERM")):
        return f"{why.rstrip('.')}: check the user and password in the cluster URL"
    return why


class _Connection(Protocol):
    """One connection to Redis: commands out, each read's replies handed to
    :meth:`replyReceived` in order, all within the turn the read came in.

    :meth:`prepare` is its ClientService's ``prepareConnection``; once that succeeded the
    connection is *accepted*: its ClientService owns it (reconnects when it is lost)."""

    transport: Any  # a TCP transport (write, abortConnection) once connected
    #: the handshake's command, named in the log when Redis does not answer it
    what = "?"

    def __init__(self, link: RedisLink) -> None:
        self._reader = Reader()
        self.link = link
        self.gone: Deferred[None] = Deferred()
        self.accepted = False
        #: why we closed it: the server is not speaking RESP2 (not Redis, or a broken one)
        self.broken = ""
        #: why the connection was lost, when it says more than "lost" (a TLS failure)
        self.lost = ""

    @property
    def why(self) -> str:
        """The reason the link's one "unavailable" line gives, so an operator can tell a
        server that is not Redis from a lost connection."""
        if self.broken:
            return f"not RESP2 from the server: {self.broken}"
        return self.lost or "connection lost"

    def connectionMade(self) -> None:
        """Counted as open at once, so that a stop closes it even before it is prepared."""
        self.link._opened(self)

    def dataReceived(self, data: bytes) -> None:
        """Every reply in these bytes is handled in this turn; bytes that are not RESP2
        close the connection, since nothing after them can be trusted."""
        try:
            replies = self._reader.feed(data)
        except ProtocolError as e:
            self.broken = str(e)  # said in the link's one "unavailable" line
            self.transport.abortConnection()
            return
        for reply in replies:
            self.replyReceived(reply)

    def replyReceived(self, reply: Any) -> None:
        """Each kind of connection matches replies to its requests its own way."""
        raise NotImplementedError

    def handshake(self) -> Deferred[None]:
        """What makes a new connection usable (SELECT, SUBSCRIBE)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close without waiting for a flush: Redis being slow is why we close."""
        if self.connected and self.transport is not None:
            self.transport.abortConnection()

    def prepare(self) -> Deferred[None]:
        """The handshake, bounded by the link's timeout. Fires once the ClientService may
        have the connection; fails (and closes it: ClientService leaves a connection it
        refused open) on an error reply, a timeout or a loss, so that the service counts a
        failed attempt and backs off. Tells the link after the service took it."""
        ready: Deferred[None] = Deferred(lambda _: self.abort())  # cancelled: stopping
        timeout = self.link.timeout

        def accepted(_: None) -> None:
            if ready.called:
                return  # stopped meanwhile
            self.accepted = True
            ready.callback(None)  # the ClientService is in "connected" when this returns
            if self.connected:
                self.link._ready(self)

        def refused(failure: Failure) -> None:
            self.abort()
            if failure.check(CancelledError, DeferredTimeout, TxTimeoutError):
                why = f"no answer to {self.what} in {timeout:g} s"
            elif failure.check(ClusterUnavailable):
                why = self.why
            else:
                why = _auth_hint(failure.getErrorMessage() or repr(failure))
            if not ready.called:  # else cancelled: the link is stopping, nothing to say
                ready.errback(failure)
                self.link._failed(why)

        self.handshake().addTimeout(timeout, self.link.reactor).addCallbacks(accepted, refused)
        return ready

    def failAll(self) -> None:
        """The connection is gone: every request still waiting fails."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Waiting callers fail now instead of at their timeout, and the link learns
        it lost a connection (an outage if it was prepared)."""
        self.connected = False
        if reason.check(SSLError):
            self.lost = f"TLS failed: {_tls_reason(reason.value)}"
        elif reason.check(VerificationError):
            self.lost = f"TLS failed: the certificate does not name {self.link.target.host}"
        self.failAll()
        self.gone.callback(None)
        self.link._lost(self)


class _Commands(_Connection):
    """The command connection: requests answered in order, one reply each.

    A request sent through :meth:`RedisLink.call` must be answered within the link's
    timeout. Since Redis answers in order, only the oldest request still waiting can be the
    first to run out: one timer per connection (:meth:`_sweep`), set for the oldest
    request's deadline, watches them all, instead of a timer made and cancelled for every
    command (that was a tenth of a cross-node write's CPU on the sending node)."""

    what = "SELECT"

    def __init__(self, link: RedisLink) -> None:
        super().__init__(link)
        #: Each request waiting for its reply, oldest first: its Deferred, its deadline
        #: (``inf`` for the handshake's, which ``prepare`` bounds) and its command's name.
        self._waiting: deque[tuple[Deferred[Any], float, Arg]] = deque()
        self._timer: IDelayedCall | None = None

    def handshake(self) -> Deferred[None]:
        """A reconnected connection is on db 0 and not authenticated: ``AUTH`` (when the URL
        has a password), then select the cluster's db before use."""
        auth = self.link.target.auth()
        if not auth:
            return self.execute("SELECT", self.link.db).addCallback(_nothing)
        self.what = "AUTH"

        def select(_: object) -> Deferred[None]:
            self.what = "SELECT"
            return self.execute("SELECT", self.link.db).addCallback(_nothing)

        return self.execute("AUTH", *auth).addCallback(select)

    def execute(self, *args: Arg) -> Deferred[Any]:
        """Send one command, not timed here (the handshake's are bounded by ``prepare``);
        fires with its reply, or fails with RedisReplyError."""
        if not self.connected:
            return fail(ClusterUnavailable("cluster unavailable"))
        data = encode(args)  # TypeError for a bad argument, before anything is queued
        d: Deferred[Any] = Deferred()
        self._waiting.append((d, math.inf, ""))
        self.transport.write(data)
        return d

    def timed(self, args: tuple[Arg, ...]) -> Deferred[Any]:
        """Send one command that must be answered within the link's timeout, else it fails
        with ClusterUnavailable and the link is dropped (Redis is wedged)."""
        if not self.connected:
            return fail(ClusterUnavailable("cluster unavailable"))
        data = encode(args)  # TypeError for a bad argument, before anything is queued
        d: Deferred[Any] = Deferred()
        link = self.link
        self._waiting.append((d, link.reactor.seconds() + link.timeout, args[0]))
        self.transport.write(data)
        if self._timer is None:
            self._timer = link.reactor.callLater(link.timeout, self._sweep)
        return d

    def _sweep(self) -> None:
        """The oldest requests' deadlines: those past it fail (after the link is told, as a
        timed-out request always did), and the timer is set again for the next one."""
        self._timer = None
        now = self.link.reactor.seconds()
        late: list[Deferred[Any]] = []
        what: Arg = ""
        for d, deadline, name in self._waiting:
            if d.called:
                continue  # failed before (a late reply is skipped when it comes)
            if deadline > now:
                if deadline != math.inf:
                    self._timer = self.link.reactor.callLater(deadline - now, self._sweep)
                break
            late.append(d)
            what = what or name
        if not late:
            return
        self.link._no_answer(self, str(what))
        for d in late:
            if not d.called:
                d.errback(ClusterUnavailable("cluster unavailable: Redis did not answer"))

    def replyReceived(self, reply: Any) -> None:
        """Redis answers in order, so the oldest waiting request gets this reply."""
        if not self._waiting:
            return  # nothing asked: cannot happen with Redis, and must not raise here
        d = self._waiting.popleft()[0]
        if d.called:
            return  # it timed out (or was cancelled): too late for its caller
        if isinstance(reply, RedisReplyError):
            d.errback(reply)
        else:
            d.callback(reply)

    def failAll(self) -> None:
        """Requests sent on a lost connection will never be answered: fail them now."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, deque()
        for d, _, _ in waiting:
            if not d.called:
                d.errback(ClusterUnavailable(f"cluster unavailable: {self.why}"))


class _Subscriber(_Connection):
    """The subscriber connection. Redis answers ``SUBSCRIBE a b`` with one confirmation
    per channel, interleaved with messages, so this counts them: a request's Deferred fires
    with its last one."""

    def __init__(self, link: RedisLink) -> None:
        super().__init__(link)
        self._message = link._received
        self._expect: deque[tuple[Deferred[None], list[int]]] = deque()
        #: the channels this connection's handshake subscribed
        self.subscribed: set[str] = set()

    def handshake(self) -> Deferred[None]:
        """A new subscriber connection hears nothing until it subscribes again (PING
        when there is nothing to subscribe, to check that Redis answers)."""
        wanted = sorted(self.link._channels)
        auth = self.link.target.auth()

        def subscribe(_: object) -> Deferred[None]:
            self.what = "SUBSCRIBE" if wanted else "PING"
            return self.request(self.what, *wanted)

        def done(_: None) -> None:
            self.subscribed = set(wanted)

        if auth:
            self.what = "AUTH"
            d = self.request("AUTH", *auth, replies=1).addCallback(subscribe)
        else:
            d = subscribe(None)
        return d.addCallback(done)

    def request(self, *args: Arg, replies: int = 0) -> Deferred[None]:
        """Send ``SUBSCRIBE``/``UNSUBSCRIBE`` with channels (a reply per channel), ``PING``,
        or ``AUTH`` (``replies=1``)."""
        if not self.connected:
            return fail(ClusterUnavailable("cluster unavailable"))
        data = encode(args)
        d: Deferred[None] = Deferred()
        self._expect.append((d, [replies or max(1, len(args) - 1)]))
        self.transport.write(data)
        return d

    def replyReceived(self, reply: Any) -> None:
        """Messages go to the link at once; confirmations are counted off the oldest
        request, since Redis sends one per channel."""
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
        """Subscriptions asked on a lost connection will never be confirmed: fail them now."""
        expect, self._expect = self._expect, deque()
        for d, _ in expect:
            d.errback(ClusterUnavailable(f"cluster unavailable: {self.why}"))


class _Build(Factory):
    """Builds one kind of connection for its ClientService, and remembers the last one (the
    one being connected: a ClientService makes one attempt at a time). Quiet: Factory
    logs "Starting factory" on each attempt, and a node retrying every few seconds would
    flood the log."""

    noisy = False

    def __init__(self, make: Callable[[], _Connection]) -> None:
        self._make = make
        self.built: _Connection | None = None

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        """Remembered so the gate can put itself in front of this very connection."""
        proto = self._make()
        proto.factory = self
        self.built = proto
        return proto


class _Gate(Protocol):
    """Between the endpoint and ClientService's protocol proxy. ClientService (Twisted 26.10)
    has no transition for the loss of a connection it never accepted (one whose
    ``prepareConnection`` failed, or that was lost during it): its proxy would raise
    ``NoTransition`` out of ``connectionLost``. So until the connection is accepted its
    loss goes to our protocol alone (``prepare`` already failed the attempt); after, to
    the proxy, which tells the service. Reads go straight to our protocol."""

    def __init__(self, client: IProtocol, inner: _Connection) -> None:
        self.client = client  # ClientService's proxy around ``inner``
        self.inner = inner

    def makeConnection(self, transport: ITransport) -> None:
        """ClientService's proxy must see the transport to own the connection."""
        self.connected = True
        self.transport = transport
        self.client.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        """Reads skip the proxy: one call less per read on the message path."""
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Only an accepted connection's loss is ClientService's business (see the class)."""
        self.connected = False
        if self.inner.accepted:
            self.client.connectionLost(reason)
        else:
            self.inner.connectionLost(reason)


class _Gates(Factory):
    noisy = False

    def __init__(self, client: IProtocolFactory, build: _Build) -> None:
        self._client = client
        self._build = build

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        """One gate per connection, around the protocol that _Build just made."""
        if addr is None:  # endpoints always say where the connection goes
            return None
        client = self._client.buildProtocol(addr)  # our protocol, in ClientService's proxy
        inner = self._build.built
        if client is None or inner is None:
            return None
        return _Gate(client, inner)


@implementer(IStreamClientEndpoint)
class _GatedEndpoint:
    """The endpoint a ClientService connects through: the real one, with a :class:`_Gate`
    on each connection, and failed attempts reported to the link (ClientService only
    retries them, quietly)."""

    def __init__(
        self, endpoint: IStreamClientEndpoint, build: _Build, failed: Callable[[str], None]
    ) -> None:
        self._endpoint = endpoint
        self._build = build
        self._failed = failed

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """ClientService retries quietly; the link must hear of a failed attempt to say
        the outage once."""

        def opened(gate: _Gate) -> IProtocol:
            return gate.client

        def failed(failure: Failure) -> Failure:
            if not failure.check(CancelledError, ConnectingCancelledError):  # not stopping
                self._failed(failure.getErrorMessage() or repr(failure))
            return failure

        d = self._endpoint.connect(_Gates(protocolFactory, self._build))
        return d.addCallbacks(opened, failed)


class _Service(ClientService):
    """A ClientService that keeps quiet: its own logger says "Scheduling retry N ..." on
    every attempt, and the link says one line per outage (repeated once a minute while it
    lasts) instead."""

    _log = Logger(observer=LogPublisher())


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
        """Run the script by hash, sending its source only when Redis has lost it, so the
        usual call carries a few bytes instead of the whole script."""
        tail = (len(keys), *keys, *args)
        return self.link.call("EVALSHA", self.sha, *tail).addErrback(self._again, tail)

    def _again(self, failure: Failure, tail: tuple[Arg, ...]) -> Deferred[Any] | Failure:
        """``NOSCRIPT``: Redis lost the script (restarted, flushed); send its source."""
        if failure.check(RedisReplyError) and str(failure.value).startswith("NOSCRIPT"):
            return self.link.call("EVAL", self.source, *tail)
        return failure


def _is_reactor(_inst: Any, _attr: Any, value: Any) -> None:
    if not (IReactorTCP.providedBy(value) and IReactorTime.providedBy(value)):
        raise TypeError("RedisLink needs a reactor with IReactorTCP and IReactorTime")


@define(eq=False)
class RedisLink:
    """A node's link to Redis. :meth:`start` connects and keeps reconnecting (0.1 s doubling
    to 5 s) until :meth:`stop`. ``on_up`` runs each time the link becomes usable, after the
    subscriptions are in place, so the caller can republish its state; ``on_down`` once per
    outage (not on :meth:`stop`, nor when the first connection fails: the link starts down).
    ``on_message(channel, payload)`` gets every message on a subscribed channel while the
    link is up. Exceptions from the callbacks are logged, never raised into the reactor.

    Its life is :mod:`shellserver.hub.cluster.linkstate`'s machine (``state`` names where it
    is); this class is what the machine drives: two ClientServices and their connections.
    """

    host: str
    port: int
    db: int
    #: Both IReactorTCP (connecting) and IReactorTime (timeouts, backoff).
    reactor: IReactorTime = field(validator=_is_reactor)
    on_up: Callable[[], None]
    on_down: Callable[[], None]
    on_message: Callable[[str, bytes], None]
    timeout: float = TIMEOUT
    #: The whole URL (TLS, unix socket, AUTH); by default plain TCP to host, port and db.
    url: RedisURL | None = None

    #: Where the machine is: stopped, connecting, up or down (written by its transitions).
    state: str = field(default="stopped", init=False)
    _machine: LinkInputs = field(init=False)
    _services: list[ClientService] = field(factory=list, init=False)
    #: The prepared connections (both, while up; one or none while connecting or down).
    _commands: _Commands | None = field(default=None, init=False)
    _subscriber: _Subscriber | None = field(default=None, init=False)
    #: Every connection made and not yet lost, prepared or not.
    _open: set[_Connection] = field(factory=set, init=False)
    _stopping: list[Deferred[None]] = field(factory=list, init=False)
    #: What the caller wants subscribed, and what Redis has confirmed on this connection.
    _channels: set[str] = field(factory=set, init=False)
    _subscribed: set[str] = field(factory=set, init=False)
    #: When the "unavailable" line was last said (see :data:`REMIND`).
    _said_at: float = field(default=0.0, init=False)
    _target: RedisURL = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._machine = LinkMachine(self)
        self._target = self.url or RedisURL(self.host, self.port, self.db)
        endpoint = endpoint_for(self.reactor, self._target, self.timeout)
        for make in (lambda: _Commands(self), lambda: _Subscriber(self)):
            build = _Build(make)
            self._services.append(
                _Service(
                    _GatedEndpoint(endpoint, build, self._failed),
                    build,
                    retryPolicy=_retry_policy,
                    clock=self.reactor,
                    prepareConnection=_prepare,
                )
            )

    @property
    def available(self) -> bool:
        """Connected, selected and subscribed: commands are sent now."""
        return self.state == "up"

    @property
    def address(self) -> str:
        """How log lines name the Redis server: the canonical URL, its password hidden."""
        return str(self._target)

    @property
    def target(self) -> RedisURL:
        """Where the link connects and who it is there (``url``, or host, port and db)."""
        return self._target

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Connect, and keep reconnecting until :meth:`stop`."""
        self._machine.start()

    def stop(self) -> Deferred[None]:
        """Stop reconnecting and close the connections; fires once both are closed.
        Calls still waiting fail with ClusterUnavailable."""
        d: Deferred[None] = Deferred()
        self._stopping.append(d)
        self._machine.stop()
        return d

    # -- commands ---------------------------------------------------------------------

    def call(self, *args: Arg) -> Deferred[Any]:
        """One Redis command, e.g. ``call("HSET", key, field, value)``; fails with
        ClusterUnavailable when the link is down or Redis does not answer in time."""
        proto = self._commands
        if self.state != "up" or proto is None:
            return fail(ClusterUnavailable("cluster unavailable"))
        try:
            return proto.timed(args)
        except Exception:
            return fail()

    def script(self, source: str) -> Script:
        """A Lua script, run by its SHA1 once Redis has it (:class:`Script`)."""
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
        """Drop channels (at once while the link is down: the next connection skips them)."""
        self._channels.difference_update(channels)
        return self._sync()

    def _sync(self) -> Deferred[None]:
        sub = self._subscriber
        if self.state != "up" or sub is None:
            return succeed(None)
        add = sorted(self._channels - self._subscribed)
        drop = sorted(self._subscribed - self._channels)
        self._subscribed = set(self._channels)
        waits = []
        if add:
            waits.append(self._guard(sub.request("SUBSCRIBE", *add), "SUBSCRIBE", sub))
        if drop:
            waits.append(self._guard(sub.request("UNSUBSCRIBE", *drop), "UNSUBSCRIBE", sub))
        # an outage is the link's business (on_down, resubscribe on on_up), not the caller's
        return gatherResults(waits, consumeErrors=True).addBoth(_nothing)

    def _no_answer(self, proto: _Connection, what: str) -> None:
        """A request on ``proto`` was not answered in time: Redis is wedged, drop the link
        (unless ``proto`` was dropped already)."""
        if proto is self._commands or proto is self._subscriber:
            self._machine.failed(f"no answer to {what} in {self.timeout:g} s")

    def _guard(self, d: Deferred[Any], what: str, proto: _Connection) -> Deferred[Any]:
        """Bound a subscriber's request by ``timeout`` (a command's is bounded by its
        connection's sweep); no answer means Redis is wedged: drop the link."""

        def map_error(failure: Failure) -> Failure:
            if failure.check(CancelledError, DeferredTimeout, TxTimeoutError):
                self._no_answer(proto, what)
                return Failure(ClusterUnavailable("cluster unavailable: Redis did not answer"))
            return failure

        d.addTimeout(self.timeout, self.reactor)
        return d.addErrback(map_error)

    # -- what the connections report ----------------------------------------------------

    def _opened(self, proto: _Connection) -> None:
        self._open.add(proto)

    def _ready(self, proto: _Connection) -> None:
        """``proto`` is prepared and its ClientService has it."""
        if isinstance(proto, _Commands):
            self._commands = proto
        elif isinstance(proto, _Subscriber):
            self._subscriber = proto
            self._subscribed = set(proto.subscribed)
        if self._commands is not None and self._subscriber is not None:
            self._machine.connected()

    def _failed(self, why: str) -> None:
        """An attempt failed: not connected, or not prepared. While the link stays down the
        line is said again once every :data:`REMIND` seconds, so an outage that lasts (a
        wrong password) is still in the recent log."""
        if self.state == "down" and self.reactor.seconds() - self._said_at >= REMIND:
            self._log_down(why, "still ")
        self._machine.failed(why)

    def _lost(self, proto: _Connection) -> None:
        self._open.discard(proto)
        if proto is self._commands:
            self._commands = None
        elif proto is self._subscriber:
            self._subscriber = None
            self._subscribed = set()
        else:
            return  # not prepared (prepare reports it), or already dropped
        self._machine.failed(proto.why)

    # -- what the machine does (shellserver.hub.cluster.linkstate.LinkCore) ----------------

    def _connect(self) -> None:
        for service in self._services:
            service.startService()

    def _close(self) -> None:
        waits = [service.stopService() for service in self._services]
        self._drop()
        for proto in list(self._open):
            proto.abort()  # one being prepared (stopService cancels it too)
        waits += [proto.gone for proto in self._open]
        stopping, self._stopping = self._stopping, []

        def closed(_: object) -> None:
            for d in stopping:
                d.callback(None)

        gatherResults(waits, consumeErrors=True).addBoth(closed)

    def _drop(self) -> None:
        """Forget both prepared connections and close them."""
        protos = [p for p in (self._commands, self._subscriber) if p is not None]
        self._commands = self._subscriber = None
        self._subscribed = set()
        for p in protos:
            p.abort()

    def _went_up(self) -> None:
        _log.info("cluster: connected to {address}", address=self.address)
        self._sync()  # channels added while the connections were being prepared
        self._safely(self.on_up)

    def _went_down(self) -> None:
        self._safely(self.on_down)

    def _log_down(self, why: str, still: str = "") -> None:
        self._said_at = self.reactor.seconds()
        _log.warn(
            "cluster: {address} {still}unavailable ({why}); acting locally, reconnecting",
            address=self.address,
            still=still,
            why=why,
        )

    # -- callbacks --------------------------------------------------------------------

    def _received(self, channel: bytes, data: bytes) -> None:
        if self.state == "up":
            self._safely(self.on_message, channel.decode("utf-8", "replace"), data)

    def _safely(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            _log.failure("cluster: the {name} callback failed", name=getattr(fn, "__name__", fn))


def _tls_reason(error: object) -> str:
    """OpenSSL's reason in a few words (its last: ``certificate verify failed``), not its
    list of tuples."""
    args = getattr(error, "args", ())
    if args and isinstance(args[0], list):
        reasons = [str(item[2]) for item in args[0] if isinstance(item, tuple) and len(item) == 3]
        if reasons and reasons[-1]:
            return reasons[-1]
    return str(error) or type(error).__name__


def _prepare(client: IProtocol) -> Deferred[None]:
    """ClientService's ``prepareConnection``: it hands over its proxy, which passes
    attribute lookups on to our protocol."""
    return cast(_Connection, client).prepare()
