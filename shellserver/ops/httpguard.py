"""Bounded HTTP for the page (``--web``), the personal pages (``--pages``) and the metrics.

``twisted.web`` answers pipelined requests one after the other, but it writes
each answer into the transport as soon as it is rendered: a client that sends
a thousand ``GET``\\ s and never reads gets a thousand copies of xterm.js held
for it in the server's memory, rendered in one reactor turn. Here each
connection has at most one response in flight (:class:`BoundedChannel`): the
transport pauses us as soon as it holds any of a response (its ``bufferSize``
is 0 for a plain HTTP connection), the next pipelined request waits until the
client has taken the previous response, and nothing more is read meanwhile.

:class:`Guard` counts the connections of one listener, in total and per
address, and keeps the clocks that stop slow clients from holding a slot:

- a request (headers and body) must arrive within :data:`REQUEST_TIMEOUT`
  of the moment the connection is ready for it (opened, or the previous
  response taken), and a response must be taken within
  :data:`RESPONSE_TIMEOUT`; both shorten linearly to :data:`MIN_TIMEOUT`
  from half of the total cap on (as the login grace does), for the waiting
  ones too;
- when the total is reached, a newcomer from an address holding fewer
  connections than the busiest address takes the place of that address's
  oldest connection that is not being answered, so many slow connections
  from a few addresses (slowloris) cannot keep a clean address off the page.

One timer sweeps the oldest connections of each clock (they are kept in the
order they started waiting), so the cost is one check a sweep, not a timer
per connection.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import abstract
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from shellserver.ops.sockets import cap_send_buffer

#: Seconds a connection may take to send a whole request once it is ready for one.
REQUEST_TIMEOUT = 10.0
#: Seconds a client may take to read a response (xterm.js is ~480 KiB).
RESPONSE_TIMEOUT = 30.0
#: What both shorten to when the listener is full.
MIN_TIMEOUT = 2.0
#: How often the oldest connections are checked against their deadline.
SWEEP = 0.5

BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nContent-Length: 42\r\n\r\n"
    b"Too many connections; try again later.\r\n\r\n"
)


def socket_transport(transport: Any) -> abstract.FileDescriptor | None:
    """The file descriptor under wrappers (our counter, TLS), or None (a test transport)."""
    for _ in range(4):
        if isinstance(transport, abstract.FileDescriptor):
            return transport
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def shorten(base: float, pressure: float | None) -> float:
    """``base`` under no pressure, down to :data:`MIN_TIMEOUT` at full pressure."""
    if pressure is None or base <= MIN_TIMEOUT:
        return base
    return base - (base - MIN_TIMEOUT) * pressure


class BoundedChannel(HTTPChannel):
    """An HTTP connection with one response in flight: the next request waits until it is taken.

    ``_parked`` is set when a response is done but the transport still holds
    some of it (it paused us): the next pipelined request is not parsed, and
    the connection is not read, until the transport resumes us.
    """

    _parked = False

    @property
    def _entry(self) -> Counted | None:
        transport = self.transport
        return transport if isinstance(transport, Counted) else None

    def allContentReceived(self) -> None:
        """A whole request is in: its request clock stops while it is being answered, so a slow
        page render never counts against the client."""
        entry = self._entry
        if entry is not None:
            entry.busy()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        """Twisted would parse the next pipelined request here whether or not the client took
        this answer: park instead while the transport still holds some of it."""
        entry = self._entry
        if self._waitingForTransport and self.persistent and request is self.requests[0]:
            # Answered, but not yet taken: park until the transport resumes us.
            del self.requests[0]
            self._parked = True
            self._networkProducer.pauseProducing()
            if entry is not None:
                entry.draining()
            return
        if entry is not None:
            # Before super(): it may parse (and answer) the next request. A last response
            # (Connection: close) must still be taken in time: the socket closes after it.
            if self.persistent:
                entry.waiting()
            else:
                entry.draining()
        super().requestDone(request)

    def resumeProducing(self) -> None:
        """The transport has sent everything: unpark, and parse the requests that arrived
        meanwhile (they were kept, unparsed), the way ``HTTPChannel`` does after an answer."""
        super().resumeProducing()
        if not self._parked or self._waitingForTransport or self.transport is None:
            return
        self._parked = False
        entry = self._entry
        if entry is not None:
            entry.waiting()
        self._handlingRequest = False
        if self._savedTimeOut:
            self.setTimeout(self._savedTimeOut)
        self._networkProducer.resumeProducing()
        data = b"".join(self._dataBuffer)
        self._dataBuffer = []
        self.setLineMode(data)


class BoundedSite(Site):
    """A ``Site`` whose connections are :class:`BoundedChannel`\\ s, with no access log."""

    protocol = BoundedChannel  # type: ignore[assignment]
    noisy = False

    def log(self, request: Any) -> None:
        """No access log: a flood of requests must not become a flood of log lines."""


class Counted(ProtocolWrapper):
    """One HTTP connection in its :class:`Guard`: counted until it closes or is handed on."""

    factory: Guard
    peer = ""
    counted = False
    #: Which clock runs for it: "request", "response", or "" (being answered, or not counted).
    stage = ""
    #: A response is held by a transport that pauses at its first byte (see :meth:`bound`).
    _bounded = False

    def makeConnection(self, transport: Any) -> None:
        """Counted before the channel serves anything: a refused connection gets the 503 at
        once and is closed, with no clock started for it."""
        self.peer = getattr(transport.getPeer(), "host", None) or "local"
        self.counted = self.factory.enter(self)
        if not self.counted:
            super().makeConnection(transport)
            transport.write(self.factory.busy)
            transport.loseConnection()
            return
        cap_send_buffer(transport)
        self.bound(True)
        super().makeConnection(transport)
        self.waiting()

    def bound(self, on: bool) -> None:
        """Pause the channel at the first byte its transport holds (on), or at Twisted's 64 KiB."""
        fd = socket_transport(self.transport)
        if fd is None or on == self._bounded:
            return
        self._bounded = on
        if on:
            fd.bufferSize = 0
        else:
            del fd.bufferSize  # the class's own again

    def waiting(self) -> None:
        """Ready for a request (opened, or the last answer taken): the request clock runs."""
        self.factory.clock_for(self, "request")

    def draining(self) -> None:
        """Answered but not taken: the response clock runs, so a client that never reads goes."""
        self.factory.clock_for(self, "response")

    def busy(self) -> None:
        """Being answered: no clock runs, since the delay is ours, not the client's."""
        self.factory.clock_for(self, "")

    def expire(self) -> None:
        """Too slow (or displaced): the slot is free at once, the socket aborted."""
        self.handed_on()
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def handed_on(self) -> None:
        """No longer an HTTP connection of this guard (it became a WebSocket, or is gone)."""
        if self.counted:
            self.counted = False
            self.factory.leave(self)
        self.bound(False)

    def connectionLost(self, reason: Any = None) -> None:
        """The slot is given back before the channel's own cleanup, whatever closed it."""
        self.handed_on()
        super().connectionLost(reason)


