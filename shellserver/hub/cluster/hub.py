"""The clustered hub: this node's sessions in memory, everyone's records through Redis.

Each node keeps its own live sessions in an in-memory :class:`Hub` (delivery
to them is what it always was) and a :class:`Mirror` of the other nodes'
records, so listing and choosing a session never wait for Redis. What crosses
nodes goes through Redis: records and claims in Lua scripts (``scripts.py``),
messages on one pub/sub channel per node and one for all (at most once: a
message published while a node is away is gone, never repeated). Liveness is
a heartbeat into a sorted set scored by Redis's clock; any node reaps a node
whose beat is older than the TTL, so a ``kill -9`` disappears from ``who``
within TTL + one beat.

When Redis is unreachable the node keeps serving its own sessions: listing
shows the last known records, local delivery works, anything that needs
another node answers :class:`ClusterUnavailable` (``write: cluster
unavailable``). On reconnect the node puts its records back and reloads the
others'.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shellserver.hub.cluster import scripts
from shellserver.hub.cluster.link import RedisLink, Script
from shellserver.hub.cluster.mirror import Mirror
from shellserver.hub.cluster.url import RedisURL
from shellserver.hub.local import ClusterUnavailable, Hub, IHub
from shellserver.hub.record import Delivery, SessionInfo, SessionRecord
from shellserver.hub.rooms import Member, RoomInfo, left_text
from shellserver.hub.session import Session
from shellserver.text.message import Message
from shellserver.text.words import counted

log = Logger()

#: Seconds between heartbeats, and after which a silent node is reaped (SPEC: gone from
#: ``who`` within 15 s of a ``kill -9``: TTL plus one beat is at most 12 s).
BEAT = 2.0
TTL = 10.0
#: Seconds between publishing the idle time and current command of changed sessions.
UPDATES = 2.0
#: Seconds a login waits at start for the node to join the cluster before it is served
#: locally, as in an outage (``--max-sessions`` on this node only, a fallback tty name).
READY_WAIT = 5.0
#: Records per republish script call (a node with 10,000 sessions sends ten).
BATCH = 1000


@define(eq=False)
class Names:
    """Key prefix and channel names. Channels are global to a redis-server whatever the db,
    so they carry the db number: two clusters on one Redis never hear each other."""

    db: int
    node: str

    @property
    def prefix(self) -> str:
        return "ss:"

    @property
    def all(self) -> str:
        return f"ss:{self.db}:all"

    def of(self, node: str) -> str:
        return f"ss:{self.db}:node:{node}"


@implementer(IHub)
@define(eq=False)
class RedisHub:
    node: str
    link: RedisLink
    clock: IReactorTime
    local: Hub = field()
    mirror: Mirror = field(factory=Mirror)
    #: Announcements from other nodes (a shutdown scheduled or cancelled): (kind, fields).
    on_announce: Callable[[str, dict[str, Any]], None] | None = None
    _names: Names = field(init=False)
    _scripts: dict[str, Script] = field(init=False, factory=dict)
    _beat: LoopingCall | None = field(init=False, default=None)
    _updates: LoopingCall | None = field(init=False, default=None)
    _published: dict[int, tuple[bool, str, int]] = field(init=False, factory=dict)
    _ignores: dict[str, frozenset[str]] = field(init=False, factory=dict)
    _room_names: list[str] = field(init=False, factory=list)
    _started: bool = field(init=False, default=False)
    #: The cluster's epoch as this node last saw it (a random value Redis keeps; a new one
    #: means Redis lost its data) and until when tty names are not taken from Redis.
    _epoch: bytes | None = field(init=False, default=None)
    _tty_grace_until: float = field(init=False, default=0.0)
    #: Redis's clock minus ours, at the last heartbeat (for deadlines in Redis time).
    _redis_offset: float = field(init=False, default=0.0)
    #: Logins wait (at most ``READY_WAIT``) until the node has joined the cluster.
    _joined: bool = field(init=False, default=False)
    _waiting: list[Deferred[None]] = field(init=False, factory=list)
    _ready_timer: IDelayedCall | None = field(init=False, default=None)
    _resync_call: IDelayedCall | None = field(init=False, default=None)
    #: The live nodes: those of the last heartbeat, and since then those heard joining
    #: (their snapshot event) less those heard going (``status``, the nodes gauge).
    _live: set[str] = field(init=False, factory=set)

    @local.default
    def _local(self) -> Hub:
        return Hub(node=self.node, clock=self.clock)

    def __attrs_post_init__(self) -> None:
        self.local.detacher = self.detach
        self._names = Names(self.link.db, self.node)
        for name in (
            "HEARTBEAT", "REAP_SELF", "RESET_SELF", "REPUBLISH", "SNAPSHOT", "ALLOCATE_TTY",
            "ATTACH", "UPDATE", "DETACH", "ADMIT", "RELEASE", "SET_IGNORES", "JOIN", "PART",
            "ROOM", "ROOM_LIST", "SET_TOPIC", "DELIVER",
        ):  # fmt: skip
            self._scripts[name] = self.link.script(getattr(scripts, name))

    # -- the link's life -------------------------------------------------------------------

    def start(self) -> None:
        """Connect; the link's ``on_up`` is :meth:`connected`, ``on_message`` :meth:`received`."""
        self.link.subscribe(self._names.all, self._names.of(self.node))
        self.link.start()
        self._ready_timer = self.clock.callLater(READY_WAIT, self._stop_waiting)
        self._updates = LoopingCall(self._publish_updates)
        self._updates.clock = self.clock
        self._updates.start(UPDATES, now=False).addErrback(self._log, "publishing updates")

    def stop(self) -> Deferred[None]:
        """Leave the cluster at once (our records go), then close the link."""
        for loop in (self._beat, self._updates):
            if loop is not None and loop.running:
                loop.stop()
        if self._resync_call is not None and self._resync_call.active():
            self._resync_call.cancel()
        self._stop_waiting()
        d: Deferred[Any] = (
            self._run("REAP_SELF", "stopped") if self.link.available else succeed(None)
        )
        d.addErrback(lambda _: None)
        d.addCallback(lambda _: self.link.stop())
        return d

    def connected(self) -> None:
        """Redis is (back): put our sessions there, then load everyone else's."""
        first = not self._started
        self._started = True
        if not first:  # Redis may have lost its data, or a node restarted meanwhile
            self.mirror.reset()
        d = self._sync(reset_first=first)
        d.addErrback(self._log, "joining the cluster")

    def disconnected(self) -> None:
        self._live = set()  # this node sees no cluster now
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        self._beat = None

    def _sync(self, reset_first: bool) -> Deferred[None]:
        async def sync() -> None:
            if reset_first:  # a node of this name that died may have left records
                await self._run("REAP_SELF", "restarted")
            await self._check_epoch()
            await self._republish()
            live = await self._heartbeat()
            self.mirror.stale.update(n for n in live if n != self.node)
            await self._load_stale()
            raw = await self.link.call("HGETALL", self._names.prefix + "ign")
            self._ignores = {
                raw[i].decode(): frozenset(json.loads(raw[i + 1])) for i in range(0, len(raw), 2)
            }
            self._ignores.update(self.local_ignores())
            await self._refresh_room_names()
            self._stop_waiting()
            if self._beat is None:
                self._beat = LoopingCall(self._beat_once)
                self._beat.clock = self.clock
                self._beat.start(BEAT, now=False).addErrback(self._log, "heartbeat")

        return Deferred.fromCoroutine(sync())

    async def _check_epoch(self) -> None:
        """Redis lost its data (restarted empty) if the epoch we knew is gone. Until every
        node had time to reconnect and republish (TTL and a beat), the tty names they hold
        are not in Redis: this node gives fallback names (``tel/NODE.N``) meanwhile."""
        key = self._names.prefix + "epoch"
        await self.link.call("SET", key, uuid.uuid4().hex, "NX")
        epoch = await self.link.call("GET", key)
        if self._epoch is not None and epoch != self._epoch:
            self._tty_grace_until = self.clock.seconds() + TTL + BEAT
            log.warn("cluster: Redis lost its data; tty names are this node's own for a while")
        self._epoch = epoch

    def local_ignores(self) -> dict[str, frozenset[str]]:
        return {
            u: self.local.ignores(u) for u in self.local.local_users() if self.local.ignores(u)
        }

    async def _republish(self) -> None:
        here = self.local.local_sessions()
        await self._run("RESET_SELF", *[f for s in here for f in (s.id, s.tty)])
        records = [SessionRecord.of(s).to_json() for s in here]
        first = True
        while first or records:
            batch, records = records[:BATCH], records[BATCH:]
            await self._run("REPUBLISH", *batch)
            first = False
        self._published = {s.id: _state(s) for s in self.local.local_sessions()}
        for user, names in self.local_ignores().items():
            await self._run("SET_IGNORES", user, json.dumps(sorted(names)))

    async def _heartbeat(self) -> dict[str, int]:
        fresh, flat, redis_ms = await self._run("HEARTBEAT", int(TTL * 1000))
        self._redis_offset = redis_ms / 1000 - self.clock.seconds()
        live = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        self._live = set(live)
        if fresh and self._started and len(self.local.local_sessions()):
            # We had been reaped (a long pause) or Redis lost its data: put ourselves back.
            await self._republish()
        self.mirror.check(live, self.node)
        return live

    def _beat_once(self) -> Deferred[None]:
        async def beat() -> None:
            if not self.link.available:
                return
            await self._heartbeat()
            await self._load_stale()

        d = Deferred.fromCoroutine(beat())
        d.addErrback(self._log_quietly)
        return d

    async def _load_stale(self) -> None:
        for node in list(self.mirror.stale):
            if node == self.node:
                self.mirror.stale.discard(node)
                continue
            gen, raw = await self._run("SNAPSHOT", node)
            records = []
            for r in raw:
                try:
                    records.append(SessionRecord.from_json(r))
                except ValueError:
                    log.warn("bad session record from node {node}: {r!r}", node=node, r=r)
            self.mirror.snapshot(node, int(gen), records)

    def _soon_resync(self) -> None:
        """A gap in a node's events: load its records once this turn's events are in."""
        if self._resync_call is None or not self._resync_call.active():

            def run() -> None:
                self._resync_call = None
                if self.link.available:
                    d = Deferred.fromCoroutine(self._load_stale())
                    d.addErrback(self._log_quietly)

            self._resync_call = self.clock.callLater(0.05, run)

    # -- messages from other nodes -------------------------------------------------------------

    def received(self, channel: str, data: bytes) -> None:
        try:
            event = json.loads(data)
            op = event["op"]
            if not isinstance(op, str):
                raise TypeError(f"op {op!r}")
            handler = _HANDLERS.get(op)
            if handler is None:
                return  # a newer node's message: ignore what we do not know
            handler(self, event)
        # AttributeError: a text that is not a string (Message.of calls its methods)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            log.warn(
                "bad cluster message on {channel}: {data!r}", channel=channel, data=data[:200]
            )

    def _on_record(self, event: dict[str, Any]) -> None:
        node = event["n"]
        if node == self.node:
            return
        record = SessionRecord.from_fields(event["r"])
        self.mirror.put(node, int(event["g"]), record)
        self._maybe_resync()

    def _on_detach(self, event: dict[str, Any]) -> None:
        node = event["n"]
        if node != self.node:
            self.mirror.drop(node, int(event["g"]), int(event["i"]))
            self._maybe_resync()

    def _on_snap(self, event: dict[str, Any]) -> None:
        node = event["n"]
        if self._live:  # joined (else the heartbeat will tell)
            self._live.add(node)
        if node != self.node:
            self.mirror.stale.add(node)
            self._maybe_resync()

    def _on_gone(self, event: dict[str, Any]) -> None:
        """A node was reaped (no heartbeat), stopped, or started again under its name: its
        sessions are gone. Every node logs it, and tells its own members of the rooms those
        sessions were in that they left, as a ``part`` would have."""
        node = event["n"]
        if node == self.node:
            return  # our own previous life, or our own stop: nothing we did not know
        self.mirror.forget(node)
        self._live.discard(node)
        why = event.get("w")
        if why is None:
            return  # nothing was there (a node starting fresh)
        ended = int(event.get("c", 0))
        if why == "beat":
            reason = f"no heartbeat for {int(event.get('a', TTL * 1000)) // 1000} s"
        else:
            reason = str(why)
        log.info(
            "node {node} left the cluster ({reason}); {ended} ended",
            event="node_left",
            node=node,
            reason=reason,
            ended=counted(ended, "session"),
            sessions=ended,
        )
        self._on_left(event)

    def _on_left(self, event: dict[str, Any]) -> None:
        """Sessions left rooms without a part being announced (their node was reaped, or they
        ended while their node could not reach Redis): ``[#room] bob has left`` to this
        node's members of each room, paced as any room line."""
        parts = [(str(room), str(user)) for room, user in event.get("p") or ()]
        if parts and self.link.available:
            d = Deferred.fromCoroutine(self._tell_parts(parts))
            d.addErrback(self._log, "telling rooms who left")

    async def _tell_parts(self, parts: list[tuple[str, str]]) -> None:
        for room, user in parts:
            members = await self.room_members(room)
            here = [m for m in members if m.node == self.node]
            if here:
                message = Message.of(left_text(room, user))
                await self.local.deliver_members(here, message, user, ignoring=self.ignores)

    def _maybe_resync(self) -> None:
        if self.mirror.stale:
            self._soon_resync()

    def _on_wall(self, event: dict[str, Any]) -> None:
        if event["n"] != self.node:
            self.local.broadcast_here(Message.of(event["t"]))

    def _on_ignores(self, event: dict[str, Any]) -> None:
        user, names = event["u"], event["v"]
        if names:
            self._ignores[user] = frozenset(json.loads(names))
        else:
            self._ignores.pop(user, None)

    def _on_rooms(self, event: dict[str, Any]) -> None:
        if self.link.available:
            d = Deferred.fromCoroutine(self._refresh_room_names())
            d.addErrback(self._log_quietly)

    def _on_deliver(self, event: dict[str, Any]) -> None:
        self.local.deliver_here(int(event["i"]), Message.of(event["t"]), event.get("s"))

    def _on_end(self, event: dict[str, Any]) -> None:
        text = event.get("t")
        self.local.end_here(int(event["i"]), None if text is None else Message.of(text))

    def _on_logout(self, event: dict[str, Any]) -> None:
        text = event.get("t")
        self.local.logout_here(event["u"], None if text is None else Message.of(text))

    def _on_room(self, event: dict[str, Any]) -> None:
        message, sender = Message.of(event["t"]), event["s"]
        ids = [int(i) for i in event["i"]]
        d = self.local.deliver_members(ids, message, sender, ignoring=self.ignores)
        d.addErrback(self._log, "delivering a room line")

    def _on_announce(self, event: dict[str, Any]) -> None:
        if event["n"] != self.node and self.on_announce is not None:
            self.on_announce(event["k"], dict(event["f"], origin=event["n"]))

    # -- IHub: sessions ------------------------------------------------------------------------

    def allocate_tty(self, kind: str) -> Deferred[str]:
        if not self.link.available or self.clock.seconds() < self._tty_grace_until:
            return succeed(self._fallback_tty(kind))
        d = self._run("ALLOCATE_TTY", kind)
        d.addCallback(lambda tty: tty.decode())

        def offline(failure: Failure) -> str:
            failure.trap(ClusterUnavailable)
            return self._fallback_tty(kind)

        d.addErrback(offline)
        return d

    def _fallback_tty(self, kind: str) -> str:
        """Redis unreachable: a name no other node can hand out (``tel/NODE.N``)."""
        return f"{kind}/{self.node}.{self.local.take_tty(kind).partition('/')[2]}"

    def attach(self, session: Session) -> Deferred[None]:
        self.local.add(session)
        self._published[session.id] = _state(session)
        record = SessionRecord.of(session).to_json()
        return self._quietly(self._run("ATTACH", session.id, session.user, record), "attach")

    def detach(self, session: Session) -> Deferred[None]:
        if not self.local.remove(session):
            return succeed(None)
        self._published.pop(session.id, None)
        if "." in session.tty:  # a fallback name: the local counter's
            self.local.release_tty(session.tty.replace(f"{self.node}.", ""))
        d = self._run("DETACH", session.id, session.user, session.tty)
        return self._quietly(d, "detach")

    def local_sessions(self) -> list[Session]:
        return self.local.local_sessions()

    def counts(self) -> tuple[int, int]:
        here, _ = self.local.counts()
        users = self.mirror.users()
        users.update(self.local.local_users())
        return here + len(self.mirror), len(users)

    def nodes(self) -> list[str]:
        return sorted(self._live)

    @property
    def live_nodes(self) -> int:
        """How many nodes are live (the ``shellserver_cluster_nodes`` gauge)."""
        return len(self._live)

    def sessions(self) -> Deferred[list[SessionInfo]]:
        everyone: list[SessionInfo] = [*self.local.local_sessions(), *self.mirror.records()]
        everyone.sort(key=lambda s: s.login_time)
        return succeed(everyone)

    def sessions_of(self, user: str) -> Deferred[list[SessionInfo]]:
        return succeed(self.sessions_of_now(user))

    def sessions_of_now(self, user: str) -> list[SessionInfo]:
        mine: list[SessionInfo] = [*self.local.local_of(user), *self.mirror.of(user)]
        if len(mine) > 1:
            mine.sort(key=lambda s: s.login_time)
        return mine

    def deliver_now(
        self, to: SessionInfo, message: Message, sender: str | None = None
    ) -> Delivery | None:
        if to.node != self.node:
            return None
        return self.local.deliver_here(to.id, message, sender)

    def admit(
        self, user: str, session_id: int, limit: int, replace: bool
    ) -> Deferred[list[SessionInfo] | None]:
        if not self.link.available:
            return self.local.admit(user, session_id, limit, replace)
        d = self._run("ADMIT", user, session_id, limit, int(replace), int(TTL * 1000))

        def answer(reply: list[bytes]) -> list[SessionInfo] | None:
            if reply[0] == b"refuse":
                return None
            return [self._by_member(m.decode()) for m in reply[1:]]

        def offline(failure: Failure) -> Deferred[list[SessionInfo] | None]:
            failure.trap(ClusterUnavailable)
            return self.local.admit(user, session_id, limit, replace)

        d.addCallbacks(answer, offline)
        return d

    def _by_member(self, member: str) -> SessionInfo:
        node, _, number = member.rpartition("/")
        session_id = int(number)
        if node == self.node:
            found: SessionInfo | None = self.local.local(session_id)
        else:
            found = self.mirror.get(node, session_id)
        if found is not None:
            return found
        # A claim whose session is not attached yet: only its address is known.
        return SessionRecord(node, session_id, "", "", "", "", "", 0.0, 0.0, False, "")

    def release(self, user: str, session_id: int) -> None:
        if self.link.available:
            self._quietly(self._run("RELEASE", user, session_id), "release")

    def changed(self, session: Session) -> Deferred[None]:
        state = _state(session)
        if self._published.get(session.id) != state and session.id in self._published:
            self._published[session.id] = state
            record = SessionRecord.of(session).to_json()
            if self.link.available:
                return self._quietly(self._run("UPDATE", session.id, record), "update")
        return succeed(None)

    def ready(self) -> Deferred[None]:
        if self._joined:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def _stop_waiting(self) -> None:
        """Joined, or gave up waiting (Redis down at start: serve locally, as in an outage)."""
        self._joined = True
        if self._ready_timer is not None and self._ready_timer.active():
            self._ready_timer.cancel()
        self._ready_timer = None
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _publish_updates(self) -> None:
        """Idle time and current command, at most once per ``UPDATES`` per session."""
        if not self.link.available:
            return
        for session in self.local.local_sessions():
            if self._published.get(session.id) != _state(session):
                self.changed(session)

    # -- IHub: delivery ------------------------------------------------------------------------

    def deliver(
        self, to: SessionInfo, message: Message, sender: str | None = None
    ) -> Deferred[Delivery]:
        if to.node == self.node:
            return succeed(self.local.deliver_here(to.id, message, sender))
        if not self.link.available:
            return succeed(Delivery.UNAVAILABLE)
        body = _dump({"op": "dlv", "i": to.id, "t": message.text, "s": sender})
        # Redis decides (the mirror may be a moment behind a mesg n), and drops the message if
        # it runs only after we stopped waiting (a paused Redis): at most once, never late.
        deadline = int((self.clock.seconds() + self._redis_offset + self.link.timeout) * 1000)
        d = self._scripts["DELIVER"](
            [],
            [
                self._names.prefix,
                self._names.all,
                to.node,
                to.id,
                sender or "",
                self._names.of(to.node),
                body,
                deadline,
            ],
        )
        return d.addCallback(lambda answer: _OUTCOMES[answer]).addErrback(_unavailable)

    def broadcast(self, message: Message) -> Deferred[tuple[int, int]]:
        reached, dropped = self.local.broadcast_here(message)
        if not self.link.available:
            return succeed((reached, dropped))
        others = len(self.mirror)
        event = {"op": "wall", "n": self.node, "t": message.text}
        d = self.link.publish(self._names.all, _dump(event))

        def told(_: int) -> tuple[int, int]:
            return reached + others, dropped

        def untold(failure: Failure) -> tuple[int, int]:
            failure.trap(ClusterUnavailable)
            return reached, dropped

        return d.addCallbacks(told, untold)

    def broadcast_here(self, message: Message) -> tuple[int, int]:
        return self.local.broadcast_here(message)

    def logout_user(self, user: str, message: Message | None) -> Deferred[int]:
        """How many: the sessions here, and those of the nodes that heard the logout
        (``kick`` during an outage counts only what it could end)."""
        here = self.local.logout_here(user, message)
        body = {"op": "out", "u": user, "t": None if message is None else message.text}
        by_node: dict[str, int] = {}
        for r in self.mirror.of(user):
            by_node[r.node] = by_node.get(r.node, 0) + 1

        async def tell() -> int:
            count = here
            for node, n in by_node.items():
                try:
                    if await self._send(node, body):
                        count += n
                except ClusterUnavailable:
                    pass
            return count

        return Deferred.fromCoroutine(tell())

    def end_session(self, to: SessionInfo, message: Message | None) -> Deferred[None]:
        if to.node == self.node:
            self.local.end_here(to.id, message)
            return succeed(None)
        text = None if message is None else message.text
        d = self._send(to.node, {"op": "end", "i": to.id, "t": text})
        return self._quietly(d, "ending a session")

    def announce(self, kind: str, fields: dict[str, Any]) -> None:
        if self.link.available:
            event = {"op": "ann", "n": self.node, "k": kind, "f": fields}
            d = self.link.publish(self._names.all, _dump(event))
            self._quietly(d, "announcing " + kind)

    # -- IHub: people and rooms -----------------------------------------------------------------

    def set_ignores(self, user: str, names: frozenset[str] | None) -> None:
        self.local.set_ignores(user, names)
        if names:
            self._ignores[user] = names
        else:
            self._ignores.pop(user, None)
        if self.link.available:
            value = json.dumps(sorted(names)) if names else ""
            self._quietly(self._run("SET_IGNORES", user, value), "ignore list")

    def ignores(self, user: str) -> frozenset[str]:
        return self._ignores.get(user) or self.local.ignores(user)

    def join_room(
        self, room: str, session_id: int, user: str, tty: str, max_rooms: int, max_members: int
    ) -> Deferred[str]:
        d = self._run("JOIN", room, self.node, session_id, user, tty, max_rooms, max_members)
        d.addCallback(lambda status: status.decode())
        return d

    def part_room(self, room: str, session_id: int) -> Deferred[bool]:
        d = self._run("PART", session_id, room)
        d.addCallback(bool)
        return d

    def part_all_rooms(self, session_id: int) -> Deferred[list[str]]:
        """A session ended. While Redis is away it has left no room here: the node's
        ``RESET_SELF`` on reconnect takes ended sessions out of their rooms."""
        d = self._run("PART", session_id, "")
        d.addCallback(lambda rooms: [r.decode() for r in rooms])

        def offline(failure: Failure) -> list[str]:
            failure.trap(ClusterUnavailable)
            return []

        d.addErrback(offline)
        return d

    def rooms_of(self, session_id: int) -> Deferred[list[str]]:
        key = f"{self._names.prefix}sr:{self.node}/{session_id}"
        d = self.link.call("ZRANGE", key, 0, -1)
        d.addCallback(lambda rooms: [r.decode() for r in rooms])
        return d

    def room(self, room: str) -> Deferred[RoomInfo | None]:
        d = self._run("ROOM", room, "0")
        d.addCallback(
            lambda r: RoomInfo(room, r[0].decode(), r[1].decode(), int(r[2])) if r else None
        )
        return d

    def room_list(self) -> Deferred[list[RoomInfo]]:
        d = self._run("ROOM_LIST")

        def infos(flat: list[Any]) -> list[RoomInfo]:
            return [
                RoomInfo(flat[i].decode(), flat[i + 1].decode(), flat[i + 2].decode(), flat[i + 3])
                for i in range(0, len(flat), 4)
            ]

        d.addCallback(infos)
        return d

    def room_members(self, room: str) -> Deferred[list[Member]]:
        d = self._run("ROOM", room, "1")
        d.addCallback(lambda r: [_member(m) for m in r[3:]] if r else [])
        return d

    def set_room_topic(self, room: str, topic: str) -> Deferred[bool]:
        d = self._run("SET_TOPIC", room, topic)
        d.addCallback(bool)
        return d

    def send_room(
        self, room: str, message: Message, sender: str, skip: int | None = None
    ) -> Deferred[tuple[int, int]]:
        async def send() -> tuple[int, int]:
            members = await self.room_members(room)
            here: list[Member] = []
            remote: dict[str, list[int]] = {}
            for m in members:
                if m.node == self.node:
                    here.append(m)
                elif sender not in self.ignores(m.user):  # every node's lists are here
                    remote.setdefault(m.node, []).append(m.session_id)
            # This node's members: paced, a slice per reactor turn (fanout.py).
            local = self.local.deliver_members(here, message, sender, skip, self.ignores)
            reached = 0
            for node, ids in remote.items():
                body = {"op": "room", "i": ids, "t": message.text, "s": sender}
                try:
                    if await self._send(node, body):
                        reached += len(ids)  # and there again, should a list have changed
                except ClusterUnavailable:
                    pass
            local_reached, tried = await local
            return reached + local_reached, tried - local_reached

        return Deferred.fromCoroutine(send())

    def room_names(self) -> list[str]:
        return list(self._room_names)

    async def _refresh_room_names(self) -> None:
        names = await self.link.call("SMEMBERS", self._names.prefix + "rooms")
        self._room_names = sorted(n.decode() for n in names)

    # -- plumbing ----------------------------------------------------------------------------

    def _run(self, name: str, *args: str | int) -> Deferred[Any]:
        """Run a script with the prefix, the all-nodes channel and our node name as its first
        arguments (every script reads them)."""
        head: list[str | int | bytes] = [self._names.prefix, self._names.all]
        if name not in ("SNAPSHOT", "SET_IGNORES", "JOIN", "ROOM", "ROOM_LIST", "SET_TOPIC"):
            head.append(self.node)
        return self._scripts[name]([], [*head, *args])

    def _send(self, node: str, body: dict[str, Any]) -> Deferred[int]:
        return self.link.publish(self._names.of(node), _dump(body))

    def _quietly(self, d: Deferred[Any], what: str) -> Deferred[None]:
        """A change Redis will be told again on reconnect: an outage is not news here."""

        def failed(failure: Failure) -> None:
            if failure.check(ClusterUnavailable) is None:
                log.failure("cluster: {what} failed", failure, what=what)

        d.addCallbacks(lambda _: None, failed)
        return d

    def _log(self, failure: Failure, what: str) -> None:
        if failure.check(ClusterUnavailable) is None:
            log.failure("cluster: {what} failed", failure, what=what)

    def _log_quietly(self, failure: Failure) -> None:
        self._log(failure, "keeping up with the other nodes")


