"""Connection limits: the counting alone, then through the login path, then the fd limit."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import Client, add_user, make_server
from realserver import RawClient, RealServer

from shellserver.ops.admission import (
    FAIR_SHARE,
    FD_HEADROOM,
    MADE_ROOM,
    MIN_STALL_AGE,
    PENALISED,
    TOO_MANY,
    TOO_MANY_FROM_YOU,
    TOO_MANY_UNAUTH,
    Admission,
    connection_limit,
)
from shellserver.ops.penalties import Penalties


def test_zero_means_unlimited() -> None:
    a = Admission(0, 0, 0)
    for _ in range(1000):
        assert a.admit("192.0.2.1") is None
    assert (a.connections, a.unauth) == (1000, 1000)


def test_per_address_limit_counts_only_those_waiting_to_log_in() -> None:
    a = Admission(0, 0, 2)
    assert a.admit("192.0.2.1") is None
    assert a.admit("192.0.2.1") is None
    assert a.admit("192.0.2.1") == TOO_MANY_FROM_YOU
    assert a.admit("192.0.2.2") is None  # others are not affected
    a.logged_in("192.0.2.1")  # one of them logged in: room for another
    assert a.admit("192.0.2.1") is None
    assert a.admit("192.0.2.1") == TOO_MANY_FROM_YOU  # two waiting again
    a.gone("192.0.2.1", logged_in=False)  # one of those gave up
    assert a.admit("192.0.2.1") is None
    assert (a.connections, a.unauth) == (4, 3)


class Draws:
    """A random source that answers from a script (1.0, never dropping, when it runs out)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.drawn = 0

    def random(self) -> float:
        self.drawn += 1
        return self.values.pop(0) if self.values else 1.0


def test_total_and_unauth_limits() -> None:
    a = Admission(3, 2, 0, random=Draws())  # type: ignore[arg-type]
    assert a.admit("a") is None
    assert a.admit("b") is None
    assert a.admit("c") == TOO_MANY_UNAUTH
    a.logged_in("a")
    assert a.admit("c") is None
    assert a.admit("d") == TOO_MANY
    a.gone("a", logged_in=True)
    a.logged_in("b")
    assert a.admit("d") is None
    assert (a.connections, a.unauth) == (3, 2)


def test_random_early_drop_from_half_of_max_unauth() -> None:
    draws = Draws()
    a = Admission(0, 200, 0, random=draws)  # type: ignore[arg-type]
    for _ in range(100):
        assert a.admit("192.0.2.1") is None
    assert draws.drawn == 0  # below half: no drop, no draw
    draws.values = [0.29, 0.31]  # at 100 waiting the chance is 30 %
    assert a.admit("192.0.2.2") == TOO_MANY_UNAUTH
    assert a.admit("192.0.2.2") is None
    for _ in range(49):
        a.admit("192.0.2.3")
    assert a.unauth == 150
    draws.values = [0.64, 0.66]  # halfway to the limit: 65 %
    assert a.admit("192.0.2.4") == TOO_MANY_UNAUTH
    assert a.admit("192.0.2.4") is None
    for _ in range(49):
        a.admit("192.0.2.5")
    draws.values = [0.999]  # at the limit itself: the hard limit refuses
    assert a.admit("192.0.2.6") == TOO_MANY_UNAUTH


def test_login_grace_shortens_under_pressure() -> None:
    a = Admission(0, 200, 0, random=Draws())  # type: ignore[arg-type]
    for _ in range(99):
        a.admit("192.0.2.1")
    assert a.login_grace(60) == 60
    for _ in range(51):
        a.admit("192.0.2.1")
    assert a.login_grace(60) == 35
    for _ in range(50):
        a.admit("192.0.2.1")
    assert a.login_grace(60) == 10
    assert a.login_grace(5) == 5
    assert Admission(0, 0, 0).login_grace(60) == 60


def test_under_pressure_new_and_old_connections_get_the_shorter_grace(tmp_path: Path) -> None:
    server = make_server(tmp_path, max_unauth=20, max_unauth_per_addr=0)
    server.admission.random = Draws()  # type: ignore[assignment]
    early = [Client(server, peer=f"10.0.0.{i}") for i in range(10)]  # up to 10 waiting: 60 s
    server.clock.advance(20)  # type: ignore[attr-defined]
    late = [Client(server, peer=f"10.0.1.{i}") for i in range(5)]  # 11..15 waiting: 55..35 s
    server.clock.advance(34.9)  # type: ignore[attr-defined]
    assert not any(c.disconnecting for c in early + late)
    server.clock.advance(0.1)  # type: ignore[attr-defined]
    assert [c.disconnecting for c in late] == [False] * 4 + [True]
    assert "Login timed out after 35 seconds." in late[4].output()
    late[4].drop()
    newest = Client(server, peer="10.0.2.1")  # 14 waiting: 40 s, for those waiting too
    assert all(c.disconnecting for c in early)  # 55 s old
    assert not any(c.disconnecting for c in late[:4])  # 35 s old
    assert "Login timed out after 40 seconds." in early[0].output()
    assert not newest.disconnecting and "login: " in newest.output()
    assert server.admission.unauth == 5  # the timed-out ones freed their slots at once