class Guard(WrappingFactory):
    """The connections of one HTTP listener: at most ``total``, ``per_address`` from one address.

    0 means unlimited. The clocks and the displacement are described in the
    module's docstring; ``clock`` is the reactor (a ``Clock`` in tests).
    """

    protocol = Counted
    noisy = False

    def __init__(
        self,
        site: Site,
        clock: IReactorTime,
        total: int,
        per_address: int,
        request_timeout: float = REQUEST_TIMEOUT,
        response_timeout: float = RESPONSE_TIMEOUT,
        busy: bytes = BUSY,
    ) -> None:
        super().__init__(site)
        #: The whole answer (status line to body) a refused connection gets.
        self.busy = busy
        self.clock = clock
        self.total = total
        self.per_address = per_address
        self.timeouts = {"request": request_timeout, "response": response_timeout}
        self.open = 0
        #: Each address's connections, oldest first.
        self.by_address: dict[str, dict[Counted, None]] = {}
        #: The connections each clock runs for, oldest first, with when it started.
        self._clocks: dict[str, dict[Counted, float]] = {"request": {}, "response": {}}
        self._sweep: IDelayedCall | None = None
        #: Connections closed for being slow, and taken over by a newcomer (for tests and logs).
        self.expired = 0
        self.displaced = 0
        self.refused = 0

    def pressure(self) -> float | None:
        """None below half of ``total``; from there 0.0 rising to 1.0 at it."""
        if not self.total:
            return None
        start = self.total // 2
        if self.open < start:
            return None
        return min(1.0, (self.open - start) / max(1, self.total - start))

    def timeout(self, which: str) -> float:
        """The deadline of one clock now: read at each sweep, so waiting connections feel the
        pressure too, not only those that start waiting under it."""
        return shorten(self.timeouts[which], self.pressure())

    def enter(self, conn: Counted) -> bool:
        """Count a new connection; or say it is refused (then nothing is counted)."""
        self.sweep(reschedule=False)
        peer = conn.peer
        mine = len(self.by_address.get(peer, ()))
        if self.per_address and mine >= self.per_address:
            self.refused += 1
            return False
        if self.total and self.open >= self.total and not self._displace(mine):
            self.refused += 1
            return False
        self.open += 1
        self.by_address.setdefault(peer, {})[conn] = None
        return True

    def _displace(self, mine: int) -> bool:
        """Full: free the oldest idle slot of the busiest address, if it holds more than ours."""
        if not self.by_address:
            return False
        busiest = max(self.by_address.values(), key=len)
        if len(busiest) <= mine + 1:
            return False
        for conn in busiest:
            if conn.stage:  # waiting for its request or for the client to read
                self.displaced += 1
                conn.expire()
                return True
        return False

    def leave(self, conn: Counted) -> None:
        """Uncount a connection that closed or became a WebSocket (admission counts it then)."""
        self.open -= 1
        self.clock_for(conn, "")
        mine = self.by_address.get(conn.peer)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.by_address[conn.peer]

    def clock_for(self, conn: Counted, which: str) -> None:
        """Start ``which`` clock for ``conn`` from now ("" stops its clock)."""
        if conn.stage:
            self._clocks[conn.stage].pop(conn, None)
        conn.stage = which if conn.counted else ""
        if conn.stage:
            self._clocks[conn.stage][conn] = self.clock.seconds()
            if self._sweep is None:
                self._sweep = self.clock.callLater(SWEEP, self.sweep)

    def sweep(self, reschedule: bool = True) -> None:
        """Close the connections whose clock ran past its (current) deadline, oldest first."""
        if reschedule:
            self._sweep = None
        now = self.clock.seconds()
        for which, table in self._clocks.items():
            limit = self.timeout(which)
            while table:
                conn, since = next(iter(table.items()))
                if now - since < limit:
                    break
                self.expired += 1
                conn.expire()  # leaves its table
                limit = self.timeout(which)  # a little less pressure now
        if reschedule and self._sweep is None and any(self._clocks.values()):
            self._sweep = self.clock.callLater(SWEEP, self.sweep)

    def stop(self) -> None:
        """Cancel the sweep at the service's stop, so no timer outlives the listener."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
