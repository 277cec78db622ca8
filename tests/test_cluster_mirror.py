"""The Mirror alone: other nodes' records kept by generation-numbered events and snapshots."""

from __future__ import annotations

from shellserver.hub.cluster.mirror import AHEAD, Mirror
from shellserver.hub.record import SessionRecord


def rec(node: str, sid: int, user: str = "alice", doing: str = "-sh") -> SessionRecord:
    return SessionRecord(node, sid, user, "user", f"tel/{sid}", "p", "", 1.0, 1.0, True, doing)


def consistent(m: Mirror) -> None:
    """The by-user index holds exactly the records, each once."""
    by_user = sorted((r.node, r.id) for u in m.users() for r in m.of(u))
    assert by_user == sorted((r.node, r.id) for r in m.records())
    for u in m.users():
        assert m.of(u), f"empty list kept for {u}"
        assert all(r.user == u for r in m.of(u))
        assert all(m.get(r.node, r.id) is r for r in m.of(u))


def test_events_in_order_are_applied() -> None:
    m = Mirror()
    m.put("b", 1, rec("b", 1))
    m.put("b", 2, rec("b", 2, "bob"))
    m.put("b", 3, rec("b", 1, doing="vi"))  # an update replaces
    assert len(m) == 2 and m.nodes() == ["b"]
    assert m.get("b", 1) == rec("b", 1, doing="vi")
    assert m.users() == {"alice", "bob"}
    m.drop("b", 4, 1)
    assert m.get("b", 1) is None and m.users() == {"bob"}
    assert not m.stale
    consistent(m)


def test_a_gap_marks_the_node_stale_and_is_not_applied() -> None:
    m = Mirror()
    m.put("b", 1, rec("b", 1))
    m.put("b", 3, rec("b", 2))
    assert m.stale == {"b"}
    assert m.get("b", 2) is None
    m.drop("b", 4, 1)  # still a gap: nothing applied
    assert m.get("b", 1) is not None


def test_a_first_event_after_gen_one_is_a_gap() -> None:
    m = Mirror()
    m.put("c", 5, rec("c", 1))
    assert m.stale == {"c"} and len(m) == 0


def test_an_event_already_in_the_snapshot_is_ignored() -> None:
    m = Mirror()
    m.snapshot("b", 5, [rec("b", 1), rec("b", 2)])
    m.drop("b", 4, 1)  # older than the snapshot
    m.put("b", 5, rec("b", 9))
    assert sorted(r.id for r in m.records()) == [1, 2]
    assert not m.stale
    m.drop("b", 6, 1)
    assert sorted(r.id for r in m.records()) == [2]
    consistent(m)


def test_a_snapshot_older_than_the_applied_events_is_ignored() -> None:
    m = Mirror()
    m.snapshot("b", 2, [rec("b", 1)])
    m.put("b", 3, rec("b", 2))
    m.drop("b", 4, 1)
    m.stale.add("b")
    m.snapshot("b", 3, [rec("b", 1), rec("b", 2)])  # taken before the drop
    assert [r.id for r in m.records()] == [2]
    m.snapshot("b", 4, [rec("b", 2)])  # the same generation: harmless
    assert [r.id for r in m.records()] == [2]
    assert not m.stale


def test_a_snapshot_replaces_the_records_and_clears_stale() -> None:
    m = Mirror()
    m.put("b", 1, rec("b", 1))
    m.put("b", 3, rec("b", 2))
    assert m.stale == {"b"}
    m.snapshot("b", 7, [rec("b", 2, "bob"), rec("b", 3, "carol")])
    assert not m.stale
    assert sorted(r.id for r in m.records()) == [2, 3]
    assert m.users() == {"bob", "carol"}
    m.put("b", 8, rec("b", 4))
    assert len(m) == 3
    consistent(m)


def test_forget_drops_only_that_node() -> None:
    m = Mirror()
    m.snapshot("b", 1, [rec("b", 1), rec("b", 2, "bob")])
    m.snapshot("c", 1, [rec("c", 1), rec("c", 2, "carol")])
    m.stale.add("b")
    m.forget("b")
    assert m.nodes() == ["c"] and "b" not in m.stale
    assert m.users() == {"alice", "carol"}
    assert [r.node for r in m.of("alice")] == ["c"]
    consistent(m)
    m.forget("nobody")  # harmless
    # a forgotten node starts again from its first event
    m.put("b", 1, rec("b", 5))
    assert m.get("b", 5) is not None and not m.stale


def test_check_forgets_the_dead_and_marks_the_unknown() -> None:
    m = Mirror()
    m.snapshot("b", 1, [rec("b", 1)])
    m.snapshot("c", 1, [rec("c", 1)])
    m.check({"a": 4, "b": 1, "d": 2}, me="a")
    assert m.nodes() == ["b"]  # c is not in the heartbeat's list: gone
    assert m.stale == {"d"}  # never loaded
    assert "a" not in m.stale  # never ourselves
    consistent(m)


