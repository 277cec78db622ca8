"""How the parts of the clustered hub speak to Redis: names, scripts by name, events.

Presence, delivery, rooms and ignore lists each call Redis, and every call needs the
same few things: the key prefix, the all-nodes channel, this node's name, the loaded
scripts. They are kept here once, so each part is handed this and nothing of the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub.cluster import scripts
from shellserver.hub.cluster.link import RedisLink, Script
from shellserver.hub.local import ClusterUnavailable

#: One namespace for the clustered hub's lines, whichever part says them, so that an
#: operator's log filter on it keeps matching (it was one module before the split).
log = Logger(namespace="shellserver.hub.cluster.hub")

#: Every script the parts run, loaded once per link.
_SCRIPTS = (
    "HEARTBEAT", "REAP_SELF", "RESET_SELF", "REPUBLISH", "SNAPSHOT", "ALLOCATE_TTY", "CLAIM_TTY",
    "ATTACH", "UPDATE", "DETACH", "ADMIT", "RELEASE", "SET_IGNORES", "JOIN", "PART",
    "ROOM", "ROOM_LIST", "SET_TOPIC", "DELIVER",
)  # fmt: skip
#: The scripts that do not take this node's name after the prefix and the channel: they
#: act on another node, a user or a room, which comes in that place.
_NODELESS = frozenset({"SNAPSHOT", "SET_IGNORES", "JOIN", "ROOM", "ROOM_LIST", "SET_TOPIC"})


@define(eq=False)
class Names:
    """Key prefix and channel names. Channels are global to a redis-server whatever the db,
    so they carry the db number: two clusters on one Redis never hear each other."""

    db: int
    node: str
    #: Every key the cluster writes starts with it.
    prefix: str = field(init=False, default="ss:")
    #: The channel every node hears (records, walls, rooms, announcements).
    all: str = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.all = f"ss:{self.db}:all"

    def of(self, node: str) -> str:
        """The channel only ``node`` hears: what is meant for its sessions alone."""
        return f"ss:{self.db}:node:{node}"


@define(eq=False)
class Calls:
    """This node's calls into Redis, shared by the hub's parts: each part is given this
    rather than the link and a copy of the names."""

    node: str
    link: RedisLink
    names: Names = field(init=False)
    #: Redis's clock minus ours, at the last heartbeat: deadlines are set in Redis's time
    #: (presence learns it, delivery uses it).
    redis_offset: float = field(init=False, default=0.0)
    _scripts: dict[str, Script] = field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self.names = Names(self.link.db, self.node)
        for name in _SCRIPTS:
            self._scripts[name] = self.link.script(getattr(scripts, name))

    @property
    def available(self) -> bool:
        """Whether Redis can be asked now; when not, each part acts locally at once."""
        return self.link.available

    def script(self, name: str) -> Script:
        """A script to call with its own arguments (the write path builds them itself)."""
        return self._scripts[name]

    def run(self, name: str, *args: str | int) -> Deferred[Any]:
        """Run a script with the prefix, the all-nodes channel and our node name as its first
        arguments (every script reads them)."""
        head: list[str | int | bytes] = [self.names.prefix, self.names.all]
        if name not in _NODELESS:
            head.append(self.node)
        return self._scripts[name]([], [*head, *args])

    def send(self, node: str, body: dict[str, Any]) -> Deferred[int]:
        """An event for ``node`` alone; fires with how many heard it (0: that node is gone)."""
        return self.link.publish(self.names.of(node), dump(body))

    def send_all(self, body: dict[str, Any]) -> Deferred[int]:
        """An event for every node (this one hears it too, and skips its own)."""
        return self.link.publish(self.names.all, dump(body))


#: One encoder for every event: ``json.dumps`` with options builds a new one per call, which
#: cost more than the encoding itself.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: The encoder's own string quoting (C), for the hot ``dlv`` event built by hand.
_quote: Callable[[str], str] = json.encoder.encode_basestring


def dump(body: dict[str, Any]) -> bytes:
    """An event as the other nodes read it: compact JSON, text as UTF-8."""
    return _ENCODER.encode(body).encode()


def dump_deliver(session: int, text: str, sender: str | None) -> bytes:
    """The ``dlv`` event, the one every cross-node ``write`` sends: the same bytes as
    ``dump({"op": "dlv", "i": session, "t": text, "s": sender})``, put together directly
    (about a quarter of the cost), since its shape never changes."""
    who = "null" if sender is None else _quote(sender)
    return f'{{"op":"dlv","i":{int(session)},"t":{_quote(text)},"s":{who}}}'.encode()


def quietly(d: Deferred[Any], what: str) -> Deferred[None]:
    """A change Redis will be told again on reconnect: an outage is not news here."""

    def failed(failure: Failure) -> None:
        if failure.check(ClusterUnavailable) is None:
            log.failure("cluster: {what} failed", failure, what=what)

    d.addCallbacks(lambda _: None, failed)
    return d


def logged(failure: Failure, what: str) -> None:
    """An errback for work the node does on its own: a real failure is logged, an outage
    is not (the link already said it, once)."""
    if failure.check(ClusterUnavailable) is None:
        log.failure("cluster: {what} failed", failure, what=what)


def logged_quietly(failure: Failure) -> None:
    """The errback of keeping the mirror and lists current: the next beat tries again."""
    logged(failure, "keeping up with the other nodes")
