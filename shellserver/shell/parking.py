"""Restart and drain without losing anyone: sessions parked in the store, taken back after.

``shellserver restart`` (and ``SIGHUP``) park every session of the node: each
one is told ``The server is restarting; reconnect to resume this session.``,
its state (tty name, cwd, rooms, mesg, history, the half-typed line, what it
held while detached) is written to the store in one transaction, and only then
is its connection closed, without the session ending: no logout is recorded,
no room is told it left. ``drain`` does the same for one node of a cluster.

A node that starts takes its own parked sessions back as detached sessions for
the rest of their ``--linger`` (:func:`restore`); a login on another node finds
the parked sessions of nodes that are not running and offers them like its own
detached ones (:func:`take_for`). A parked session no one resumes in time is
swept (:func:`sweep`): its held ``write`` messages go to the mailbox, as for a
detached session that ends.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from shellserver.hub.local import ClusterUnavailable, Message
from shellserver.hub.record import SessionInfo
from shellserver.hub.rooms import MAX_MEMBERS, MAX_ROOMS_PER_SESSION
from shellserver.hub.session import Session
from shellserver.ops.throttle import bucket_for
from shellserver.shell import people
from shellserver.shell.commands.registry import Services
from shellserver.shell.detach import HeldOutput, HeldWrite, Lingering
from shellserver.shell.resume import ResumeChannel, ResumeTokens
from shellserver.store import parked as parked_store
from shellserver.store.accounts import AccountDB, LoginRecord
from shellserver.store.parked import Parked
from shellserver.terminal.discipline import Terminal

log = Logger()


class SessionStart(Protocol):
    """What parking needs of the session start (``sessionstart.SessionStart`` provides it):
    the services, the limits a restored session gets, and how a detached session ends."""

    @property
    def services(self) -> Services:
        """The hub, the store and the clock."""

    @property
    def ids(self) -> Iterator[int]:
        """Session ids, unique in this process."""

    @property
    def cmd_rate(self) -> float:
        """``--cmd-rate``: a restored session's bucket."""

    @property
    def cmd_burst(self) -> int:
        """``--cmd-burst``: a restored session's bucket."""

    @property
    def linger(self) -> float:
        """``--linger``: how long a parked session may be resumed."""

    @property
    def max_output(self) -> int:
        """``--max-output``: what a detached session holds at most."""

    @property
    def held_end(self) -> Callable[[HeldOutput], None]:
        """How a held port ends its session (shared by every held port)."""

    @property
    def lingering(self) -> Lingering:
        """When each detached session's linger is over (one heap for the node)."""

    @property
    def tokens(self) -> ResumeTokens:
        """The browser pages' resume tokens: parked and taken back with their sessions."""


#: Told to every session before its connection closes for a restart or a drain.
RESTARTING = "The server is restarting; reconnect to resume this session."
#: Seconds between parking and the stop: the CLI's answer goes out first.
STOP_DELAY = 0.2
#: How long a login waits for another node to hand a detached session over, and how often
#: it looks in the store meanwhile.
HAND_OVER_WAIT = 5.0
HAND_OVER_POLL = 0.1
#: The state's version: a node that meets another version does not guess (the row is swept).
STATE_VERSION = 1


class _Parked:
    """The port of a session whose state is in the store: nothing reaches it any more, and its
    connection's end (which follows) must not end the session."""

    connected = False
    width = 80
    height = 24

    def write(self, text: str) -> None:
        """Nothing is shown: the session lives on in the store."""

    def notify(self, message: Message) -> bool:
        """Dropped: the session is not in the hub any more either."""
        return False

    def close(self) -> None:
        """Nothing to close."""


PARKED_PORT = _Parked()


