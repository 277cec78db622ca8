"""Rooms (the seed's per-room table): names, limits, texts, and the in-memory table.

The table speaks in plain data (room names, user names, session ids, tty names), never in
``Session`` objects, so a clustered hub can keep the same records in Redis. The hub owns one
table and does the delivery; commands only ask the hub.
"""

from __future__ import annotations

import re

from attrs import define, field, frozen

#: ``#`` and 1-32 of ``[a-z0-9_-]`` (SPEC §11).
_ROOM = re.compile(r"#[a-z0-9_-]{1,32}")

#: Rooms one session may be in at once.
MAX_ROOMS_PER_SESSION = 10
#: Sessions in one room.
MAX_MEMBERS = 1000
#: Bytes (UTF-8) of one ``say`` text.
MAX_SAY = 1024
#: Bytes (UTF-8) of a topic.
MAX_TOPIC = 256

BAD_NAME_HINT = "a room name is # and 1-32 of a-z, 0-9, _ and -"

# What a join comes to.
CREATED = "created"
JOINED = "joined"
ALREADY = "already"
ROOM_FULL = "full"
TOO_MANY = "too-many"


def valid_room(name: str) -> bool:
    return _ROOM.fullmatch(name) is not None


def joined_text(room: str, user: str) -> str:
    return f"[{room}] {user} has joined"


def left_text(room: str, user: str) -> str:
    return f"[{room}] {user} has left"


def said_text(room: str, user: str, text: str) -> str:
    """``text`` already sanitised."""
    return f"[{room}] {user}: {text}"


def topic_text(room: str, user: str, topic: str) -> str:
    return f"[{room}] {user} set the topic: {topic}"


@frozen
class Member:
    session_id: int
    user: str
    tty: str
    #: The member's node in a cluster (its session id is that node's).
    node: str = ""


@frozen
class RoomInfo:
    name: str
    creator: str
    topic: str
    members: int


@define
class _Room:
    creator: str
    topic: str = ""
    #: By session id, in joining order.
    members: dict[int, Member] = field(factory=dict)


class RoomTable:
    """Rooms by name and each session's rooms; a room with no members is gone."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}
        self._of: dict[int, dict[str, None]] = {}  # an ordered set per session

    def __len__(self) -> int:
        return len(self._rooms)

    def join(self, room: str, member: Member, max_rooms: int, max_members: int) -> str:
        mine = self._of.get(member.session_id, {})
        if room in mine:
            return ALREADY
        if len(mine) >= max_rooms:
            return TOO_MANY
        found = self._rooms.get(room)
        if found is not None and len(found.members) >= max_members:
            return ROOM_FULL
        status = JOINED
        if found is None:
            found = self._rooms[room] = _Room(member.user)
            status = CREATED
        found.members[member.session_id] = member
        self._of.setdefault(member.session_id, {})[room] = None
        return status

    def part(self, room: str, session_id: int) -> bool:
        mine = self._of.get(session_id)
        if mine is None or room not in mine:
            return False
        del mine[room]
        if not mine:
            del self._of[session_id]
        found = self._rooms[room]
        del found.members[session_id]
        if not found.members:
            del self._rooms[room]  # and its topic with it
        return True

    def part_all(self, session_id: int) -> list[str]:
        rooms = list(self._of.get(session_id, ()))
        for room in rooms:
            self.part(room, session_id)
        return rooms

    def rooms_of(self, session_id: int) -> list[str]:
        return list(self._of.get(session_id, ()))

    def info(self, room: str) -> RoomInfo | None:
        found = self._rooms.get(room)
        if found is None:
            return None
        return RoomInfo(room, found.creator, found.topic, len(found.members))

    def infos(self) -> list[RoomInfo]:
        return [
            RoomInfo(name, r.creator, r.topic, len(r.members))
            for name, r in sorted(self._rooms.items())
        ]

    def members(self, room: str) -> list[Member]:
        found = self._rooms.get(room)
        return [] if found is None else list(found.members.values())

    def set_topic(self, room: str, topic: str) -> bool:
        found = self._rooms.get(room)
        if found is None:
            return False
        found.topic = topic
        return True

    def names(self) -> list[str]:
        return sorted(self._rooms)
