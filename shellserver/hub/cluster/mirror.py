"""This node's copy of the other nodes' session records.

``who``, ``write``'s choice of session and ``--max-sessions`` read it as a
lookup, never a Redis round trip: a write costs one PUBLISH and nothing else.
The copy follows the events each node publishes with a generation number per
node; an event out of order (a gap) means one was missed, and that node's
records are loaded again (``stale`` tells the hub which), and the events past
the gap are applied after them. The heartbeat lists the live nodes and their
generations, so a dead node is noticed at the next beat and a missed event
within two (behind at one beat is normal: events in flight), even when no
other event comes.
"""

from __future__ import annotations

from attrs import define, field

from shellserver.hub.record import SessionRecord

#: An event's change: a record put (attached or updated), or a session id dropped.
Change = SessionRecord | int
#: Events kept per node while its records are loaded again (a load takes milliseconds).
AHEAD = 1000


@define
class Mirror:
    """The other nodes' sessions as the events say, so reading them costs no round trip;
    it knows when it may be wrong (``stale``) so the hub can load a node again."""

    #: By node, then session id.
    _nodes: dict[str, dict[int, SessionRecord]] = field(factory=dict)
    _by_user: dict[str, list[SessionRecord]] = field(factory=dict)
    _gens: dict[str, int] = field(factory=dict)
    #: Nodes whose records must be loaded again.
    stale: set[str] = field(factory=set)
    #: Generation a node was at, by the last heartbeat, when we were behind it.
    _behind: dict[str, int] = field(factory=dict)
    #: Events past a gap, by node and generation. A snapshot's reply and the events come on
    #: two connections, so an event newer than the snapshot can arrive before it: it is
    #: applied after the snapshot instead of missing until the heartbeat notices (two beats).
    _ahead: dict[str, dict[int, Change]] = field(factory=dict)
    #: Nodes whose events ahead were more than ``AHEAD``: none kept, loaded again.
    _spilled: set[str] = field(factory=set)

    def __len__(self) -> int:
        """How many sessions the other nodes have (``who``'s count, a wall's reach)."""
        return sum(len(n) for n in self._nodes.values())

    def nodes(self) -> list[str]:
        """The nodes whose records are held (a node with none is still listed once loaded)."""
        return sorted(self._nodes)

    def records(self) -> list[SessionRecord]:
        """Every other node's session, for ``who``."""
        return [r for n in self._nodes.values() for r in n.values()]

    def of(self, user: str) -> list[SessionRecord]:
        """``user``'s sessions on other nodes, for ``write``'s choice, without a copy."""
        return self._by_user.get(user, [])

    def users(self) -> set[str]:
        """The users with a session elsewhere (a fresh set: the caller adds its own)."""
        return set(self._by_user)

    def get(self, node: str, session_id: int) -> SessionRecord | None:
        """One session of another node, or None: a delivery's target, a claim's owner."""
        return self._nodes.get(node, {}).get(session_id)

    # -- events ---------------------------------------------------------------------

    def put(self, node: str, gen: int, record: SessionRecord) -> None:
        """An ``att`` or ``upd`` event: applied in generation order, or kept past a gap."""
        self._event(node, gen, record)

    def drop(self, node: str, gen: int, session_id: int) -> None:
        """A ``det`` event: applied in generation order, or kept past a gap."""
        self._event(node, gen, session_id)

    def _event(self, node: str, gen: int, change: Change) -> None:
        """Apply ``change`` if ``gen`` is the next event of ``node``. On a gap the node is
        stale and the event is kept for after the snapshot that fills the gap."""
        have = self._gens.get(node)
        if have is not None and gen <= have:
            return  # already in a snapshot
        if gen != (1 if have is None else have + 1):
            self.stale.add(node)
            if node not in self._spilled:
                ahead = self._ahead.setdefault(node, {})
                ahead[gen] = change
                if len(ahead) > AHEAD:  # too many to keep: load again after this load
                    del self._ahead[node]
                    self._spilled.add(node)
            return
        self._gens[node] = gen
        self._apply(node, change)

    def snapshot(self, node: str, gen: int, records: list[SessionRecord]) -> None:
        """``node``'s records at ``gen`` (ignored if the events are already past it), then
        the events that came ahead of it."""
        have = self._gens.get(node)
        if have is not None and gen < have:
            return
        ahead = self._ahead.pop(node, {})
        spilled = node in self._spilled
        self.forget(node)
        self._nodes[node] = {}
        for r in records:
            self._put(r)
        while gen + 1 in ahead:
            gen += 1
            self._apply(node, ahead.pop(gen))
        self._gens[node] = gen
        later = {g: c for g, c in ahead.items() if g > gen}
        if later:  # another gap: load again
            self._ahead[node] = later
            self.stale.add(node)
        if spilled:  # events were lost while loading: load again
            self.stale.add(node)

    def forget(self, node: str) -> None:
        """``node`` is gone (reaped, or no longer in the heartbeat's list)."""
        for r in list(self._nodes.get(node, {}).values()):
            self._drop(node, r.id)
        self._nodes.pop(node, None)
        self._gens.pop(node, None)
        self._ahead.pop(node, None)
        self._spilled.discard(node)
        self.stale.discard(node)

    def reset(self) -> None:
        """The link to Redis was lost: what Redis holds may have been lost with it (a restart
        without persistence) or a node may have been reaped and started again meanwhile, and
        either way its generations start again from 1. Keep the records for show, forget the
        generations so that the next snapshot of each node is taken whatever its number."""
        self._gens.clear()
        self._behind.clear()
        self._ahead.clear()
        self._spilled.clear()
        self.stale.update(self._nodes)

    def check(self, live: dict[str, int], me: str) -> None:
        """The heartbeat's list of live nodes and their generations: forget the dead, mark
        the nodes we are behind on (or have never loaded) stale."""
        for node in list(self._nodes):
            if node not in live:
                self.forget(node)
        for node, gen in live.items():
            if node == me:
                continue
            have = self._gens.get(node)
            if node not in self._nodes or have is None:
                self.stale.add(node)
                continue
            # Behind now is normal (events in flight); still behind where it was a beat ago
            # means an event was lost.
            was = self._behind.pop(node, None)
            if was is not None and have < was:
                self.stale.add(node)
            elif have < gen:
                self._behind[node] = gen
        for node in list(self._behind):
            if node not in live:
                del self._behind[node]

    # -- internals -------------------------------------------------------------------

    def _apply(self, node: str, change: Change) -> None:
        if isinstance(change, SessionRecord):
            self._put(change)
        else:
            self._drop(node, change)

    def _put(self, record: SessionRecord) -> None:
        mine = self._nodes.setdefault(record.node, {})
        old = mine.get(record.id)
        if old is not None and old.user != record.user:
            self._drop(old.node, old.id)
            old = None
        mine[record.id] = record
        users = self._by_user.setdefault(record.user, [])
        if old is not None and old in users:
            users[users.index(old)] = record
        else:
            users.append(record)

    def _drop(self, node: str, session_id: int) -> None:
        record = self._nodes.get(node, {}).pop(session_id, None)
        if record is None:
            return
        users = self._by_user.get(record.user)
        if users is not None:
            users.remove(record)
            if not users:
                del self._by_user[record.user]
