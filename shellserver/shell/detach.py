"""Sessions that outlive their connection: detached on a lost connection, resumed at the
next login of their user.

A connection that ends without ``logout`` (a reset, a closed lid, a closed browser
tab) does not end its session when ``--linger`` is on: the session stays in the hub
with its tty name, cwd, rooms and mesg, and its terminal is replaced by a
:class:`HeldOutput`, which keeps what is delivered to it (within ``--max-output``,
past which messages are dropped and their senders told, as for a client that does
not read) together with the history and the half-typed line of the terminal it
had. The next interactive login of the same user on this node is asked whether to
resume it; yes gives the session the new connection's terminal, shows what was held
and brings back the half-typed line; no, the linger running out, or anything that
ends a session (kick, lock, idle timeout, shutdown) ends it, and the ``write``
messages it held are saved to the user's mailbox, so nothing sent is lost.

Only a connection lost by the client detaches: the server's own ``close()`` (logout,
``exit``, ^D, kick, lock, idle, shutdown) ends the session as before, and so does the
end of ``ssh host CMD``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from shellserver.text.words import counted

if TYPE_CHECKING:
    from shellserver.text.message import Message

log = Logger()

#: The question for one detached session, before the shell starts.
RESUME_ONE = "You have a detached session on {tty} (idle {idle}). Resume it? [Y/n] "
#: With several: a numbered list, then this.
RESUME_WHICH = "Resume which? [1] "
#: Held output is framed by these when a session is resumed.
HELD_HEADER = "--- {count} while you were away ---\n"
HELD_FOOTER = "---\n"
#: Lines of a ``write`` as the hub hands them on: its header, and its end.
_WRITE_HEADER = "Message from "
_WRITE_END = "EOF\n"


def idle_words(seconds: float) -> str:
    """``2 minutes``, ``1 hour``: how long a detached session has waited, in the question."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return counted(seconds, "second")
    if seconds < 3600:
        return counted(seconds // 60, "minute")
    if seconds < 86400:
        return counted(seconds // 3600, "hour")
    return counted(seconds // 86400, "day")


@define(eq=False)
class HeldWrite:
    """One ``write`` message held by a detached session: who sent it, when, and its text."""

    sender: str
    sent: float
    text: str


@define(eq=False)
class HeldOutput:
    """The port of a detached session (a ``SessionPort``): it shows nothing, and holds
    what would have been shown, up to ``limit`` bytes of text.

    ``history`` and ``line`` are what the lost terminal's line editor had, for the
    terminal that resumes the session; ``end`` ends the session for good (its
    caller saves the held ``write`` messages first). Lean on purpose, since a server
    may hold thousands: no timer (one :class:`Lingering` heap per node ends them), no
    closure (``end`` is shared, the session found by ``user``), and its lists made only
    when something is held.
    """

    width: int
    height: int
    #: ``--max-output``: what a client that is not reading may have held, here too.
    limit: int
    #: Whose session this is, and the kind of its last wire (the end's log line).
    user: str
    kind: str
    #: Ends the session this port belongs to: one callable shared by every held port.
    end: Callable[[HeldOutput], None]
    #: The time, for when a held ``write`` was sent.
    clock: IReactorTime
    history: tuple[str, ...] = ()
    line: str = ""
    #: Held text, in order: messages and the session's own output (None: nothing yet).
    texts: list[str] | None = None
    size: int = 0
    #: Messages held, and messages dropped past ``limit``.
    messages: int = 0
    dropped: int = 0
    #: The ``write`` messages among them, saved to the mailbox if the session is not resumed.
    writes: list[HeldWrite] | None = None
    #: When the linger is over (the clock's seconds).
    until: float = 0.0
    #: Set once the session was resumed, parked or ended: a late ``close()`` does nothing.
    done: bool = False

    @property
    def connected(self) -> bool:
        """True until the session ends: the hub keeps delivering to it while it waits."""
        return not self.done

    def write(self, text: str) -> None:
        """The session's own output (a command that ends after the connection): held, not
        counted as a message."""
        self._hold(text, len(text.encode("utf-8", "surrogateescape")))

    def notify(self, message: Message) -> bool:
        """A wall, a room line, a notice: held; False (dropped) past the limit."""
        if not self._hold(message.text, message.size()):
            self.dropped += 1
            return False
        self.messages += 1
        return True

    def notify_write(self, message: Message, sender: str) -> bool:
        """A ``write`` line from ``sender``: held like any message, and remembered as a
        ``write``, to be saved to the mailbox if the session ends unresumed."""
        if not self.notify(message):
            return False
        if self.writes is None:
            self.writes = []
        self.writes.append(HeldWrite(sender, self.clock.seconds(), message.text))
        return True

    def close(self) -> None:
        """Kick, lock, idle timeout, shutdown, the linger's end: the detached session ends as
        an attached one would."""
        if not self.done:
            self.end(self)

    def let_go(self) -> None:
        """Resumed, parked or ended: nothing more is held, and what was is let go of (the
        linger heap may keep this port until its time)."""
        self.done = True
        self.texts = self.writes = None
        self.history = ()

    def framed(self) -> str:
        """What the user sees on resuming: the held text between the two frame lines; empty
        when nothing was held."""
        if not self.texts:
            return ""
        count = counted(self.messages, "message") if self.messages else "output"
        if self.dropped:
            count += f" ({self.dropped} more dropped)"
        body = "".join(self.texts)
        if not body.endswith("\n"):
            body += "\n"
        return HELD_HEADER.format(count=count) + body + HELD_FOOTER

    def mail(self) -> list[HeldWrite]:
        """The held ``write`` messages as the mailbox keeps them: one per conversation
        (the lines from one ``Message from`` header to its ``EOF``), without the header
        and the ``EOF``, from its sender at the time of its first line."""
        out: list[HeldWrite] = []
        open_: dict[str, HeldWrite] = {}
        for w in self.writes or ():
            text = w.text
            if text.startswith(_WRITE_HEADER):
                _, _, text = text.partition("\n")
                current = open_[w.sender] = HeldWrite(w.sender, w.sent, "")
                out.append(current)
            else:
                current = open_.get(w.sender) or HeldWrite(w.sender, w.sent, "")
                if w.sender not in open_:
                    open_[w.sender] = current
                    out.append(current)
            ended = text.endswith(_WRITE_END) and (text == _WRITE_END or "\n" + _WRITE_END in text)
            if ended:
                text = text[: -len(_WRITE_END)]
                del open_[w.sender]
            current.text += text
        return [w for w in out if w.text.strip()]

    def _hold(self, text: str, size: int) -> bool:
        if self.size + size > self.limit:
            return False
        self.size += size
        if self.texts is None:
            self.texts = []
        self.texts.append(text)
        return True


@define(eq=False)
class Lingering:
    """When each detached session's linger is over: one heap and one timer per node, not a
    timer per session (a ``DelayedCall`` with its arguments costs several times a held port).
    A port resumed or ended meanwhile is skipped when its time comes."""

    clock: IReactorTime
    _heap: list[tuple[float, int, HeldOutput]] = field(factory=list)
    _order: Iterator[int] = field(factory=itertools.count)
    _call: IDelayedCall | None = None

    def add(self, held: HeldOutput) -> None:
        """Watch ``held`` until ``held.until``."""
        heapq.heappush(self._heap, (held.until, next(self._order), held))
        if self._heap[0][2] is held:
            self._arm()

    def __len__(self) -> int:
        return len(self._heap)

    def _arm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._heap:
            delay = max(0.0, self._heap[0][0] - self.clock.seconds())
            self._call = self.clock.callLater(delay, self._due)

    def _due(self) -> None:
        self._call = None
        now = self.clock.seconds()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, held = heapq.heappop(heap)
            if not held.done:
                try:
                    held.close()
                except Exception:
                    log.failure("ending a detached session failed")
        self._arm()