def state_of(session: Session, rooms: list[str]) -> dict[str, Any]:
    """What a session is, as JSON can keep it: from its terminal (attached) or from what its
    held output kept (detached)."""
    port = session.terminal
    if isinstance(port, HeldOutput):
        history, line = list(port.history), port.line
        texts, messages, dropped = list(port.texts or ()), port.messages, port.dropped
        writes = [[w.sender, w.sent, w.text] for w in port.writes or ()]
    elif isinstance(port, Terminal):
        history, line = port.leftover()
        texts, messages, dropped, writes = [], 0, 0, []
    else:
        history, line, texts, messages, dropped, writes = [], "", [], 0, 0, []
    return {
        "v": STATE_VERSION,
        "role": session.role,
        "peer": session.peer,
        "term": session.term,
        "key": session.key,
        "login_time": session.login_time,
        "last_active": session.last_active,
        "login_record": session.login_record,
        "cwd": session.cwd,
        "mesg": session.mesg,
        "rooms": rooms,
        "width": port.width,
        "height": port.height,
        "history": history,
        "line": line,
        "texts": texts,
        "messages": messages,
        "dropped": dropped,
        "writes": writes,
    }


async def park_node(start: SessionStart, node: str, linger: float) -> int:
    """Park every session of this node (the restart, the drain); how many were written.

    The rows are written before any connection closes, so a store that fails parks
    nothing and ends nothing (the caller reports the failure; the sessions go on).
    """
    services = start.services
    hub = services.hub
    now = services.clock.seconds()
    sessions = hub.local_sessions()
    rows = []
    for session in sessions:
        rooms = await hub.rooms_of(session.id)
        kept = state_of(session, rooms)
        kept["resume"] = start.tokens.parked(session)  # the page comes back with its token
        state = json.dumps(kept, separators=(",", ":"))
        rows.append((node, session.user, session.tty, now, now + linger, state))
    written: int = await people.run(services.store, parked_store.park, rows)
    notice = Message.of("\n" + RESTARTING)
    for session in sessions:
        port = session.terminal
        session.terminal = PARKED_PORT  # its connection's end no longer ends it
        if isinstance(port, HeldOutput):
            port.let_go()
        else:
            port.notify(notice)
            if isinstance(port, Terminal) and isinstance(port.wire, ResumeChannel):
                port.wire.coming_back()  # a browser page reconnects by itself
            port.close()
        with contextlib.suppress(ClusterUnavailable):
            await hub.detach(session)
    log.info(
        "parked {count} session(s) of node {node} for {linger:.0f} s",
        event="parked",
        count=written,
        node=node,
        linger=linger,
    )
    return written


def held_of(
    state: dict[str, Any],
    limit: int,
    user: str,
    kind: str,
    end: Callable[[HeldOutput], None],
    clock: IReactorTime,
    until: float = 0.0,
) -> HeldOutput:
    """A detached session's port again, from its parked state."""
    held = HeldOutput(
        int(state.get("width", 80)),
        int(state.get("height", 24)),
        limit,
        user,
        kind,
        end,
        clock,
        tuple(str(x) for x in state.get("history", [])),
        str(state.get("line", "")),
        until=until,
    )
    for text in state.get("texts", []):
        held.write(str(text))
    held.messages = int(state.get("messages", 0))
    held.dropped = int(state.get("dropped", 0))
    writes = [HeldWrite(str(s), float(t), str(x)) for s, t, x in state.get("writes", [])]
    held.writes = writes or None
    return held


def _state(row: Parked) -> dict[str, Any] | None:
    try:
        state = json.loads(row.state)
    except ValueError:
        return None
    if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
        return None
    return state


