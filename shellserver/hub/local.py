"""The connection table: the only way one session reaches another.

The factory holds one hub; commands ask it to deliver, broadcast, list and
log out, and never touch another session's protocol. ``IHub`` methods return
Deferreds because a clustered hub (Redis) will be asynchronous; callers
``await`` them from the start.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface, implementer

from shellserver.hub.fanout import Fanout
from shellserver.hub.record import Delivery as Delivery
from shellserver.hub.record import SessionInfo
from shellserver.hub.rooms import Member, RoomInfo, RoomTable
from shellserver.hub.session import HoldingPort, Session
from shellserver.text.message import Message as Message  # re-exported: where callers find it


class ClusterUnavailable(Exception):
    """The other nodes cannot be reached (Redis is down or does not answer)."""


class IHub(Interface):
    """What commands, the login and the services may ask of the connection table, so the same code
    runs against the in-memory :class:`Hub` and the clustered Redis hub. Queries that may need the
    cluster return Deferreds; the few that a keypress or the ``write`` hot path needs at once are
    plain calls that both hubs answer from memory."""

    node = Attribute("This node's name: the ``node`` of the sessions attached here.")

    def allocate_tty(kind: str) -> Deferred[str]:
        """A free terminal name such as ``tel/3`` (lowest free number, like ptys), unique
        across the cluster."""

    def claim_tty(tty: str) -> Deferred[str | None]:
        """That very name (a parked session taken back keeps its tty) if no session holds it,
        else None (the caller then allocates another)."""

    def attach(session: Session) -> Deferred[None]:
        """Make this node's ``session`` reachable (from every node)."""

    def detach(session: Session) -> Deferred[None]:
        """Forget ``session`` and free its tty name (twice is harmless)."""

    def local_sessions() -> list[Session]:
        """This node's own live sessions (the idle scan, the shutdown's last notice)."""

    def detached_here(user: str) -> list[Session]:
        """``user``'s detached sessions on this node, oldest first: a login here may resume
        one."""

    def counts() -> tuple[int, int]:
        """(sessions, users) online, at once (``status``, the wall counters)."""

    def nodes() -> list[str]:
        """The live nodes' names, sorted (``status``): this one alone when not clustered;
        clustered, those of the last heartbeat (none while Redis cannot be reached)."""

    def sessions() -> Deferred[list[SessionInfo]]:
        """Everyone online, in login order: records, not objects."""

    def sessions_of(user: str) -> Deferred[list[SessionInfo]]:
        """``user``'s sessions, in login order."""

    def sessions_of_now(user: str) -> list[SessionInfo]:
        """The same, at once: both hubs know it without a round trip (``write``'s hot path:
        awaiting an already-fired Deferred costs more than the lookup)."""

    def admit(
        user: str, session_id: int, limit: int, replace: bool
    ) -> Deferred[list[SessionInfo] | None]:
        """``--max-sessions``: may ``user`` have one more session (``session_id``, about to be
        attached)? None: refuse; else the sessions to end first (empty when under the limit).

        The check and the claim are one step, so two logins at once cannot both pass.
        """

    def release(user: str, session_id: int) -> None:
        """A login that ``admit`` let in was abandoned before ``attach``: free its claim."""

    def changed(session: Session) -> Deferred[None]:
        """``session``'s mesg, idle time or command changed: let the other nodes know
        (mesg at once, the rest at a bounded rate). Fires once the cluster has it."""

    def ready() -> Deferred[None]:
        """Fires once the hub can serve a login (a cluster node: has joined, or gave up
        waiting and serves locally)."""

    def deliver(
        to: SessionInfo, message: Message, sender: str | None = None
    ) -> Deferred[Delivery]:
        """Show ``message`` to one session. With ``sender``, the recipient's ``mesg n`` and
        ignore list refuse it (``write``); without, it is shown whatever they say (notices)."""

    def deliver_now(
        to: SessionInfo, message: Message, sender: str | None = None
    ) -> Delivery | None:
        """``deliver`` at once when ``to`` is on this node; None when it is not (then
        ``deliver``)."""

    def broadcast(message: Message) -> Deferred[tuple[int, int]]:
        """Show ``message`` to every session, whatever their mesg; (reached, dropped)."""

    def broadcast_here(message: Message) -> tuple[int, int]:
        """Show ``message`` to this node's sessions only (each node warns its own of a
        shutdown that every node runs)."""

    def announce(kind: str, fields: dict[str, Any]) -> None:
        """Tell the other nodes (their announcement subscribers): a shutdown scheduled or
        cancelled, a mute made or ended, an account deleted."""

    def hand_over(to: SessionInfo, node: str) -> Deferred[None]:
        """Ask the node that holds the detached session ``to`` to park it in the store for
        ``node`` (where its user just logged in), as an announcement of kind ``hand`` with
        the fields ``i`` (its id) and ``to`` (``node``), heard by that node alone."""

    def subscribe_announcements(callback: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``callback(kind, fields)`` for every other node's :meth:`announce` from now on.

        The shutdown schedule both announces through the hub and runs the schedules other
        nodes announce, so it cannot be given to the hub's constructor: the assembly
        subscribes it once both exist, before the hub starts, so nothing is missed.
        """

    def logout_user(user: str, message: Message | None) -> Deferred[int]:
        """Show ``message`` to each of ``user``'s sessions, then end them; how many."""

    def end_session(to: SessionInfo, message: Message | None) -> Deferred[None]:
        """Show ``message`` to one session, then end it (idle logout, ``--on-max replace``)."""

    # -- people and rooms (ignore lists, rooms): plain data in and out, so Redis can hold it --

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


#: How a session leaves the hub that ends it (``Hub.detach``, or a cluster presence's).
Detach = Callable[[Session], object]


@implementer(IHub)
class Hub:
    """The in-memory hub of a single server process (and each node's local table in a
    cluster: :class:`shellserver.hub.cluster.hub.RedisHub` keeps one for its own sessions)."""

    def __init__(self, node: str = "", clock: IReactorTime | None = None) -> None:
        self.node = node
        #: Room lines to many members, a slice per reactor turn (fanout.py); without a
        #: clock, all at once.
        self.fanout = Fanout(clock)
        #: Who runs other nodes' announcements (:meth:`subscribe_announcements`).
        self._announcement_subscribers: list[Callable[[str, dict[str, Any]], None]] = []
        self._by_id: dict[int, Session] = {}
        self._by_user: dict[str, list[Session]] = {}
        self._free: dict[str, list[int]] = {}
        self._next_tty: dict[str, int] = {}
        self._rooms = RoomTable()
        self._ignores: dict[str, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def users(self) -> int:
        """Distinct users with a session here: the size of the per-user table, which tests use to
        check that a user is forgotten with their last session."""
        return len(self._by_user)

    def counts(self) -> tuple[int, int]:
        """Both numbers from the tables' sizes, no walk: ``status`` asks, and the clustered hub
        adds this node's share to its mirror's."""
        return len(self._by_id), len(self._by_user)

    def nodes(self) -> list[str]:
        """Not clustered, this process is the only node (a cluster node asks Redis instead)."""
        return [self.node]

    def allocate_tty(self, kind: str) -> Deferred[str]:
        """Nothing to agree with: the lowest free number, already fired."""
        return succeed(self.take_tty(kind))

    def take_tty(self, kind: str) -> str:
        """The lowest free number of ``kind`` (a heap of freed numbers, then a counter), as ptys
        are reused, so tty names stay short; the clustered hub uses it for names it makes while
        Redis is down."""
        free = self._free.get(kind)
        if free:
            number = heapq.heappop(free)
        else:
            number = self._next_tty.get(kind, 0)
            self._next_tty[kind] = number + 1
        return f"{kind}/{number}"

    def claim_tty(self, tty: str) -> Deferred[str | None]:
        """One process: the name is free when its number is in the free heap or past the
        counter (the numbers skipped then become free; at most 10,000 of them)."""
        kind, _, number = tty.partition("/")
        if not number.isdigit() or len(number) > 9:
            return succeed(None)
        n = int(number)
        free = self._free.setdefault(kind, [])
        if n in free:
            free.remove(n)
            heapq.heapify(free)
            return succeed(tty)
        nxt = self._next_tty.get(kind, 0)
        if n < nxt or n - nxt > 10_000:
            return succeed(None)
        for skipped in range(nxt, n):
            heapq.heappush(free, skipped)
        self._next_tty[kind] = n + 1
        return succeed(tty)

    def release_tty(self, tty: str) -> None:
        """Return a name's number to the free heap. Anything but ``kind/N`` is ignored (a cluster
        node strips its fallback ``tel/NODE.N`` before calling), so a foreign name never puts a
        bogus number in the heap."""
        kind, _, number = tty.partition("/")
        if number.isdigit():
            heapq.heappush(self._free.setdefault(kind, []), int(number))

    def attach(self, session: Session) -> Deferred[None]:
        """One process: adding to the tables is all it takes to be reachable, so it is done now."""
        self.add(session)
        return succeed(None)

    def add(self, session: Session) -> None:
        """Put ``session`` in the tables without freeing or claiming anything else, for the
        clustered hub, which publishes the session to Redis itself."""
        self._by_id[session.id] = session
        self._by_user.setdefault(session.user, []).append(session)

    def detach(self, session: Session) -> Deferred[None]:
        """Remove and free the tty number; only the first call frees it, so a session ended by the
        hub and then by its connection closing does not free a number twice."""
        if self.remove(session):
            self.release_tty(session.tty)
        return succeed(None)

    def remove(self, session: Session) -> bool:
        """Take ``session`` out of the tables; False if it was not in them."""
        if self._by_id.pop(session.id, None) is None:
            return False
        mine = self._by_user[session.user]
        mine.remove(session)
        if not mine:
            del self._by_user[session.user]
        return True

    def local_sessions(self) -> list[Session]:
        """A copy, so callers (the idle scan ending sessions) may change the table while they walk
        it."""
        return list(self._by_id.values())

    def local(self, session_id: int) -> Session | None:
        """This node's live session by id, or None: the clustered hub asks before going to
        Redis."""
        return self._by_id.get(session_id)

    def detached_here(self, user: str) -> list[Session]:
        """Those of the per-user table whose connection was lost, in login order."""
        return [s for s in self._by_user.get(user, ()) if s.detached_at is not None]

    def local_of(self, user: str) -> list[Session]:
        """This node's sessions of ``user`` (a copy), which the clustered hub merges with its
        mirror of the other nodes'."""
        return list(self._by_user.get(user, ()))

    def local_users(self) -> list[str]:
        """Users with a session here: the clustered hub republishes their ignore lists and counts
        them."""
        return list(self._by_user)

    def announce(self, kind: str, fields: dict[str, Any]) -> None:
        """Nothing to tell: there is no other node, and this node acts on its own shutdown
        directly."""
        pass  # no other node

    def hand_over(self, to: SessionInfo, node: str) -> Deferred[None]:
        """One process holds every session: its own subscribers hear the request at once."""
        self.announced("hand", {"i": to.id, "to": node, "origin": self.node})
        return succeed(None)

    def subscribe_announcements(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        """Kept here, in this node's own table, so the clustered hub that holds it hands other
        nodes' announcements to :meth:`announced` as it hands them their walls and writes."""
        self._announcement_subscribers.append(callback)

    def announced(self, kind: str, fields: dict[str, Any]) -> None:
        """Another node announced ``kind`` (the clustered hub heard it): every subscriber runs
        it. Alone, nothing calls this, as there is no other node."""
        for callback in self._announcement_subscribers:
            callback(kind, fields)

    def sessions(self) -> Deferred[list[SessionInfo]]:
        """The live sessions themselves, which carry every :class:`SessionInfo` field, so no record
        is built; dict order is attach order, hence login order."""
        return succeed(list(self._by_id.values()))

    def sessions_of(self, user: str) -> Deferred[list[SessionInfo]]:
        """As :meth:`sessions_of_now`, wrapped for callers that also run clustered."""
        return succeed(list(self._by_user.get(user, ())))

    def sessions_of_now(self, user: str) -> list[SessionInfo]:
        """A lookup in the per-user table (a copy, so the caller may end sessions while it
        walks)."""
        return list(self._by_user.get(user, ()))

    def admit(
        self, user: str, session_id: int, limit: int, replace: bool
    ) -> Deferred[list[SessionInfo] | None]:
        """One process attaches without a gap after this check, so counting the user's sessions is
        enough; with ``replace``, the oldest ones to end first."""
        mine = self._by_user.get(user, ())
        if len(mine) < limit:
            return succeed([])
        if not replace:
            return succeed(None)
        # Detached sessions go first (oldest first), then the oldest attached ones.
        older = sorted(mine, key=lambda s: s.detached_at is None)
        return succeed(list(older[: len(mine) - limit + 1]))

    def release(self, user: str, session_id: int) -> None:
        """Nothing to free: :meth:`admit` claimed nothing here."""
        pass  # admit claimed nothing: one process attaches without a gap

    def changed(self, session: Session) -> Deferred[None]:
        """Nothing to publish: in one process every reader sees the live session."""
        return succeed(None)  # everyone reads the live session

    def ready(self) -> Deferred[None]:
        """Always ready: there is no cluster to join first."""
        return succeed(None)

    def deliver(
        self, to: SessionInfo, message: Message, sender: str | None = None
    ) -> Deferred[Delivery]:
        """:meth:`deliver_here`, already fired: the recipient can only be on this node."""
        return succeed(self.deliver_here(to.id, message, sender))

    def deliver_now(
        self, to: SessionInfo, message: Message, sender: str | None = None
    ) -> Delivery | None:
        """Every session is local here, so the answer is always immediate (the ``write`` path skips
        a Deferred)."""
        return self.deliver_here(to.id, message, sender)

    def deliver_here(self, session_id: int, message: Message, sender: str | None) -> Delivery:
        """Deliver to a session of this node by id; this is also where the clustered hub hands
        messages that arrived from Redis. ``mesg n`` and ignore are checked here, next to the
        session, so they hold for local and remote senders alike."""
        session = self._by_id.get(session_id)
        if session is None or not session.terminal.connected:
            return Delivery.GONE
        if sender is not None:
            if not session.mesg or sender in self._ignores.get(session.user, _NOBODY):
                return Delivery.REFUSED
            if session.detached_at is not None:  # held, and saved as mail if never resumed
                port = cast(HoldingPort, session.terminal)
                return (
                    Delivery.DELIVERED if port.notify_write(message, sender) else Delivery.DROPPED
                )
        return Delivery.DELIVERED if session.deliver(message) else Delivery.DROPPED

    def broadcast(self, message: Message) -> Deferred[tuple[int, int]]:
        """:meth:`broadcast_here`, already fired: this node is the whole server."""
        return succeed(self.broadcast_here(message))

    def broadcast_here(self, message: Message) -> tuple[int, int]:
        """Every session here gets the same Message (encoded once per kind of wire), whatever its
        mesg: ``wall`` and notices are never refused."""
        sessions = list(self._by_id.values())
        reached = 0
        for session in sessions:
            reached += session.deliver(message)
        return reached, len(sessions) - reached

    def logout_user(self, user: str, message: Message | None) -> Deferred[int]:
        """:meth:`logout_here`, already fired: every session of the user is on this node."""
        return succeed(self.logout_here(user, message))

    def logout_here(self, user: str, message: Message | None, detach: Detach | None = None) -> int:
        """End each of ``user``'s sessions on this node (``kick``, userdel); a cluster node calls
        it when another node asks, with its own ``detach`` (see :meth:`end_here`)."""
        mine = list(self._by_user.get(user, ()))
        for session in mine:
            self.end_here(session.id, message, detach)
        return len(mine)

    def end_session(self, to: SessionInfo, message: Message | None) -> Deferred[None]:
        """:meth:`end_here` by id, already fired: the session can only be local."""
        self.end_here(to.id, message)
        return succeed(None)

    def end_here(
        self, session_id: int, message: Message | None, detach: Detach | None = None
    ) -> None:
        """Tell, close, and detach at once: the slot is free before the connection is gone.

        ``detach`` is this hub's own unless a clustered hub, which holds this one as its local
        table, passes its presence's (the session leaves Redis too): given per call, so neither
        table is filled in with the other after it is built."""
        session = self._by_id.get(session_id)
        if session is None:
            return
        if message is not None:
            session.deliver(message)
        session.disconnect()
        (detach or self.detach)(session)

    # -- people and rooms: ignore lists and rooms, as plain data ---------------------------

    def set_ignores(self, user: str, names: frozenset[str] | None) -> None:
        """Kept per user, as plain data, so the check on the delivery path is one dict lookup; an
        empty list is dropped so the common case costs nothing."""
        if names:
            self._ignores[user] = names
        else:
            self._ignores.pop(user, None)

    def ignores(self, user: str) -> frozenset[str]:
        """A shared empty set when unknown, so the hot path allocates nothing."""
        return self._ignores.get(user, _NOBODY)

    def join_room(
        self, room: str, session_id: int, user: str, tty: str, max_rooms: int, max_members: int
    ) -> Deferred[str]:
        """The table does the limits and creation; the node is recorded so a clustered hub's
        members can be told apart from another node's."""
        member = Member(session_id, user, tty, self.node)
        return succeed(self._rooms.join(room, member, max_rooms, max_members))

    def part_room(self, room: str, session_id: int) -> Deferred[bool]:
        """Straight to the table, which drops a room (and its topic) with its last member."""
        return succeed(self._rooms.part(room, session_id))

    def part_all_rooms(self, session_id: int) -> Deferred[list[str]]:
        """For a session that ended: it leaves every room, and the caller tells each room's
        members."""
        return succeed(self._rooms.part_all(session_id))

    def rooms_of(self, session_id: int) -> Deferred[list[str]]:
        """In joining order, as ``rooms`` shows a session's own rooms."""
        return succeed(self._rooms.rooms_of(session_id))

    def room(self, room: str) -> Deferred[RoomInfo | None]:
        """The table's snapshot, plain data, so ``topic`` and ``who #room`` can check the
        creator."""
        return succeed(self._rooms.info(room))

    def room_list(self) -> Deferred[list[RoomInfo]]:
        """Sorted by name, as ``rooms`` lists them."""
        return succeed(self._rooms.infos())

    def room_members(self, room: str) -> Deferred[list[Member]]:
        """Plain members in joining order, for ``who #room`` and the fan-out."""
        return succeed(self._rooms.members(room))

    def set_room_topic(self, room: str, topic: str) -> Deferred[bool]:
        """Straight to the table; the command has already checked who may set it."""
        return succeed(self._rooms.set_topic(room, topic))

    def send_room(
        self, room: str, message: Message, sender: str, skip: int | None = None
    ) -> Deferred[tuple[int, int]]:
        """The room's members through the paced fan-out, so a line to a large room never holds the
        reactor for a whole pass over it."""
        counts = self.deliver_members(self._rooms.members(room), message, sender, skip)
        return counts.addCallback(_reached_dropped)

    def deliver_members(
        self,
        members: Sequence[Member | int],
        message: Message,
        sender: str,
        skip: int | None = None,
        ignoring: Callable[[str], frozenset[str]] | None = None,
    ) -> Deferred[list[int]]:
        """``message`` to this node's sessions among ``members`` (Members, or bare session
        ids), but ``skip`` and those whose user ignores ``sender``, paced by the fan-out:
        fires with [reached, tried]. The message is the same object for all (encoded once
        per kind of wire); each member costs a lookup and its terminal's lead. ``ignoring``
        tells whom a user ignores (a clustered hub's lists; by default this hub's)."""
        ignores, by_id = self._ignores, self._by_id
        counts = [0, 0]

        def step(member: Member | int) -> None:
            session_id = member if isinstance(member, int) else member.session_id
            if session_id == skip:
                return
            session = by_id.get(session_id)
            if session is None:
                return
            if ignoring is not None:
                if sender in ignoring(session.user):
                    return
            elif ignores and sender in ignores.get(session.user, _NOBODY):
                return
            counts[1] += 1
            counts[0] += session.deliver(message)

        return self.fanout.run(members, step).addCallback(lambda _: counts)

    def room_names(self) -> list[str]:
        """From memory, sorted, so Tab completion answers on the keypress without a Deferred."""
        return self._rooms.names()


_NOBODY: frozenset[str] = frozenset()


def _reached_dropped(counts: list[int]) -> tuple[int, int]:
    reached, tried = counts
    return reached, tried - reached
