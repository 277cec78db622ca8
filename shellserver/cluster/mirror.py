"""This node's copy of the other nodes' session records.

``who``, ``write``'s choice of session and ``--max-sessions`` read it as a
lookup, never a Redis round trip: a write costs one PUBLISH and nothing else.
The copy follows the events each node publishes with a generation number per
node; an event out of order (a gap) means one was missed, and that node's
records are loaded again (``stale`` tells the hub which). The heartbeat lists
the live nodes and their generations, so a missed event or a dead node is
noticed within one beat even when no event comes.
"""

from __future__ import annotations

from attrs import define, field

from shellserver.record import SessionRecord


@define
class Mirror:
    #: By node, then session id.
    _nodes: dict[str, dict[int, SessionRecord]] = field(factory=dict)
    _by_user: dict[str, list[SessionRecord]] = field(factory=dict)
    _gens: dict[str, int] = field(factory=dict)
    #: Nodes whose records must be loaded again.
    stale: set[str] = field(factory=set)
    #: Generation a node was at, by the last heartbeat, when we were behind it.
    _behind: dict[str, int] = field(factory=dict)

    def __len__(self) -> int:
        return sum(len(n) for n in self._nodes.values())

    def nodes(self) -> list[str]:
        return sorted(self._nodes)

    def records(self) -> list[SessionRecord]:
        return [r for n in self._nodes.values() for r in n.values()]

    def of(self, user: str) -> list[SessionRecord]:
        return self._by_user.get(user, [])

    def users(self) -> set[str]:
        return set(self._by_user)

    def get(self, node: str, session_id: int) -> SessionRecord | None:
        return self._nodes.get(node, {}).get(session_id)

    # -- events ---------------------------------------------------------------------

    def _in_order(self, node: str, gen: int) -> bool:
        """Is ``gen`` the next event of ``node``? Marks the node stale on a gap."""
        have = self._gens.get(node)
        if have is not None and gen <= have:
            return False  # already in a snapshot
        if gen != (1 if have is None else have + 1):
            self.stale.add(node)
            return False
        self._gens[node] = gen
        return True

    def put(self, node: str, gen: int, record: SessionRecord) -> None:
        if self._in_order(node, gen):
            self._put(record)

    def drop(self, node: str, gen: int, session_id: int) -> None:
        if self._in_order(node, gen):
            self._drop(node, session_id)

    def snapshot(self, node: str, gen: int, records: list[SessionRecord]) -> None:
        """``node``'s records at ``gen`` (ignored if the events are already past it)."""
        have = self._gens.get(node)
        if have is not None and gen < have:
            return
        self.forget(node)
        self._gens[node] = gen
        self._nodes[node] = {}
        for r in records:
            self._put(r)
        self.stale.discard(node)

    def forget(self, node: str) -> None:
        """``node`` is gone (reaped, or no longer in the heartbeat's list)."""
        for r in list(self._nodes.get(node, {}).values()):
            self._drop(node, r.id)
        self._nodes.pop(node, None)
        self._gens.pop(node, None)
        self.stale.discard(node)

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

    def _put(self, record: SessionRecord) -> None:
        mine = self._nodes.setdefault(record.node, {})
        old = mine.get(record.id)
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