async def restore(start: SessionStart, row: Parked) -> Session | None:
    """Make the parked session ``row`` a detached session of this node again, for the rest of
    its linger: its tty name if still free (else a new one), its rooms, what it held. None
    when its state cannot be read (it is then swept as expired)."""

    state = _state(row)
    if state is None:
        log.warn("a parked session of {user} could not be read; dropped", user=row.owner)
        await _save_mail(start, row)
        return None
    services = start.services
    hub = services.hub
    tty = await hub.claim_tty(row.tty)
    if tty is None:
        tty = await hub.allocate_tty(row.tty.partition("/")[0])
    session = Session(
        id=next(start.ids),
        node=hub.node,
        user=row.owner,
        role=str(state.get("role", "user")),
        tty=tty,
        peer=str(state.get("peer", "")),
        term=str(state.get("term", "")),
        login_time=float(state.get("login_time", row.parked)),
        terminal=PARKED_PORT,
        last_active=float(state.get("last_active", row.parked)),
        mesg=bool(state.get("mesg", True)),
        cwd=str(state.get("cwd", "")),
        login_record=state.get("login_record"),
        bucket=bucket_for(start.cmd_rate, start.cmd_burst),
        key=str(state.get("key", "")),
    )
    held = held_of(
        state,
        start.max_output,
        row.owner,
        tty.partition("/")[0],
        start.held_end,
        services.clock,
        row.until,
    )
    session.terminal = held
    session.detached_at = row.parked
    start.tokens.unparked(session, str(state.get("resume", "")))
    ignores: list[str] = await people.run(services.store, people.ignore_list, row.owner)
    await people.attach(hub, session, frozenset(ignores))
    for room in state.get("rooms", [])[:MAX_ROOMS_PER_SESSION]:
        await hub.join_room(
            str(room), session.id, session.user, tty, MAX_ROOMS_PER_SESSION, MAX_MEMBERS
        )
    start.lingering.add(held)
    return session


async def restore_node(start: SessionStart, node: str | None) -> int:
    """At start: this node's parked sessions (a server alone: every node's) back in memory."""
    services = start.services
    rows: list[Parked] = await people.run(
        services.store, parked_store.take_of_node, node, services.clock.seconds()
    )
    restored = 0
    for row in rows:
        if await restore(start, row) is not None:
            restored += 1
    if rows:
        log.info(
            "{count} parked session(s) detached again, resumable", event="unparked", count=restored
        )
    return restored


#: :func:`people.login_state`'s answer: the ignore list, the unread count, the previous login.
LoginState = tuple[frozenset[str], int, LoginRecord | None]


def _parked_and_state(db: AccountDB, user: str, now: float) -> tuple[list[Parked], LoginState]:
    """On the database thread: the user's parked sessions and :func:`people.login_state`."""
    return parked_store.parked_of(db, user, now), people.login_state(db, user)


async def take_for(start: SessionStart, user: str) -> tuple[list[Parked], LoginState]:
    """``user``'s parked sessions that no running node will take back: those of nodes that are
    not live (a drained node, a stopped one). A server alone took its own at start.

    With them, in the same trip to the store (each trip is a thread hand-off and a reactor
    wake-up), what the session's start reads (:func:`people.login_state`): an interactive
    login asks both, and nearly always finds no parked session."""
    services = start.services
    hub = services.hub
    live = set(hub.nodes()) - {hub.node}  # rows for this node are handed over to it
    rows, state = await people.run(
        services.store, _parked_and_state, user, services.clock.seconds()
    )
    return [r for r in rows if r.node not in live], state


async def park_one(start: SessionStart, session_id: int, node: str) -> bool:
    """Another node asks for one of our detached sessions (its user logged in there): park it
    in the store for ``node``, for the rest of its linger, and let go of it here."""
    services = start.services
    hub = services.hub
    found = [s for s in hub.local_sessions() if s.id == session_id]
    if not found or not isinstance(found[0].terminal, HeldOutput) or found[0].terminal.done:
        return False
    session = found[0]
    held = session.terminal
    assert isinstance(held, HeldOutput)
    rooms = await hub.rooms_of(session.id)
    state = json.dumps(state_of(session, rooms), separators=(",", ":"))
    if held.done:  # resumed or ended here while the rooms were read
        return False
    since = session.detached_at or services.clock.seconds()
    row = (node, session.user, session.tty, since, since + start.linger, state)
    held.let_go()
    session.terminal = PARKED_PORT
    try:
        await people.run(services.store, parked_store.park, [row])
    finally:
        with contextlib.suppress(ClusterUnavailable):
            await hub.detach(session)
    log.info(
        "{user}'s detached {tty} handed over to node {node}",
        event="handed_over",
        user=session.user,
        tty=session.tty,
        node=node,
    )
    return True