def test_a_full_house_of_half_open_connections_makes_room_after_the_short_grace(
    tmp_path: Path,
) -> None:
    server = make_server(tmp_path, max_unauth=4, max_unauth_per_addr=0)
    server.admission.random = Draws()  # type: ignore[assignment]
    squatters = [Client(server, peer="10.9.9.9") for _ in range(4)]
    for s in squatters:  # a name each, then nothing: not stalled, so only the grace ends them
        s.send("alice")
    assert TOO_MANY_UNAUTH in Client(server, peer="10.0.0.1").output()
    server.clock.advance(9.9)  # type: ignore[attr-defined]
    assert TOO_MANY_UNAUTH in Client(server, peer="10.0.0.1").output()
    server.clock.advance(0.1)  # type: ignore[attr-defined]
    assert squatters[3].disconnecting  # admitted at full: 10 s grace
    squatters[3].drop()
    refill = Client(server, peer="10.9.9.9")  # the attacker refills the house at once
    # The others were admitted with 60 or 35 s, but at a full house the grace is 10 s for
    # them too: they end as the next connection arrives, before it is refused or admitted.
    c = Client(server, peer="10.0.0.1")
    assert all(s.disconnecting for s in squatters[:3]) and not refill.disconnecting
    assert "login: " in c.output() and not c.disconnecting


def test_stalled_connections_are_closed_first_to_make_room(tmp_path: Path) -> None:
    """A full house: a newcomer closes the oldest connection that has sent no login name
    (after its MIN_STALL_AGE chance), never one that has."""
    server = make_server(tmp_path, max_unauth=4, max_unauth_per_addr=0)
    server.admission.random = Draws()  # type: ignore[assignment]
    clock = server.clock
    stalled = [Client(server, peer=f"10.9.9.{i}") for i in range(2)]  # one an address
    typing = [Client(server, peer="10.8.8.8") for _ in range(2)]
    for t in typing:
        t.send("alice")
    assert TOO_MANY_UNAUTH in Client(server, peer="10.0.0.1").output()  # none had its chance
    clock.advance(MIN_STALL_AGE)  # type: ignore[attr-defined]
    first = Client(server, peer="10.0.0.1")
    assert "login: " in first.output() and not first.disconnecting
    assert stalled[0].disconnecting and MADE_ROOM in stalled[0].output()
    assert not stalled[1].disconnecting
    second = Client(server, peer="10.0.0.2")
    assert "login: " in second.output() and stalled[1].disconnecting
    assert not any(t.disconnecting for t in typing)
    # The newcomers are stalled themselves but have not had their chance yet: full again.
    assert TOO_MANY_UNAUTH in Client(server, peer="10.0.0.3").output()
    first.send("bob")  # progress: never closed for room
    clock.advance(MIN_STALL_AGE)  # type: ignore[attr-defined]
    third = Client(server, peer="10.0.0.3")
    assert "login: " in third.output() and second.disconnecting and not first.disconnecting
    assert server.admission.unauth == 4


def test_an_address_holding_more_than_its_share_gives_up_a_young_stalled_connection() -> None:
    """Before any stalled connection has had MIN_STALL_AGE, a newcomer still gets in when
    another address holds FAIR_SHARE (2) more stalled connections than the newcomer's waits
    with: a flood that reconnects faster than MIN_STALL_AGE cannot keep a clean address out."""
    assert FAIR_SHARE == 2
    a = Admission(0, 4, 0, random=Draws())  # type: ignore[arg-type]
    closed: list[str] = []

    def connect(peer: str) -> str | None:
        refusal = a.admit(peer, 0.0)
        if refusal is None:
            a.stalled(peer, 0.0, lambda: closed.append(peer))
        return refusal

    for peer in ["10.9.9.9", "10.9.9.9", "10.9.9.9", "10.7.7.7"]:
        assert connect(peer) is None
    assert connect("10.0.0.1") is None  # 10.9.9.9 holds 3 stalled, 10.0.0.1 waits with none
    assert closed == ["10.9.9.9"]
    assert connect("10.0.0.1") == TOO_MANY_UNAUTH  # 2 against the 1 it waits with: its share
    assert connect("10.0.0.2") is None  # 2 against none
    assert closed == ["10.9.9.9"] * 2
    assert connect("10.0.0.3") == TOO_MANY_UNAUTH  # one each now: nobody holds more
    assert closed == ["10.9.9.9"] * 2 and a.unauth == 4
    assert a.penalties.left("10.9.9.9", 0.0) == 10  # closed for room: penalised as ever


