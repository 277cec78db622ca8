"""Room fan-out in slices (fanout.py): a bounded number of deliveries per reactor turn, every
member reached, each in the order the lines were said."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import add_user, make_server, online
from twisted.internet.task import Clock

from shellserver.hub.fanout import SLICE, Fanout
from shellserver.hub.local import Hub
from shellserver.hub.session import Session


class Turns(Clock):
    """A clock whose :meth:`turn` runs what is due now, as one reactor iteration does: a call
    made meanwhile for "now" waits for the next turn (``Clock.advance`` would run it too)."""

    def turn(self) -> None:
        due = [c for c in self.calls if c.getTime() <= self.seconds()]
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


def test_a_small_fanout_runs_at_once_without_a_turn_of_its_own() -> None:
    clock, seen = Turns(), []
    fanout = Fanout(clock, size=10)
    done = fanout.run([1, 2, 3], seen.append)
    assert seen == [1, 2, 3] and done.called
    clock.turn()  # the turn ends: the slice's count starts again
    assert fanout.run(list(range(10)), seen.append).called
    assert not clock.getDelayedCalls() or fanout.waiting == 0


def test_a_large_fanout_is_spread_over_turns_in_order() -> None:
    clock, seen = Turns(), []
    fanout = Fanout(clock, size=10)
    done = fanout.run(list(range(25)), seen.append)
    assert seen == [] and not done.called  # larger than a slice: from the next turn on
    clock.turn()
    assert seen == list(range(10))
    clock.turn()
    assert seen == list(range(20)) and not done.called
    clock.turn()
    assert seen == list(range(25)) and done.called


def test_fanouts_share_one_slice_per_turn_and_keep_their_order() -> None:
    """Two lines to the same members: each member gets the first before the second, and no
    turn does more than a slice, however many fan-outs wait."""
    clock = Turns()
    fanout = Fanout(clock, size=10)
    got: dict[int, list[str]] = {}
    steps = [0]

    def to(line: str) -> object:
        def step(member: int) -> None:
            steps[0] += 1
            got.setdefault(member, []).append(line)

        return step

    first = fanout.run(list(range(15)), to("first"))
    second = fanout.run(list(range(15)), to("second"))
    third = fanout.run([0], to("third"))  # small, but behind the others: it waits its turn
    assert steps[0] == 0
    turns = 0
    while fanout.waiting:
        before = steps[0]
        clock.turn()
        turns += 1
        assert steps[0] - before <= 10
    assert turns == 4  # 31 steps, 10 a turn
    assert first.called and second.called and third.called
    assert got[0] == ["first", "second", "third"]
    assert all(got[m] == ["first", "second"] for m in range(1, 15))


def test_what_runs_at_once_counts_against_the_turn() -> None:
    clock, seen = Turns(), []
    fanout = Fanout(clock, size=10)
    assert fanout.run(list(range(8)), seen.append).called
    late = fanout.run([100, 101, 102], seen.append)  # 8 + 3 > 10: the next turn
    assert not late.called and seen == list(range(8))
    clock.turn()
    assert late.called and seen[-3:] == [100, 101, 102]


def test_a_failing_step_fails_its_fanout_only() -> None:
    clock, seen = Turns(), []
    fanout = Fanout(clock, size=2)

    def bad(item: int) -> None:
        raise RuntimeError("bug")

    broken = fanout.run([1, 2, 3], bad)
    fine = fanout.run([4, 5, 6], seen.append)
    failures: list[object] = []
    broken.addErrback(failures.append)
    while fanout.waiting:
        clock.turn()
    assert len(failures) == 1 and fine.called and seen == [4, 5, 6]


def test_without_a_clock_everything_runs_at_once() -> None:
    seen: list[int] = []
    assert Fanout(None, size=2).run(list(range(5)), seen.append).called
    assert seen == list(range(5))


# -- through the hub and the room commands ------------------------------------------------

MEMBERS = 2 * SLICE + 40


@pytest.fixture
def crowd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list[int]]:
    """``MEMBERS`` sessions of their own users; every delivery counted (``counted[0]``)."""
    clock = Turns()
    server = make_server(tmp_path, max_sessions=0, clock=clock, hub=Hub(clock=clock))
    names = [f"u{i:03}" for i in range(MEMBERS)]
    for name in names:
        add_user(server, name)
    clients = [online(server, name) for name in names]
    counted = [0]
    deliver = Session.deliver

    def counting(self: Session, message: object) -> bool:
        counted[0] += 1
        return deliver(self, message)  # type: ignore[arg-type]

    monkeypatch.setattr(Session, "deliver", counting)
    return clients, counted


def _turns(clients: list, counted: list[int]) -> int:
    """Reactor turns until the fan-outs are done; none may deliver more than a slice."""
    fanout = clients[0].server.hub.fanout
    turns = 0
    while fanout.waiting:
        before = counted[0]
        clients[0].clock.turn()  # type: ignore[attr-defined]
        turns += 1
        assert counted[0] - before <= SLICE
    return turns


def test_hundreds_joining_one_room_at_once(crowd: tuple[list, list[int]]) -> None:
    """Every session joins in the same moment: O(n²) deliveries, at most a slice a turn;
    each member then sees exactly the joins after its own, in joining order."""
    clients, counted = crowd
    for c in clients:
        c.send("join #big")  # all in one turn, as a burst of packets is read
    assert counted[0] <= SLICE
    assert _turns(clients, counted) > 10
    assert counted[0] == MEMBERS * (MEMBERS - 1) // 2
    for i, c in enumerate(clients):
        joins = re.findall(r"\[#big\] (u\d+) has joined", c.output())
        assert joins == [f"u{j:03}" for j in range(i, MEMBERS)], i  # its own, then the rest


def test_lines_said_to_hundreds_arrive_in_order(crowd: tuple[list, list[int]]) -> None:
    clients, counted = crowd
    for c in clients:
        c.send("join #big")
    _turns(clients, counted)
    for c in clients:
        c.output()
    speaker = clients[0]
    # A paste of five lines: the next runs only once the one before has reached everyone.
    speaker.send_bytes(b"".join(f"say #big line {n}\r\n".encode() for n in range(5)))
    _turns(clients, counted)
    said = re.findall(r"\[#big\] u000: (line \d)", speaker.output())
    assert said == [f"line {n}" for n in range(5)]
    for c in clients[1:]:
        assert re.findall(r"\[#big\] u000: (line \d)", c.output()) == said
