"""The clustered hub: this node's sessions in memory, everyone's records through Redis.

Each node keeps its own live sessions in an in-memory :class:`Hub` (delivery
to them is what it always was) and a :class:`Mirror` of the other nodes'
records, so listing and choosing a session never wait for Redis. What crosses
nodes goes through Redis, in parts that each hold one concern:

- :mod:`~shellserver.hub.cluster.presence`: this node's records, the mirror,
  the heartbeat and reaping, tty names, ``--max-sessions`` claims;
- :mod:`~shellserver.hub.cluster.delivery`: ``write``, ``wall``, logouts and
  announcements to other nodes (at most once: a message published while a
  node is away is gone, never repeated);
- :mod:`~shellserver.hub.cluster.rooms`: rooms that span the nodes;
- :mod:`~shellserver.hub.cluster.ignores`: every user's ignore list;
- :mod:`~shellserver.hub.cluster.calls`: the names and scripts they share.

This module composes them into the ``IHub`` the rest of the server sees, and
hands each event from another node to the part it concerns (``_handlers``).

When Redis is unreachable the node keeps serving its own sessions: listing
shows the last known records, local delivery works, anything that needs
another node answers :class:`ClusterUnavailable` (``write: cluster
unavailable``). On reconnect the node puts its records back and reloads the
others'.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from shellserver.hub.cluster.calls import Calls, log, logged
from shellserver.hub.cluster.delivery import Courier
from shellserver.hub.cluster.ignores import IgnoreLists
from shellserver.hub.cluster.link import RedisLink
from shellserver.hub.cluster.mirror import Mirror
from shellserver.hub.cluster.presence import Presence
from shellserver.hub.cluster.rooms import ClusterRooms
from shellserver.hub.cluster.url import RedisURL
from shellserver.hub.local import Hub, IHub
from shellserver.hub.record import Delivery, SessionInfo
from shellserver.hub.rooms import Member, RoomInfo
from shellserver.hub.session import Session
from shellserver.text.message import Message

#: An event from another node, handed to the part it concerns.
Handler = Callable[[dict[str, Any]], None]


@implementer(IHub)
@define(eq=False)
class RedisHub:
    """The ``IHub`` of a cluster node: the rest of the server asks it as it would the
    in-memory hub, and it answers from this node's table, the mirror, or Redis."""

    node: str
    link: RedisLink
    clock: IReactorTime
    local: Hub = field()
    mirror: Mirror = field(factory=Mirror)
    calls: Calls = field(init=False)
    ignore_lists: IgnoreLists = field(init=False)
    presence: Presence = field(init=False)
    courier: Courier = field(init=False)
    rooms: ClusterRooms = field(init=False)
    _handlers: dict[str, Handler] = field(init=False)

    @local.default
    def _local(self) -> Hub:
        return Hub(node=self.node, clock=self.clock)

    def __attrs_post_init__(self) -> None:
        self.calls = calls = Calls(self.node, self.link)
        self.ignore_lists = ignores = IgnoreLists(calls, self.local)
        self.presence = presence = Presence(
            self.node, calls, self.clock, self.local, self.mirror, ignores
        )
        self.courier = courier = Courier(
            self.node, calls, self.clock, self.local, self.mirror, presence.detach
        )
        self.rooms = rooms = ClusterRooms(self.node, calls, self.local, ignores)
        self._handlers = {
            "att": presence.on_record,
            "upd": presence.on_record,
            "det": presence.on_detach,
            "snap": presence.on_snap,
            "gone": self._on_gone,
            "left": rooms.on_left,
            "rooms": rooms.on_rooms,
            "room": rooms.on_room,
            "ign": ignores.on_change,
            "wall": courier.on_wall,
            "dlv": courier.on_deliver,
            "end": courier.on_end,
            "out": courier.on_logout,
            "ann": self._on_announce,
        }

    # -- the link's life -------------------------------------------------------------------

    def start(self) -> None:
        """Connect; the link's ``on_up`` is :meth:`connected`, ``on_message`` :meth:`received`."""
        names = self.calls.names
        self.link.subscribe(names.all, names.of(self.node))
        self.link.start()
        self.presence.start()

    def stop(self) -> Deferred[None]:
        """Leave the cluster at once (our records go), then close the link."""
        d = self.presence.leave()
        d.addCallback(lambda _: self.link.stop())
        return d

    def connected(self) -> None:
        """Redis is (back): put our sessions there, then load everyone else's."""
        d = Deferred.fromCoroutine(self._join())
        d.addErrback(logged, "joining the cluster")

    async def _join(self) -> None:
        await self.presence.enter()
        await self.ignore_lists.load()
        await self.rooms.load_names()
        self.presence.entered()

    def disconnected(self) -> None:
        """Redis is gone: the live nodes are unknown, and nothing beats until it is back."""
        self.presence.lost()

    def local_ignores(self) -> dict[str, frozenset[str]]:
        """This node's users' ignore lists (what it puts back in Redis on reconnect)."""
        return self.ignore_lists.local_lists()

    # -- messages from other nodes -------------------------------------------------------------

    def received(self, channel: str, data: bytes) -> None:
        """An event from another node (or our own, heard back): one bad message is logged
        and dropped, and never stops the ones after it."""
        try:
            event = json.loads(data)
            op = event["op"]
            if not isinstance(op, str):
                raise TypeError(f"op {op!r}")
            handler = self._handlers.get(op)
            if handler is None:
                return  # a newer node's message: ignore what we do not know
            handler(event)
        # AttributeError: a text that is not a string (Message.of calls its methods)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            log.warn(
                "bad cluster message on {channel}: {data!r}", channel=channel, data=data[:200]
            )

    def _on_gone(self, event: dict[str, Any]) -> None:
        """A node left: presence forgets and logs it, then its sessions' rooms are told."""
        if self.presence.on_gone(event):
            self.rooms.on_left(event)

    def _on_announce(self, event: dict[str, Any]) -> None:
        """Another node's announcement, for whoever here runs it (the shutdown countdown)."""
        if event["n"] != self.node:
            self.local.announced(event["k"], dict(event["f"], origin=event["n"]))

    # -- IHub: sessions ------------------------------------------------------------------------

    def allocate_tty(self, kind: str) -> Deferred[str]:
        """Presence hands out names cluster-wide (``IHub.allocate_tty``)."""
        return self.presence.allocate_tty(kind)

    def attach(self, session: Session) -> Deferred[None]:
        """Presence publishes it (``IHub.attach``)."""
        return self.presence.attach(session)

    def detach(self, session: Session) -> Deferred[None]:
        """Presence takes it out (``IHub.detach``)."""
        return self.presence.detach(session)

    def local_sessions(self) -> list[Session]:
        """This node's own: the local table's (``IHub.local_sessions``)."""
        return self.local.local_sessions()

    def claim_tty(self, tty: str) -> Deferred[str | None]:
        """Presence claims it cluster-wide (``IHub.claim_tty``)."""
        return self.presence.claim_tty(tty)

    def detached_here(self, user: str) -> list[Session]:
        """This node's own, from the local table (``IHub.detached_here``)."""
        return self.local.detached_here(user)

    def counts(self) -> tuple[int, int]:
        """From the local table and the mirror, without Redis (``IHub.counts``)."""
        here, _ = self.local.counts()
        users = self.mirror.users()
        users.update(self.local.local_users())
        return here + len(self.mirror), len(users)

    def nodes(self) -> list[str]:
        """The live nodes as presence last saw them (``IHub.nodes``)."""
        return self.presence.nodes()

    @property
    def live_nodes(self) -> int:
        """How many nodes are live (the ``shellserver_cluster_nodes`` gauge)."""
        return self.presence.live_nodes

    def sessions(self) -> Deferred[list[SessionInfo]]:
        """Ours and the mirror's, in login order: no Redis round trip on ``who``."""
        everyone: list[SessionInfo] = [*self.local.local_sessions(), *self.mirror.records()]
        everyone.sort(key=lambda s: s.login_time)
        return succeed(everyone)

    def sessions_of(self, user: str) -> Deferred[list[SessionInfo]]:
        """As :meth:`sessions_of_now`, for callers that await (``IHub.sessions_of``)."""
        return succeed(self.sessions_of_now(user))

    def sessions_of_now(self, user: str) -> list[SessionInfo]:
        """``write``'s choice of session reads the local table and the mirror at once."""
        mine: list[SessionInfo] = [*self.local.local_of(user), *self.mirror.of(user)]
        if len(mine) > 1:
            mine.sort(key=lambda s: s.login_time)
        return mine

    def admit(
        self, user: str, session_id: int, limit: int, replace: bool
    ) -> Deferred[list[SessionInfo] | None]:
        """Presence claims cluster-wide (``IHub.admit``)."""
        return self.presence.admit(user, session_id, limit, replace)

    def release(self, user: str, session_id: int) -> None:
        """Presence frees the claim (``IHub.release``)."""
        self.presence.release(user, session_id)

    def changed(self, session: Session) -> Deferred[None]:
        """Presence publishes the change (``IHub.changed``)."""
        return self.presence.changed(session)

    def ready(self) -> Deferred[None]:
        """Presence says when the node has joined (``IHub.ready``)."""
        return self.presence.ready()

    # -- IHub: delivery ------------------------------------------------------------------------

    def deliver_now(
        self, to: SessionInfo, message: Message, sender: str | None = None
    ) -> Delivery | None:
        """A session here is served at once; another node's needs :meth:`deliver`."""
        if to.node != self.node:
            return None
        return self.local.deliver_here(to.id, message, sender)

    def deliver(
        self, to: SessionInfo, message: Message, sender: str | None = None
    ) -> Deferred[Delivery]:
        """Here at once; elsewhere through the courier (``IHub.deliver``)."""
        if to.node == self.node:
            return succeed(self.local.deliver_here(to.id, message, sender))
        return self.courier.deliver(to, message, sender)

    def broadcast(self, message: Message) -> Deferred[tuple[int, int]]:
        """Every node's sessions (``IHub.broadcast``)."""
        return self.courier.broadcast(message)

    def broadcast_here(self, message: Message) -> tuple[int, int]:
        """This node's sessions only (``IHub.broadcast_here``)."""
        return self.local.broadcast_here(message)

    def logout_user(self, user: str, message: Message | None) -> Deferred[int]:
        """On every node that can be told (``IHub.logout_user``)."""
        return self.courier.logout_user(user, message)

    def end_session(self, to: SessionInfo, message: Message | None) -> Deferred[None]:
        """Here at once; elsewhere by its node (``IHub.end_session``)."""
        if to.node == self.node:
            self.local.end_here(to.id, message, self.presence.detach)
            return succeed(None)
        return self.courier.end_session(to, message)

    def announce(self, kind: str, fields: dict[str, Any]) -> None:
        """To every other node (``IHub.announce``)."""
        self.courier.announce(kind, fields)

    def hand_over(self, to: SessionInfo, node: str) -> Deferred[None]:
        """To ``to``'s node alone, as an announcement (``IHub.hand_over``)."""
        return self.courier.hand_over(to, node)

    def subscribe_announcements(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        """Held by this node's local table, which :meth:`_on_announce` hands other nodes'
        announcements to (``IHub.subscribe_announcements``)."""
        self.local.subscribe_announcements(callback)

    # -- IHub: people and rooms -----------------------------------------------------------------

    def set_ignores(self, user: str, names: frozenset[str] | None) -> None:
        """Here and on every node (``IHub.set_ignores``)."""
        self.ignore_lists.set(user, names)

    def ignores(self, user: str) -> frozenset[str]:
        """From this node's copy of every list (``IHub.ignores``)."""
        return self.ignore_lists.of(user)

    def join_room(
        self, room: str, session_id: int, user: str, tty: str, max_rooms: int, max_members: int
    ) -> Deferred[str]:
        """Limits checked in Redis (``IHub.join_room``)."""
        return self.rooms.join(room, session_id, user, tty, max_rooms, max_members)

    def part_room(self, room: str, session_id: int) -> Deferred[bool]:
        """``IHub.part_room``, in Redis."""
        return self.rooms.part(room, session_id)

    def part_all_rooms(self, session_id: int) -> Deferred[list[str]]:
        """``IHub.part_all_rooms``; nothing while Redis is away (put right on reconnect)."""
        return self.rooms.part_all(session_id)

    def rooms_of(self, session_id: int) -> Deferred[list[str]]:
        """``IHub.rooms_of``, from Redis."""
        return self.rooms.rooms_of(session_id)

    def room(self, room: str) -> Deferred[RoomInfo | None]:
        """``IHub.room``, from Redis."""
        return self.rooms.room(room)

    def room_list(self) -> Deferred[list[RoomInfo]]:
        """``IHub.room_list``, from Redis."""
        return self.rooms.room_list()

    def room_members(self, room: str) -> Deferred[list[Member]]:
        """``IHub.room_members``: every node's, from Redis."""
        return self.rooms.members(room)

    def set_room_topic(self, room: str, topic: str) -> Deferred[bool]:
        """``IHub.set_room_topic``, in Redis."""
        return self.rooms.set_topic(room, topic)

    def send_room(
        self, room: str, message: Message, sender: str, skip: int | None = None
    ) -> Deferred[tuple[int, int]]:
        """To members here and on each other node once (``IHub.send_room``)."""
        return self.rooms.send(room, message, sender, skip)

    def room_names(self) -> list[str]:
        """The names as last loaded, at once (``IHub.room_names``)."""
        return self.rooms.names()


def cluster_hub(url: RedisURL, node: str, reactor: IReactorTime) -> RedisHub:
    """A RedisHub for ``--cluster URL --node NAME``, its link's callbacks wired to it."""

    def up() -> None:
        hub.connected()

    def down() -> None:
        hub.disconnected()

    def heard(channel: str, data: bytes) -> None:
        hub.received(channel, data)

    link = RedisLink(url.host, url.port, url.db, reactor, up, down, heard, url=url)
    hub = RedisHub(node, link, reactor)
    return hub
