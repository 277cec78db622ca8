"""The connection table: the only way one session reaches another.

The factory holds one hub; commands ask it to deliver, broadcast, list and
log out, and never touch another session's protocol. ``IHub`` methods return
Deferreds because a clustered hub (Redis) will be asynchronous; callers
``await`` them from the start.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from shellserver.session import Session


@define(eq=False)
class Message:
    """Text for other terminals. Each kind of wire encodes it once, for all its recipients.

    A wall to 10,000 telnet sessions encodes once: the first telnet recipient
    fills the ``"tel"`` slot and the others reuse it.
    """

    text: str
    _encoded: dict[str, bytes] = field(factory=dict, repr=False)

    @classmethod
    def of(cls, text: str) -> Message:
        if not text.endswith("\n"):
            text += "\n"
        return cls(text)

    def encoded(self, kind: str, encode: Callable[[str], bytes]) -> bytes:
        data = self._encoded.get(kind)
        if data is None:
            data = self._encoded[kind] = encode(self.text)
        return data


class IHub(Interface):
    def allocate_tty(kind: str) -> str:
        """A free terminal name such as ``tel/3`` (lowest free number, like ptys)."""

    def attach(session: Session) -> Deferred[None]:
        """Make ``session`` reachable."""

    def detach(session: Session) -> Deferred[None]:
        """Forget ``session`` and free its tty name."""

    def sessions() -> Deferred[list[Session]]:
        """Everyone online, in login order."""

    def sessions_of(user: str) -> Deferred[list[Session]]:
        """``user``'s sessions, in login order."""

    def deliver(session: Session, message: Message) -> Deferred[bool]:
        """Show ``message`` to one session; False if it was dropped."""

    def broadcast(message: Message) -> Deferred[int]:
        """Show ``message`` to every session, whatever their mesg; the number reached."""

    def logout_user(user: str, message: Message | None) -> Deferred[int]:
        """Show ``message`` to each of ``user``'s sessions, then end them."""

    def end_session(session: Session, message: Message | None) -> Deferred[None]:
        """Show ``message`` to one session, then end it (idle logout, ``--on-max replace``)."""


@implementer(IHub)
class Hub:
    """The in-memory hub of a single server process."""

    def __init__(self) -> None:
        self._by_id: dict[int, Session] = {}
        self._by_user: dict[str, list[Session]] = {}
        self._free: dict[str, list[int]] = {}
        self._next_tty: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def users(self) -> int:
        return len(self._by_user)

    def allocate_tty(self, kind: str) -> str:
        free = self._free.get(kind)
        if free:
            number = heapq.heappop(free)
        else:
            number = self._next_tty.get(kind, 0)
            self._next_tty[kind] = number + 1
        return f"{kind}/{number}"

    def release_tty(self, tty: str) -> None:
        kind, _, number = tty.partition("/")
        heapq.heappush(self._free.setdefault(kind, []), int(number))

    def attach(self, session: Session) -> Deferred[None]:
        self._by_id[session.id] = session
        self._by_user.setdefault(session.user, []).append(session)
        return succeed(None)

    def detach(self, session: Session) -> Deferred[None]:
        if self._by_id.pop(session.id, None) is not None:
            mine = self._by_user[session.user]
            mine.remove(session)
            if not mine:
                del self._by_user[session.user]
            self.release_tty(session.tty)
        return succeed(None)

    def sessions(self) -> Deferred[list[Session]]:
        return succeed(list(self._by_id.values()))

    def sessions_of(self, user: str) -> Deferred[list[Session]]:
        return succeed(list(self._by_user.get(user, ())))

    def deliver(self, session: Session, message: Message) -> Deferred[bool]:
        return succeed(session.deliver(message))

    def broadcast(self, message: Message) -> Deferred[int]:
        return succeed(_send_all(self._by_id.values(), message))

    def logout_user(self, user: str, message: Message | None) -> Deferred[int]:
        mine = list(self._by_user.get(user, ()))
        for session in mine:
            if message is not None:
                session.deliver(message)
            session.disconnect()
        return succeed(len(mine))

    def end_session(self, session: Session, message: Message | None) -> Deferred[None]:
        if message is not None:
            session.deliver(message)
        session.disconnect()
        return succeed(None)


def _send_all(sessions: Iterable[Session], message: Message) -> int:
    reached = 0
    for session in list(sessions):
        reached += session.deliver(message)
    return reached