def _state(session: Session) -> tuple[bool, str, int]:
    """What other nodes see of a session that can change; idle in 10 s steps, so a session
    typing steadily is published once per ``UPDATES`` at most, and an idle one not at all."""
    return session.mesg, session.doing, int(session.last_active // 10)


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _member(raw: bytes) -> Member:
    user, tty, node, session_id = json.loads(raw)
    return Member(int(session_id), user, tty, node)


_OUTCOMES = {
    b"ok": Delivery.DELIVERED,
    b"gone": Delivery.GONE,
    b"refused": Delivery.REFUSED,
    b"late": Delivery.UNAVAILABLE,
}


def _unavailable(failure: Failure) -> Delivery:
    failure.trap(ClusterUnavailable)
    return Delivery.UNAVAILABLE


_HANDLERS: dict[str, Callable[[RedisHub, dict[str, Any]], None]] = {
    "att": RedisHub._on_record,
    "upd": RedisHub._on_record,
    "det": RedisHub._on_detach,
    "snap": RedisHub._on_snap,
    "gone": RedisHub._on_gone,
    "left": RedisHub._on_left,
    "wall": RedisHub._on_wall,
    "ign": RedisHub._on_ignores,
    "rooms": RedisHub._on_rooms,
    "dlv": RedisHub._on_deliver,
    "end": RedisHub._on_end,
    "out": RedisHub._on_logout,
    "room": RedisHub._on_room,
    "ann": RedisHub._on_announce,
}


def cluster_hub(url: RedisURL, node: str, reactor: IReactorTime) -> RedisHub:
    """A RedisHub for ``--cluster URL --node NAME``, its link's callbacks wired to it."""

    def up() -> None:
        hub.connected()

    def down() -> None:
        hub.disconnected()

    def heard(channel: str, data: bytes) -> None:
        hub.received(channel, data)

    link = RedisLink(url.host, url.port, url.db, reactor, up, down, heard)
    hub = RedisHub(node, link, reactor)
    return hub