def test_addresses_whose_connections_stall_are_refused_for_a_growing_time() -> None:
    a = Admission(0, 4, 0, random=Draws())  # type: ignore[arg-type]
    closed: list[str] = []
    now = 0.0

    def squat(peer: str) -> str | None:
        refusal = a.admit(peer, now)
        if refusal is None:
            a.stalled(peer, now, lambda: closed.append(peer))
        return refusal

    for _ in range(4):
        assert squat("10.9.9.9") is None
    now = MIN_STALL_AGE
    for i in range(3):  # three closed to make room: 15 s of penalty, not yet refused
        assert squat(f"10.0.0.{i}") is None
    assert closed == ["10.9.9.9"] * 3
    assert squat("10.9.9.9") is None  # the fourth of its own makes room too: 20 s
    assert closed == ["10.9.9.9"] * 4
    assert a.penalties.left("10.9.9.9", now) == 20
    assert squat("10.9.9.9") == PENALISED  # refused at once: no slot, nothing closed
    assert len(closed) == 4
    a.timed_out("10.9.9.9", now)  # a time-out at the login grace counts too: 25 s
    now += 9.9
    assert squat("10.9.9.9") == PENALISED
    now += 0.2  # 14.9 s left: let in again, and its next stall refuses it again
    a.gone("10.0.0.0", logged_in=False)
    assert squat("10.9.9.9") is None
    a.timed_out("10.9.9.9", now)
    assert squat("10.9.9.9") == PENALISED
    assert squat("10.0.0.9") != PENALISED  # other addresses are not affected
    for _ in range(200):
        a.timed_out("10.9.9.9", now)
    assert a.penalties.left("10.9.9.9", now) == 600  # at most ten minutes


def test_penalties_remember_at_most_max_addresses() -> None:
    p = Penalties(max_addresses=3)
    for i in range(100):
        for _ in range(4):
            p.stalled(f"10.0.0.{i}", 0.0)
    assert len(p) <= 3 and p.refused("10.0.0.99", 0.0)


def test_refusals_are_logged_at_most_once_a_minute() -> None:
    a = Admission(1, 0, 0)
    a.admit("a")
    for _ in range(5):
        assert a.admit("b") == TOO_MANY
    assert a.refusals_to_log(100.0) == 5
    a.admit("b")
    assert a.refusals_to_log(130.0) == 0  # within the minute: held back
    a.admit("b")
    assert a.refusals_to_log(161.0) == 2
    assert a.refusals_to_log(300.0) == 0  # nothing new


def test_connection_limit_never_passes_the_descriptor_limit() -> None:
    assert connection_limit(20000, 1_000_000) == 20000
    assert connection_limit(20000, 1024) == 1024 - FD_HEADROOM
    assert connection_limit(0, 1024) == 1024 - FD_HEADROOM  # "unlimited" is what fits


def test_fd_soft_limit_is_raised_to_fit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1000 + FD_HEADROOM:
        pytest.skip(f"the hard descriptor limit here ({hard}) is too low for this test")
    code = (
        "import json, resource\n"
        "from shellserver.ops.admission import raise_fd_limit\n"
        "N = resource.RLIMIT_NOFILE\n"
        "resource.setrlimit(N, (256, resource.getrlimit(N)[1]))\n"
        "got = raise_fd_limit(1000)\n"
        "print(json.dumps([got, resource.getrlimit(N)[0]]))\n"
    )  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    (now, wanted), actual = json.loads(out.stdout)
    assert wanted == 1000 + FD_HEADROOM
    assert now == actual == wanted


def test_over_the_limit_a_connection_is_told_and_closed(tmp_path: Path) -> None:
    server = make_server(tmp_path, max_unauth_per_addr=2, max_connections=3)
    add_user(server, "alice")
    first, second = Client(server), Client(server)
    third = Client(server)
    assert third.output() == TOO_MANY_FROM_YOU + "\n"
    assert third.disconnecting
    third.drop()
    assert "alice@testhost:~$ " in first.login("alice")
    other = Client(server, peer="10.0.0.2")  # the third connection in all
    assert "login: " in other.output()
    assert Client(server, peer="10.0.0.3").output() == TOO_MANY + "\n"
    first.drop()
    second.drop()
    assert "login: " in Client(server).output()
    assert (server.admission.connections, server.admission.unauth) == (2, 2)


@pytest.mark.integration
def test_real_server_refuses_a_fourth_waiting_connection_from_one_address(
    tmp_path: Path,
) -> None:
    srv = RealServer(tmp_path, "--max-unauth-per-addr", "3").start()
    try:
        waiting = [RawClient(srv.port) for _ in range(3)]
        for c in waiting:
            c.expect("login: ")
        extra = RawClient(srv.port)
        assert TOO_MANY_FROM_YOU in extra.expect("later.")
        assert extra.closed()
        waiting[0].close()
        time.sleep(0.2)  # let the server see it go
        again = RawClient(srv.port)
        again.expect("login: ")
        for c in [*waiting[1:], again]:
            c.close()
    finally:
        srv.stop()
    assert "refused 1 connection(s) over the limits" in srv.log_text()
