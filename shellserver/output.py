"""A session's output path: ordered, capped for other people's messages, never stalling others.

The transport pauses us (``IPushProducer``) when its own buffer is full, which
means the client has stopped reading. From then on output is held here. The
session's own command output is always kept (it is bounded by the command),
but messages from other people are dropped once ``limit`` bytes are held, and
a client that stays over the limit for ``stall_timeout`` seconds is aborted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport


@define(eq=False)
class Output:
    transport: ITransport
    clock: IReactorTime
    limit: int
    on_stall: Callable[[], None]
    stall_timeout: float = 10.0
    paused: bool = False
    _held: deque[bytes] = field(factory=deque)
    _held_bytes: int = 0
    _stall: IDelayedCall | None = None

    def write(self, data: bytes) -> None:
        """Own output: in order, never dropped."""
        if self.paused:
            self._held.append(data)
            self._held_bytes += len(data)
        else:
            self.transport.write(data)

    def offer(self, chunks: Sequence[bytes]) -> bool:
        """Someone else's message: written whole, or dropped whole when over the cap."""
        if not self.paused:
            self.transport.writeSequence(chunks)
            return True
        size = sum(map(len, chunks))
        if self._held_bytes + size > self.limit:
            if self._stall is None:
                self._stall = self.clock.callLater(self.stall_timeout, self._stalled)
            return False
        self._held.extend(chunks)
        self._held_bytes += size
        return True

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        held = self._held
        while held and not self.paused:
            data = held.popleft()
            self._held_bytes -= len(data)
            self.transport.write(data)
        if not self.paused and self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def stop(self) -> None:
        """The connection is gone: forget what is held and any pending abort."""
        self._held.clear()
        self._held_bytes = 0
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        if self.paused:
            self.on_stall()

    @property
    def held_bytes(self) -> int:
        """Bytes held while the client does not read (``shellserver_output_held_bytes``)."""
        return self._held_bytes