async def fetch(start: SessionStart, record: SessionInfo, user: str) -> Session | None:
    """Take over ``record``, a detached session of ``user`` on another node: ask that node to
    park it for this one, wait for the row (``HAND_OVER_WAIT`` at most), take it. None when
    it did not come (the node is away, or the session ended meanwhile)."""
    services = start.services
    hub = services.hub
    await hub.hand_over(record, hub.node)
    deadline = services.clock.seconds() + HAND_OVER_WAIT
    while True:
        rows: list[Parked] = await people.run(
            services.store, parked_store.parked_of, user, services.clock.seconds()
        )
        for row in rows:
            if row.node == hub.node and row.tty == record.tty:
                return await take(start, row)
        if services.clock.seconds() >= deadline:
            return None
        await deferLater(services.clock, HAND_OVER_POLL)


async def take(start: SessionStart, row: Parked) -> Session | None:
    """Take ``row`` (unless another node took it first) as a detached session here."""
    taken: Parked | None = await people.run(start.services.store, parked_store.take, row.id)
    if taken is None:
        return None
    return await restore(start, taken)


async def sweep(start: SessionStart) -> int:
    """Parked sessions whose linger is over: their held ``write`` messages to the mailbox, their
    login records closed. Any node may do it: each row is taken once."""
    services = start.services
    rows: list[Parked] = await people.run(
        services.store, parked_store.take_expired, services.clock.seconds()
    )
    for row in rows:
        await _save_mail(start, row)
    return len(rows)


async def _save_mail(start: SessionStart, row: Parked) -> None:
    state = _state(row)
    if state is None:
        return
    services = start.services
    held = held_of(state, start.max_output, row.owner, "", lambda h: None, services.clock)
    for w in held.mail():
        await people.run(
            services.store,
            people.save_message,
            row.owner,
            w.sender,
            people.to_blob(w.text),
            w.sent,
        )
    record = state.get("login_record")
    if isinstance(record, int):
        await services.store.record_logout(record, services.clock.seconds())


class Restart:
    """``shellserver restart``, ``drain`` and ``SIGHUP``: park every session of this node, then
    stop the process (status 0, for its supervisor to start it again). Made by the assembly
    with the same ``stop`` as the shutdown's."""

    def __init__(
        self,
        start: SessionStart,
        node: str,
        stop: Callable[[], None],
        audit: Callable[[str, str, str], Awaitable[None]],
    ) -> None:
        self.start = start
        self.node = node
        self.stop = stop
        #: The ledger's record of the action (``Admin.audit``).
        self.audit = audit
        self._running = False

    def heard(self, kind: str, fields: dict[str, Any]) -> None:
        """Another node asks for one of our detached sessions (``IHub.hand_over``)."""
        if kind != "hand":
            return
        try:
            session_id, node = int(fields["i"]), str(fields["to"])
        except (KeyError, TypeError, ValueError):
            return
        d = Deferred.fromCoroutine(park_one(self.start, session_id, node))
        d.addErrback(lambda f: log.failure("handing a session over failed", f))

    async def restart(self, by: str, where: str, what: str = "restart") -> int:
        """Park, then stop; how many sessions were parked. Without ``--linger`` there is
        nothing to resume: the sessions end as at a shutdown. A second call while one runs
        parks nothing more."""
        if self._running:
            return 0
        self._running = True
        linger = self.start.linger
        log.info("{what} asked by {by} ({where})", event=what, what=what, by=by, where=where)
        parked = 0
        try:
            await self.audit(by, where, what)
            if linger > 0:
                parked = await park_node(self.start, self.node, linger)
        finally:
            # A moment later, so the caller's answer (the CLI's) leaves before the stop.
            self.start.services.clock.callLater(STOP_DELAY, self.stop)
        return parked
