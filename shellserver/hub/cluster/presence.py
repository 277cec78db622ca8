"""Who is where: this node's sessions in Redis, and the other nodes' sessions here.

This node writes its own session records (attach, update, detach) in Lua scripts that
also publish them; it follows every other node's in a :class:`Mirror`, so listing and
choosing a session never wait for Redis. Liveness is a heartbeat into a sorted set
scored by Redis's clock; any node reaps a node whose beat is older than the TTL, so a
``kill -9`` disappears from ``who`` within TTL + one beat. tty names and ``--max-sessions``
claims are cluster-wide, decided in Redis; while Redis cannot be reached both fall back
to this node's own (``tel/NODE.N``, the local table).
"""

from __future__ import annotations

import uuid
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from shellserver.hub.cluster.calls import Calls, log, logged, logged_quietly, quietly
from shellserver.hub.cluster.ignores import IgnoreLists
from shellserver.hub.cluster.mirror import Mirror
from shellserver.hub.local import ClusterUnavailable, Hub
from shellserver.hub.record import SessionInfo, SessionRecord
from shellserver.hub.session import Session
from shellserver.text.words import counted

#: Seconds between heartbeats, and after which a silent node is reaped: a ``kill -9``'d
#: node must be gone from ``who`` within 15 s, and TTL plus one beat is at most 12 s.
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
class Presence:
    """This node's part in the cluster's table of sessions and nodes."""

    node: str
    calls: Calls
    clock: IReactorTime
    local: Hub
    mirror: Mirror
    #: Put back in Redis with the sessions whenever this node republishes.
    ignore_lists: IgnoreLists
    _published: dict[int, tuple[bool, str, int, bool, str]] = field(init=False, factory=dict)
    _beat: LoopingCall | None = field(init=False, default=None)
    _updates: LoopingCall | None = field(init=False, default=None)
    _started: bool = field(init=False, default=False)
    #: The cluster's epoch as this node last saw it (a random value Redis keeps; a new one
    #: means Redis lost its data) and until when tty names are not taken from Redis.
    _epoch: bytes | None = field(init=False, default=None)
    _tty_grace_until: float = field(init=False, default=0.0)
    #: Logins wait (at most ``READY_WAIT``) until the node has joined the cluster.
    _joined: bool = field(init=False, default=False)
    _waiting: list[Deferred[None]] = field(init=False, factory=list)
    _ready_timer: IDelayedCall | None = field(init=False, default=None)
    _resync_call: IDelayedCall | None = field(init=False, default=None)
    #: The live nodes: those of the last heartbeat, and since then those heard joining
    #: (their snapshot event) less those heard going (``status``, the nodes gauge).
    _live: set[str] = field(init=False, factory=set)

    # -- joining and leaving -------------------------------------------------------------

    def start(self) -> None:
        """Logins wait for the first join only so long; changes start being published."""
        self._ready_timer = self.clock.callLater(READY_WAIT, self._stop_waiting)
        self._updates = LoopingCall(self._publish_updates)
        self._updates.clock = self.clock
        self._updates.start(UPDATES, now=False).addErrback(logged, "publishing updates")

    def leave(self) -> Deferred[None]:
        """Stop beating and take our records out at once, so that nobody waits for the TTL
        to see this node gone; fires when done, or when Redis could not be told."""
        for loop in (self._beat, self._updates):
            if loop is not None and loop.running:
                loop.stop()
        if self._resync_call is not None and self._resync_call.active():
            self._resync_call.cancel()
        self._stop_waiting()
        d: Deferred[Any] = (
            self.calls.run("REAP_SELF", "stopped") if self.calls.available else succeed(None)
        )
        d.addErrback(lambda _: None)
        return d

    async def enter(self) -> None:
        """Redis is (back): put our sessions there, then load everyone else's. Everything
        up to the first wait runs as the link comes up, before any event is handled."""
        first = not self._started
        self._started = True
        if not first:  # Redis may have lost its data, or a node restarted meanwhile
            self.mirror.reset()
        else:  # a node of this name that died may have left records
            await self.calls.run("REAP_SELF", "restarted")
        await self._check_epoch()
        await self._republish()
        live = await self._heartbeat()
        self.mirror.stale.update(n for n in live if n != self.node)
        await self._load_stale()

    def entered(self) -> None:
        """Joined: logins waiting go on, and the heartbeat starts (once)."""
        self._stop_waiting()
        if self._beat is None:
            self._beat = LoopingCall(self._beat_once)
            self._beat.clock = self.clock
            self._beat.start(BEAT, now=False).addErrback(logged, "heartbeat")

    def lost(self) -> None:
        """Redis is gone: this node sees no cluster now, and beats nothing."""
        self._live = set()
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        self._beat = None

    async def _check_epoch(self) -> None:
        """Redis lost its data (restarted empty) if the epoch we knew is gone. Until every
        node had time to reconnect and republish (TTL and a beat), the tty names they hold
        are not in Redis: this node gives fallback names (``tel/NODE.N``) meanwhile."""
        key = self.calls.names.prefix + "epoch"
        await self.calls.link.call("SET", key, uuid.uuid4().hex, "NX")
        epoch = await self.calls.link.call("GET", key)
        if self._epoch is not None and epoch != self._epoch:
            self._tty_grace_until = self.clock.seconds() + TTL + BEAT
            log.warn("cluster: Redis lost its data; tty names are this node's own for a while")
        self._epoch = epoch

    async def _republish(self) -> None:
        here = self.local.local_sessions()
        await self.calls.run("RESET_SELF", *[f for s in here for f in (s.id, s.tty)])
        records = [SessionRecord.of(s).to_json() for s in here]
        first = True
        while first or records:
            batch, records = records[:BATCH], records[BATCH:]
            await self.calls.run("REPUBLISH", *batch)
            first = False
        self._published = {s.id: _state(s) for s in self.local.local_sessions()}
        await self.ignore_lists.republish()

    async def _heartbeat(self) -> dict[str, int]:
        fresh, flat, redis_ms = await self.calls.run("HEARTBEAT", int(TTL * 1000))
        self.calls.redis_offset = redis_ms / 1000 - self.clock.seconds()
        live = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        self._live = set(live)
        if fresh and self._started and len(self.local.local_sessions()):
            # We had been reaped (a long pause) or Redis lost its data: put ourselves back.
            await self._republish()
        self.mirror.check(live, self.node)
        return live

    def _beat_once(self) -> Deferred[None]:
        async def beat() -> None:
            if not self.calls.available:
                return
            await self._heartbeat()
            await self._load_stale()

        d = Deferred.fromCoroutine(beat())
        d.addErrback(logged_quietly)
        return d

    async def _load_stale(self) -> None:
        for node in list(self.mirror.stale):
            if node == self.node:
                self.mirror.stale.discard(node)
                continue
            gen, raw = await self.calls.run("SNAPSHOT", node)
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
                if self.calls.available:
                    d = Deferred.fromCoroutine(self._load_stale())
                    d.addErrback(logged_quietly)

            self._resync_call = self.clock.callLater(0.05, run)

    def _maybe_resync(self) -> None:
        if self.mirror.stale:
            self._soon_resync()

    # -- what the other nodes say ----------------------------------------------------------

    def on_record(self, event: dict[str, Any]) -> None:
        """A session of another node attached or changed (``att``, ``upd``)."""
        node = event["n"]
        if node == self.node:
            return
        record = SessionRecord.from_fields(event["r"])
        self.mirror.put(node, int(event["g"]), record)
        self._maybe_resync()

    def on_detach(self, event: dict[str, Any]) -> None:
        """A session of another node ended (``det``)."""
        node = event["n"]
        if node != self.node:
            self.mirror.drop(node, int(event["g"]), int(event["i"]))
            self._maybe_resync()

    def on_snap(self, event: dict[str, Any]) -> None:
        """A node (re)published all its records (``snap``): it is live, load them."""
        node = event["n"]
        if self._live:  # joined (else the heartbeat will tell)
            self._live.add(node)
        if node != self.node:
            self.mirror.stale.add(node)
            self._maybe_resync()

    def on_gone(self, event: dict[str, Any]) -> bool:
        """A node was reaped (no heartbeat), stopped, or started again under its name: its
        sessions are gone, and every node logs it. True when sessions ended with it (their
        rooms are to be told), False when it was our own previous life or nothing at all."""
        node = event["n"]
        if node == self.node:
            return False  # our own previous life, or our own stop: nothing we did not know
        self.mirror.forget(node)
        self._live.discard(node)
        why = event.get("w")
        if why is None:
            return False  # nothing was there (a node starting fresh)
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
        return True

    # -- this node's sessions --------------------------------------------------------------

    def allocate_tty(self, kind: str) -> Deferred[str]:
        """The lowest free name cluster-wide; this node's own while Redis cannot say."""
        if not self.calls.available or self.clock.seconds() < self._tty_grace_until:
            return succeed(self._fallback_tty(kind))
        d = self.calls.run("ALLOCATE_TTY", kind)
        d.addCallback(lambda tty: tty.decode())

        def offline(failure: Failure) -> str:
            failure.trap(ClusterUnavailable)
            return self._fallback_tty(kind)

        d.addErrback(offline)
        return d

    def claim_tty(self, tty: str) -> Deferred[str | None]:
        """That name cluster-wide if no node holds it, else None; None too while Redis cannot
        say (a name claimed in an outage could be another node's)."""
        if not self.calls.available:
            return succeed(None)
        d = self.calls.run("CLAIM_TTY", tty)
        d.addCallback(lambda got: got.decode() or None)

        def offline(failure: Failure) -> None:
            failure.trap(ClusterUnavailable)
            return None

        d.addErrback(offline)
        return d

    def _fallback_tty(self, kind: str) -> str:
        """Redis unreachable: a name no other node can hand out (``tel/NODE.N``)."""
        return f"{kind}/{self.node}.{self.local.take_tty(kind).partition('/')[2]}"

    def attach(self, session: Session) -> Deferred[None]:
        """Served here at once; every node lists it once Redis has it."""
        self.local.add(session)
        self._published[session.id] = _state(session)
        record = SessionRecord.of(session).to_json()
        return quietly(self.calls.run("ATTACH", session.id, session.user, record), "attach")

    def detach(self, session: Session) -> Deferred[None]:
        """Gone here at once; its record, claim and tty name go from Redis (twice is
        harmless: only the first does anything)."""
        if not self.local.remove(session):
            return succeed(None)
        self._published.pop(session.id, None)
        if "." in session.tty:  # a fallback name: the local counter's
            self.local.release_tty(session.tty.replace(f"{self.node}.", ""))
        d = self.calls.run("DETACH", session.id, session.user, session.tty)
        return quietly(d, "detach")

    def admit(
        self, user: str, session_id: int, limit: int, replace: bool
    ) -> Deferred[list[SessionInfo] | None]:
        """``--max-sessions`` across the cluster, checked and claimed in one script so two
        logins on two nodes cannot both pass; this node's table alone in an outage."""
        if not self.calls.available:
            return self.local.admit(user, session_id, limit, replace)
        d = self.calls.run("ADMIT", user, session_id, limit, int(replace), int(TTL * 1000))

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
        """An abandoned login's claim must not count against the user's limit."""
        if self.calls.available:
            quietly(self.calls.run("RELEASE", user, session_id), "release")

    def changed(self, session: Session) -> Deferred[None]:
        """Publish what other nodes see of ``session`` if it changed since last told."""
        state = _state(session)
        if self._published.get(session.id) != state and session.id in self._published:
            self._published[session.id] = state
            record = SessionRecord.of(session).to_json()
            if self.calls.available:
                return quietly(self.calls.run("UPDATE", session.id, record), "update")
        return succeed(None)

    def ready(self) -> Deferred[None]:
        """A login waits for the join, so its tty name and claim are the cluster's."""
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
        if not self.calls.available:
            return
        for session in self.local.local_sessions():
            if self._published.get(session.id) != _state(session):
                self.changed(session)

    # -- the nodes ---------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        """The live nodes, sorted: none while Redis cannot be reached."""
        return sorted(self._live)

    @property
    def live_nodes(self) -> int:
        """How many nodes are live (the ``shellserver_cluster_nodes`` gauge)."""
        return len(self._live)


def _state(session: Session) -> tuple[bool, str, int, bool, str]:
    """What other nodes see of a session that can change; idle in 10 s steps, so a session
    typing steadily is published once per ``UPDATES`` at most, and an idle one not at all.
    Detached or resumed (from another address) is told as well."""
    return (
        session.mesg,
        session.doing,
        int(session.last_active // 10),
        session.detached,
        session.peer,
    )
