"""Rooms (the seed's per-room table): names, limits, texts, and the in-memory table.

The table speaks in plain data (room names, user names, session ids, tty names), never in
``Session`` objects, so a clustered hub can keep the same records in Redis. The hub owns one
table and does the delivery; commands only ask the hub.
"""

from __future__ import annotations

import re

from attrs import define, field, frozen

#: ``#`` and 1-32 of ``[a-z0-9_-]``: short, lower case, no control characters or spaces, so a
#: name is safe in other users' lines and in Redis keys, and ``#Foo`` and ``#foo`` cannot differ.
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
    """Room names are checked before anything is made or sent, so a name carries no control
    characters or spaces into other users' lines or Redis keys."""
    return _ROOM.fullmatch(name) is not None


def joined_text(room: str, user: str) -> str:
    """One wording for a join, whichever node sends it, so members see the same line."""
    return f"[{room}] {user} has joined"


def left_text(room: str, user: str) -> str:
    """One wording for a part, shared by ``part``, a session ending and a node being reaped."""
    return f"[{room}] {user} has left"


def said_text(room: str, user: str, text: str) -> str:
    """``text`` already sanitised."""
    return f"[{room}] {user}: {text}"


def topic_text(room: str, user: str, topic: str) -> str:
    """One wording for a topic change, so every member sees the same line."""
    return f"[{room}] {user} set the topic: {topic}"


@frozen
class Member:
    """One session in a room as plain data (never a ``Session``), so the same record lives in
    memory or in Redis and names a session on any node."""

    session_id: int
    user: str
    tty: str
    #: The member's node in a cluster (its session id is that node's).
    node: str = ""


@frozen
class RoomInfo:
    """A room's snapshot for ``rooms``, ``topic`` and ``who #room``: plain data, so both hubs can
    hand it out."""

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
        """Add a member, creating the room (its creator may set the topic) on first join; the
        per-session and per-room limits are checked first so a flood of joins is a clear refusal,
        never unbounded tables."""
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
        """Take a session out; a room with no members is gone, with its topic, so empty rooms never
        accumulate."""
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
        """A session ended: it leaves all its rooms, which are returned so their members can be
        told."""
        rooms = list(self._of.get(session_id, ()))
        for room in rooms:
            self.part(room, session_id)
        return rooms

    def rooms_of(self, session_id: int) -> list[str]:
        """In joining order (the per-session ordered set), as ``rooms`` shows them."""
        return list(self._of.get(session_id, ()))

    def info(self, room: str) -> RoomInfo | None:
        """A copy of one room's state, so callers cannot change the table behind its back."""
        found = self._rooms.get(room)
        if found is None:
            return None
        return RoomInfo(room, found.creator, found.topic, len(found.members))

    def infos(self) -> list[RoomInfo]:
        """Every room's snapshot, sorted by name for ``rooms``."""
        return [
            RoomInfo(name, r.creator, r.topic, len(r.members))
            for name, r in sorted(self._rooms.items())
        ]

    def members(self, room: str) -> list[Member]:
        """A copy in joining order, so a fan-out may go on while members join or part."""
        found = self._rooms.get(room)
        return [] if found is None else list(found.members.values())

    def set_topic(self, room: str, topic: str) -> bool:
        """False when the room has gone (its last member parted meanwhile), so the command can say
        so."""
        found = self._rooms.get(room)
        if found is None:
            return False
        found.topic = topic
        return True

    def names(self) -> list[str]:
        """Sorted names for Tab completion, from memory on the keypress."""
        return sorted(self._rooms)
