"""Rooms that span the cluster: membership and limits in Redis, lines to every node's members.

A room's members, creator and topic are Redis's (a join checks both limits in one script,
so two nodes cannot overfill a room). A line said here goes to this node's members
directly and to each other node once, with the list of its members there, and each node
paces it out to its own. When sessions leave a room without a ``part`` (their node was
reaped, or they ended while their node could not reach Redis), every node tells its own
members of that room, as a ``part`` would have.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from shellserver.hub.cluster.calls import Calls, logged, logged_quietly
from shellserver.hub.cluster.ignores import IgnoreLists
from shellserver.hub.local import ClusterUnavailable, Hub
from shellserver.hub.rooms import Member, RoomInfo, left_text
from shellserver.text.message import Message


@define(eq=False)
class ClusterRooms:
    """The rooms as every node sees them; this node's members are served by its local
    table, the others' through their nodes."""

    node: str
    calls: Calls
    local: Hub
    #: A room line skips members who ignore its sender, on every node.
    ignore_lists: IgnoreLists
    _names: list[str] = field(init=False, factory=list)

    def join(
        self, room: str, session_id: int, user: str, tty: str, max_rooms: int, max_members: int
    ) -> Deferred[str]:
        """Join (or create) a room; the limits are checked where every node's joins meet."""
        run = self.calls.run
        d = run("JOIN", room, self.node, session_id, user, tty, max_rooms, max_members)
        d.addCallback(lambda status: status.decode())
        return d

    def part(self, room: str, session_id: int) -> Deferred[bool]:
        """Leave one room; False if the session was not in it."""
        d = self.calls.run("PART", session_id, room)
        d.addCallback(bool)
        return d

    def part_all(self, session_id: int) -> Deferred[list[str]]:
        """A session ended. While Redis is away it has left no room here: the node's
        ``RESET_SELF`` on reconnect takes ended sessions out of their rooms."""
        d = self.calls.run("PART", session_id, "")
        d.addCallback(lambda rooms: [r.decode() for r in rooms])

        def offline(failure: Failure) -> list[str]:
            failure.trap(ClusterUnavailable)
            return []

        d.addErrback(offline)
        return d

    def rooms_of(self, session_id: int) -> Deferred[list[str]]:
        """A session's rooms in joining order, as Redis keeps them."""
        key = f"{self.calls.names.prefix}sr:{self.node}/{session_id}"
        d = self.calls.link.call("ZRANGE", key, 0, -1)
        d.addCallback(lambda rooms: [r.decode() for r in rooms])
        return d

    def room(self, room: str) -> Deferred[RoomInfo | None]:
        """One room's creator, topic and size, or None."""
        d = self.calls.run("ROOM", room, "0")
        d.addCallback(
            lambda r: RoomInfo(room, r[0].decode(), r[1].decode(), int(r[2])) if r else None
        )
        return d

    def room_list(self) -> Deferred[list[RoomInfo]]:
        """Every room of the cluster, by name, in one script."""
        d = self.calls.run("ROOM_LIST")

        def infos(flat: list[Any]) -> list[RoomInfo]:
            return [
                RoomInfo(flat[i].decode(), flat[i + 1].decode(), flat[i + 2].decode(), flat[i + 3])
                for i in range(0, len(flat), 4)
            ]

        d.addCallback(infos)
        return d

    def members(self, room: str) -> Deferred[list[Member]]:
        """A room's sessions on every node, in joining order."""
        d = self.calls.run("ROOM", room, "1")
        d.addCallback(lambda r: [_member(m) for m in r[3:]] if r else [])
        return d

    def set_topic(self, room: str, topic: str) -> Deferred[bool]:
        """False if there is no such room."""
        d = self.calls.run("SET_TOPIC", room, topic)
        d.addCallback(bool)
        return d

    def send(
        self, room: str, message: Message, sender: str, skip: int | None = None
    ) -> Deferred[tuple[int, int]]:
        """A room line: this node's members paced here, each other node's in one publish."""

        async def send() -> tuple[int, int]:
            members = await self.members(room)
            here: list[Member] = []
            remote: dict[str, list[int]] = {}
            ignores = self.ignore_lists.of
            for m in members:
                if m.node == self.node:
                    here.append(m)
                elif sender not in ignores(m.user):  # every node's lists are here
                    remote.setdefault(m.node, []).append(m.session_id)
            # This node's members: paced, a slice per reactor turn (fanout.py).
            local = self.local.deliver_members(here, message, sender, skip, ignores)
            reached = 0
            for node, ids in remote.items():
                body = {"op": "room", "i": ids, "t": message.text, "s": sender}
                try:
                    if await self.calls.send(node, body):
                        reached += len(ids)  # and there again, should a list have changed
                except ClusterUnavailable:
                    pass
            local_reached, tried = await local
            return reached + local_reached, tried - local_reached

        return Deferred.fromCoroutine(send())

    def names(self) -> list[str]:
        """The room names at once, for Tab completion (no Deferred on a keypress)."""
        return list(self._names)

    async def load_names(self) -> None:
        """Take the room names from Redis (joining, or told that a room came or went)."""
        names = await self.calls.link.call("SMEMBERS", self.calls.names.prefix + "rooms")
        self._names = sorted(n.decode() for n in names)

    # -- what the other nodes say ----------------------------------------------------------

    def on_rooms(self, event: dict[str, Any]) -> None:
        """A room was created or emptied somewhere (``rooms``): the names are loaded again."""
        if self.calls.available:
            d = Deferred.fromCoroutine(self.load_names())
            d.addErrback(logged_quietly)

    def on_room(self, event: dict[str, Any]) -> None:
        """A room line for this node's members (``room``), paced out to them here."""
        message, sender = Message.of(event["t"]), event["s"]
        ids = [int(i) for i in event["i"]]
        d = self.local.deliver_members(ids, message, sender, ignoring=self.ignore_lists.of)
        d.addErrback(logged, "delivering a room line")

    def on_left(self, event: dict[str, Any]) -> None:
        """Sessions left rooms without a part being announced (their node was reaped, or they
        ended while their node could not reach Redis): ``[#room] bob has left`` to this
        node's members of each room, paced as any room line."""
        parts = [(str(room), str(user)) for room, user in event.get("p") or ()]
        if parts and self.calls.available:
            d = Deferred.fromCoroutine(self._tell_parts(parts))
            d.addErrback(logged, "telling rooms who left")

    async def _tell_parts(self, parts: list[tuple[str, str]]) -> None:
        for room, user in parts:
            members = await self.members(room)
            here = [m for m in members if m.node == self.node]
            if here:
                message = Message.of(left_text(room, user))
                await self.local.deliver_members(
                    here, message, user, ignoring=self.ignore_lists.of
                )


def _member(raw: bytes) -> Member:
    user, tty, node, session_id = json.loads(raw)
    return Member(int(session_id), user, tty, node)
