"""The connection table: the only way one session reaches another.

The factory holds one hub; commands ask it to deliver, broadcast, list and
log out, and never touch another session's protocol. ``IHub`` methods return
Deferreds because a clustered hub (Redis) will be asynchronous; callers
``await`` them from the start.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from shellserver.message import Message as Message  # re-exported: where callers find it
from shellserver.rooms import Member, RoomInfo, RoomTable
from shellserver.session import Session


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

    # -- people and rooms (SPEC §11): plain data in and out, so Redis can hold it --------

    def set_ignores(user: str, names: frozenset[str] | None) -> None:
        """``user``'s ignore list while they have a session (None: forget it).

        Kept next to the sessions so checking it on the ``write`` path is a lookup, not a
        store round trip; a clustered hub keeps a local copy of the same records.
        """

    def ignores(user: str) -> frozenset[str]:
        """Whom ``user`` ignores (empty when unknown or offline)."""

    def join_room(
        room: str, session_id: int, user: str, tty: str, max_rooms: int, max_members: int
    ) -> Deferred[str]:
        """Add a session to ``room``, creating it (``user`` its creator) on first join.

        One of ``rooms.CREATED``, ``JOINED``, ``ALREADY``, ``ROOM_FULL``, ``TOO_MANY``.
        """

    def part_room(room: str, session_id: int) -> Deferred[bool]:
        """Take a session out of ``room``; False if it was not in it. An empty room is gone."""

    def part_all_rooms(session_id: int) -> Deferred[list[str]]:
        """Take a session out of every room (it ended); the rooms it was in."""

    def rooms_of(session_id: int) -> Deferred[list[str]]:
        """The rooms a session is in, in joining order."""

    def room(room: str) -> Deferred[RoomInfo | None]:
        """One room's creator, topic and member count; None if there is no such room."""

    def room_list() -> Deferred[list[RoomInfo]]:
        """Every room, by name."""

    def room_members(room: str) -> Deferred[list[Member]]:
        """A room's sessions (id, user, tty), in joining order."""

    def set_room_topic(room: str, topic: str) -> Deferred[bool]:
        """False if there is no such room."""

    def send_room(
        room: str, message: Message, sender: str, skip: int | None = None
    ) -> Deferred[tuple[int, int]]:
        """Show ``message`` to the room's sessions (but ``skip``), except those whose user
        ignores ``sender``; (reached, dropped): the output cap may drop some."""

    def room_names() -> list[str]:
        """The room names, sorted, at once (for Tab completion: no Deferred on a keypress)."""


@implementer(IHub)
class Hub:
    """The in-memory hub of a single server process."""

    def __init__(self) -> None:
        self._by_id: dict[int, Session] = {}
        self._by_user: dict[str, list[Session]] = {}
        self._free: dict[str, list[int]] = {}
        self._next_tty: dict[str, int] = {}
        self._rooms = RoomTable()
        self._ignores: dict[str, frozenset[str]] = {}

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

    # -- people and rooms (SPEC §11) ----------------------------------------------------

    def set_ignores(self, user: str, names: frozenset[str] | None) -> None:
        if names:
            self._ignores[user] = names
        else:
            self._ignores.pop(user, None)

    def ignores(self, user: str) -> frozenset[str]:
        return self._ignores.get(user, _NOBODY)

    def join_room(
        self, room: str, session_id: int, user: str, tty: str, max_rooms: int, max_members: int
    ) -> Deferred[str]:
        member = Member(session_id, user, tty)
        return succeed(self._rooms.join(room, member, max_rooms, max_members))

    def part_room(self, room: str, session_id: int) -> Deferred[bool]:
        return succeed(self._rooms.part(room, session_id))

    def part_all_rooms(self, session_id: int) -> Deferred[list[str]]:
        return succeed(self._rooms.part_all(session_id))

    def rooms_of(self, session_id: int) -> Deferred[list[str]]:
        return succeed(self._rooms.rooms_of(session_id))

    def room(self, room: str) -> Deferred[RoomInfo | None]:
        return succeed(self._rooms.info(room))

    def room_list(self) -> Deferred[list[RoomInfo]]:
        return succeed(self._rooms.infos())

    def room_members(self, room: str) -> Deferred[list[Member]]:
        return succeed(self._rooms.members(room))

    def set_room_topic(self, room: str, topic: str) -> Deferred[bool]:
        return succeed(self._rooms.set_topic(room, topic))

    def send_room(
        self, room: str, message: Message, sender: str, skip: int | None = None
    ) -> Deferred[tuple[int, int]]:
        ignores, by_id = self._ignores, self._by_id
        reached = tried = 0
        for member in self._rooms.members(room):
            if member.session_id == skip:
                continue
            if ignores and sender in ignores.get(member.user, _NOBODY):
                continue
            session = by_id.get(member.session_id)
            if session is not None:
                tried += 1
                reached += session.deliver(message)
        return succeed((reached, tried - reached))

    def room_names(self) -> list[str]:
        return self._rooms.names()


_NOBODY: frozenset[str] = frozenset()


def _send_all(sessions: Iterable[Session], message: Message) -> int:
    reached = 0
    for session in list(sessions):
        reached += session.deliver(message)
    return reached