def test_check_behind_once_is_in_flight_twice_is_lost() -> None:
    m = Mirror()
    m.snapshot("b", 3, [rec("b", 1)])
    m.check({"b": 4}, me="a")
    assert not m.stale  # the event for 4 may be on its way
    m.put("b", 4, rec("b", 2))
    m.check({"b": 5}, me="a")
    assert not m.stale  # caught up with 4: behind on 5 is new
    m.check({"b": 5}, me="a")
    assert m.stale == {"b"}  # 5 never came


def test_check_in_step_is_never_stale() -> None:
    m = Mirror()
    m.snapshot("b", 3, [rec("b", 1)])
    for _ in range(3):
        m.check({"b": 3}, me="a")
    assert not m.stale


def test_check_forgets_the_behind_mark_of_a_dead_node() -> None:
    m = Mirror()
    m.snapshot("b", 3, [])
    m.check({"b": 9}, me="a")
    m.check({}, me="a")  # b died
    m.snapshot("b", 1, [rec("b", 1)])  # a new b
    m.check({"b": 1}, me="a")
    assert not m.stale and len(m) == 1


def test_by_user_index_after_put_replace_drop() -> None:
    m = Mirror()
    m.put("b", 1, rec("b", 1, "alice"))
    m.put("b", 2, rec("b", 2, "alice"))
    m.put("b", 3, rec("b", 1, "alice", doing="vi"))
    assert [r.doing for r in m.of("alice")] == ["vi", "-sh"]  # replaced in place
    m.put("b", 4, rec("b", 1, "bob"))  # the same id, now another user's (a reused id)
    consistent(m)
    assert [r.id for r in m.of("alice")] == [2]
    assert [r.id for r in m.of("bob")] == [1]
    m.drop("b", 5, 2)
    m.drop("b", 6, 1)
    assert m.users() == set() and m.of("alice") == [] and len(m) == 0
    m.drop("b", 7, 1)  # twice: nothing
    consistent(m)


def test_reset_after_an_outage_loads_every_node_again() -> None:
    """Redis restarted (or this node missed a reap): generations may start again from 1.
    The records stay for show until reloaded, and the lower-numbered snapshot wins."""
    m = Mirror()
    m.snapshot("b", 40, [rec("b", 1), rec("b", 2)])
    m.reset()
    assert len(m) == 2 and m.stale == {"b"}
    m.snapshot("b", 1, [rec("b", 2)])
    assert [r.id for r in m.records()] == [2] and not m.stale
    m.put("b", 2, rec("b", 3))
    assert len(m) == 2
    consistent(m)


def test_events_ahead_of_the_snapshot_are_applied_after_it() -> None:
    """The snapshot's reply and the events come on two connections: the event of an attach
    just after the snapshot was read can arrive before the snapshot does."""
    m = Mirror()
    m.put("b", 4, rec("b", 2, "bob"))  # before any load: a gap, kept
    m.drop("b", 5, 1)
    m.put("b", 2, rec("b", 9))  # already in the snapshot that is coming: dropped there
    assert m.stale == {"b"} and len(m) == 0
    m.snapshot("b", 3, [rec("b", 1)])
    assert [(r.id, r.user) for r in m.records()] == [(2, "bob")]
    assert not m.stale
    m.put("b", 6, rec("b", 3))  # in order again
    assert len(m) == 2
    consistent(m)


def test_events_past_another_gap_wait_for_the_next_snapshot() -> None:
    m = Mirror()
    m.snapshot("b", 1, [])
    m.put("b", 3, rec("b", 3))
    m.put("b", 5, rec("b", 5))
    m.snapshot("b", 2, [rec("b", 2)])
    assert sorted(r.id for r in m.records()) == [2, 3]
    assert m.stale == {"b"}  # 4 is missing: load again
    m.snapshot("b", 4, [rec("b", 2), rec("b", 3), rec("b", 4)])
    assert sorted(r.id for r in m.records()) == [2, 3, 4, 5] and not m.stale
    consistent(m)


def test_events_kept_ahead_are_bounded_and_forgotten_with_the_node() -> None:
    m = Mirror()
    for gen in range(2, AHEAD + 100):
        m.put("b", gen, rec("b", gen))
    m.snapshot("b", 1, [])
    assert len(m) == 0 and m.stale == {"b"}  # too many: loaded again
    m.put("b", AHEAD + 100, rec("b", 1))
    m.snapshot("b", AHEAD + 99, [rec("b", 2)])
    assert sorted(r.id for r in m.records()) == [1, 2] and not m.stale
    m.put("c", 9, rec("c", 9))
    m.forget("c")
    m.snapshot("c", 1, [])
    assert m.get("c", 9) is None
    m.put("d", 9, rec("d", 9))
    m.reset()
    m.snapshot("d", 1, [])
    assert m.get("d", 9) is None  # numbered before the outage
