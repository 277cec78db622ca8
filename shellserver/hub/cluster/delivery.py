"""Messages to sessions on other nodes: ``write``, ``wall``, logouts, announcements.

Each node listens on its own channel (``Names.of``) for what is meant for its sessions
alone, and on the all-nodes channel for walls and announcements. A ``write`` to another
node is the ``DELIVER`` script: Redis checks the recipient's record and ignore list where
the truth is (the mirror may be a moment behind a ``mesg n``) and publishes, or answers
why not. Messages are delivered at most once: one published while a node is away is gone,
never repeated, and one that Redis runs after the sender stopped waiting is dropped.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from shellserver.hub.cluster.calls import Calls, dump_deliver, quietly
from shellserver.hub.cluster.link import Script
from shellserver.hub.cluster.mirror import Mirror
from shellserver.hub.local import ClusterUnavailable, Detach, Hub
from shellserver.hub.record import Delivery, SessionInfo
from shellserver.text.message import Message


@define(eq=False)
class Courier:
    """Carries messages from this node's sessions to the other nodes', and hands what the
    other nodes send to this node's local table."""

    node: str
    calls: Calls
    clock: IReactorTime
    local: Hub
    #: Who is where, for a wall's count and a logout's nodes, without asking Redis.
    mirror: Mirror
    #: How a session this node ends leaves the cluster (presence's ``detach``): its record,
    #: claim and tty name go from Redis, not only from the local table.
    detach: Detach
    _deliver: Script = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._deliver = self.calls.script("DELIVER")

    def deliver(self, to: SessionInfo, message: Message, sender: str | None) -> Deferred[Delivery]:
        """One message to a session on another node; Redis decides whether it may be shown
        (its mesg and ignore list as Redis has them now), so the answer is never stale."""
        calls = self.calls
        link = calls.link
        if not link.available:
            return succeed(Delivery.UNAVAILABLE)
        names = calls.names
        body = dump_deliver(to.id, message.text, sender)
        # Redis decides (the mirror may be a moment behind a mesg n), and drops the message if
        # it runs only after we stopped waiting (a paused Redis): at most once, never late.
        deadline = int((self.clock.seconds() + calls.redis_offset + link.timeout) * 1000)
        d = self._deliver(
            [],
            [
                names.prefix,
                names.all,
                to.node,
                to.id,
                sender or "",
                names.of(to.node),
                body,
                deadline,
            ],
        )
        # one entry for both (an unknown answer's KeyError passes _unavailable by anyway)
        return d.addCallbacks(_OUTCOMES.__getitem__, _unavailable)

    def broadcast(self, message: Message) -> Deferred[tuple[int, int]]:
        """A wall: this node's sessions at once, the others' through one publish; the count
        includes the other nodes' sessions only when the publish went out."""
        reached, dropped = self.local.broadcast_here(message)
        if not self.calls.available:
            return succeed((reached, dropped))
        others = len(self.mirror)
        d = self.calls.send_all({"op": "wall", "n": self.node, "t": message.text})

        def told(_: int) -> tuple[int, int]:
            return reached + others, dropped

        def untold(failure: Failure) -> tuple[int, int]:
            failure.trap(ClusterUnavailable)
            return reached, dropped

        return d.addCallbacks(told, untold)

    def logout_user(self, user: str, message: Message | None) -> Deferred[int]:
        """How many: the sessions here, and those of the nodes that heard the logout
        (``kick`` during an outage counts only what it could end)."""
        here = self.local.logout_here(user, message, self.detach)
        body = {"op": "out", "u": user, "t": None if message is None else message.text}
        by_node: dict[str, int] = {}
        for r in self.mirror.of(user):
            by_node[r.node] = by_node.get(r.node, 0) + 1

        async def tell() -> int:
            count = here
            for node, n in by_node.items():
                try:
                    if await self.calls.send(node, body):
                        count += n
                except ClusterUnavailable:
                    pass
            return count

        return Deferred.fromCoroutine(tell())

    def end_session(self, to: SessionInfo, message: Message | None) -> Deferred[None]:
        """Ask ``to``'s node to end it (an idle logout, a replaced login); an outage means
        it goes on there, which the caller cannot help."""
        text = None if message is None else message.text
        d = self.calls.send(to.node, {"op": "end", "i": to.id, "t": text})
        return quietly(d, "ending a session")

    def hand_over(self, to: SessionInfo, node: str) -> Deferred[None]:
        """An announcement of kind ``hand`` to ``to``'s node alone: park that detached session
        for ``node``. Lost in an outage, as any message: the asking node then gives up."""
        body = {"op": "ann", "n": self.node, "k": "hand", "f": {"i": to.id, "to": node}}
        return quietly(self.calls.send(to.node, body), "handing over a session")

    def announce(self, kind: str, fields: dict[str, Any]) -> None:
        """Tell every other node (a shutdown scheduled or cancelled), so all run the same
        countdown; not heard while Redis is away."""
        if self.calls.available:
            d = self.calls.send_all({"op": "ann", "n": self.node, "k": kind, "f": fields})
            quietly(d, "announcing " + kind)

    # -- what the other nodes send ----------------------------------------------------------

    def on_wall(self, event: dict[str, Any]) -> None:
        """Another node's wall, for this node's sessions (ours was shown when sent)."""
        if event["n"] != self.node:
            self.local.broadcast_here(Message.of(event["t"]))

    def on_deliver(self, event: dict[str, Any]) -> None:
        """A ``write`` that Redis let through; the local table checks again."""
        self.local.deliver_here(int(event["i"]), Message.of(event["t"]), event.get("s"))

    def on_end(self, event: dict[str, Any]) -> None:
        """Another node ends one of our sessions."""
        text = event.get("t")
        self.local.end_here(
            int(event["i"]), None if text is None else Message.of(text), self.detach
        )

    def on_logout(self, event: dict[str, Any]) -> None:
        """Another node logs a user out everywhere (``kick``, ``userdel``)."""
        text = event.get("t")
        self.local.logout_here(event["u"], None if text is None else Message.of(text), self.detach)


#: The DELIVER script's answers.
_OUTCOMES = {
    b"ok": Delivery.DELIVERED,
    b"gone": Delivery.GONE,
    b"refused": Delivery.REFUSED,
    b"late": Delivery.UNAVAILABLE,
}


def _unavailable(failure: Failure) -> Delivery:
    failure.trap(ClusterUnavailable)
    return Delivery.UNAVAILABLE
