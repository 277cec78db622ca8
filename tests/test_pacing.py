"""Per-account pacing of password checks: distributed guessing meets a slow pace."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from harness import Client, add_user, make_server
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from shellserver.app.assembly import Assembly
from shellserver.ops.pacing import AccountPacing
from shellserver.store.accounts import AccountStore


def _state(d: Deferred[bool]) -> bool | None:
    got: list[bool] = []
    d.addCallback(lambda v: got.append(v) or v)
    return got[0] if got else None


def _fail(pacing: AccountPacing, name: str, peer: str = "10.99.0.1") -> None:
    """A wrong password for ``name``, checked at once (the account is not paced yet)."""
    assert _state(pacing.turn(name, peer)) is True
    pacing.finished(name, failed=True)


def _paced(clock: Clock, **kw: Any) -> AccountPacing:
    pacing = AccountPacing(clock, **kw)
    for _ in range(10):
        _fail(pacing, "alice")
    assert pacing.paced("alice")
    return pacing


def test_ten_failures_from_any_addresses_pace_the_account_one_check_per_ten_seconds() -> None:
    clock = Clock()
    pacing = AccountPacing(clock)
    for i in range(9):
        _fail(pacing, "alice", f"10.0.0.{i}")
    assert not pacing.paced("alice")
    _fail(pacing, "alice", "10.0.0.9")
    assert pacing.paced("alice") and not pacing.paced("bob")
    turns = [pacing.turn("alice", f"10.1.0.{i}") for i in range(4)]
    assert [_state(d) for d in turns] == [True, None, None, None]
    assert _state(pacing.turn("bob", "10.1.0.9")) is True  # other accounts are not paced
    clock.advance(9.9)
    assert [_state(d) for d in turns] == [True, None, None, None]
    clock.advance(0.1)
    assert [_state(d) for d in turns] == [True, True, None, None]
    clock.advance(10)
    assert [_state(d) for d in turns] == [True, True, True, None]
    clock.advance(10)
    assert [_state(d) for d in turns] == [True, True, True, True]


def test_checks_in_flight_count_so_parallel_guesses_meet_the_pace_too() -> None:
    clock = Clock()
    pacing = AccountPacing(clock)
    turns = [pacing.turn("alice", f"10.15.0.{i}") for i in range(40)]  # all sent at once
    assert [_state(d) for d in turns[:10]] == [True] * 10
    assert all(_state(d) is None for d in turns[10:])  # held until one of the ten ends
    for _ in range(9):
        pacing.finished("alice", failed=True)
    assert all(_state(d) is None for d in turns[10:])  # nine failures, one still in flight
    pacing.finished("alice", failed=True)
    # Ten failures known: the pace, its first turn at once, then one per 10 s.
    assert _state(turns[10]) is True and all(_state(d) is None for d in turns[11:])
    pacing.finished("alice", failed=True)
    clock.advance(9.9)
    assert _state(turns[11]) is None
    clock.advance(0.1)
    assert _state(turns[11]) is True and _state(turns[12]) is None


def test_parallel_right_passwords_are_only_queued_behind_the_checks_in_flight() -> None:
    """A login storm (a class, a benchmark) on one account: ten at a time, never paced."""
    clock = Clock()
    pacing = AccountPacing(clock)
    turns = [pacing.turn("alice", f"10.17.0.{i}") for i in range(30)]
    going = 10
    assert sum(_state(d) is True for d in turns) == going
    while going < 30:
        pacing.finished("alice", failed=False)  # one logs in: the next goes at once
        going += 1
        assert sum(_state(d) is True for d in turns) == going
    assert not pacing.paced("alice")


def test_successes_do_not_count_toward_the_pace() -> None:
    clock = Clock()
    pacing = AccountPacing(clock)
    for _ in range(30):
        assert _state(pacing.turn("alice", "10.16.0.1")) is True
        pacing.finished("alice", failed=False)
    assert not pacing.paced("alice")


def test_the_pace_ends_when_the_failures_are_ten_minutes_old() -> None:
    clock = Clock()
    pacing = _paced(clock)
    clock.advance(600)
    assert not pacing.paced("alice")
    assert [_state(pacing.turn("alice", "10.2.0.1")) for _ in range(3)] == [True] * 3


def test_an_address_that_logged_in_before_and_a_key_are_not_paced() -> None:
    clock = Clock()
    pacing = AccountPacing(clock)
    pacing.succeeded("alice", "192.0.2.7")  # any method: a key login too
    for _ in range(10):
        _fail(pacing, "alice")
    assert _state(pacing.turn("alice", "10.3.0.1")) is True  # takes the turn
    assert _state(pacing.turn("alice", "10.3.0.2")) is None  # waits
    assert [_state(pacing.turn("alice", "192.0.2.7")) for _ in range(3)] == [True] * 3
    assert _state(pacing.turn("alicex", "192.0.2.7")) is True  # not paced at all


def test_the_login_history_is_read_once_when_the_account_is_first_paced() -> None:
    clock = Clock()
    reads: list[str] = []

    def history(name: str) -> Deferred[Iterable[str]]:
        reads.append(name)
        return succeed(["198.51.100.4"])

    pacing = _paced(clock, history=history)
    assert reads == []  # never read for an account that is not paced
    assert _state(pacing.turn("alice", "198.51.100.4")) is True
    assert _state(pacing.turn("alice", "198.51.100.4")) is True
    assert _state(pacing.turn("alice", "10.4.0.1")) is True
    assert _state(pacing.turn("alice", "10.4.0.2")) is None
    assert reads == ["alice"]


def test_a_waiter_whose_connection_is_gone_costs_no_turn() -> None:
    clock = Clock()
    pacing = _paced(clock)
    assert _state(pacing.turn("alice", "10.5.0.1")) is True
    gone = pacing.turn("alice", "10.5.0.2", alive=lambda: False)
    cancelled = pacing.turn("alice", "10.5.0.3")
    waiting = pacing.turn("alice", "10.5.0.4")
    cancelled.addErrback(lambda f: None)
    cancelled.cancel()
    clock.advance(10)
    assert _state(gone) is False and _state(waiting) is True  # the live one had its turn


def test_waiters_that_hung_up_are_let_go_when_the_next_one_queues() -> None:
    clock = Clock()
    pacing = _paced(clock)
    assert _state(pacing.turn("alice", "10.20.0.1")) is True
    connected = [True] * 50
    waiting = [pacing.turn("alice", f"10.20.1.{i}", lambda i=i: connected[i]) for i in range(50)]
    for i in range(49):
        connected[i] = False  # hung up while waiting
    latest = pacing.turn("alice", "10.20.2.1")
    assert [_state(d) for d in waiting[:49]] == [False] * 49  # let go at once, not in 10 s
    assert _state(waiting[49]) is None and _state(latest) is None
    assert len(pacing._waiting["alice"]) == 2


def test_account_records_are_bounded() -> None:
    clock = Clock()
    pacing = AccountPacing(clock, max_accounts=5, max_known=3)
    for i in range(100):
        for _ in range(10):
            _fail(pacing, f"user{i}")
        pacing.turn(f"user{i}", "10.6.0.1")
        pacing.succeeded(f"user{i}", f"10.6.0.{i}")
    assert pacing.accounts() <= 5
    assert pacing.paced("user99")  # the latest is remembered
    assert len(pacing._known) <= 3
    long_name = "x" * 5000  # typed names are cut short as keys
    for _ in range(10):
        _fail(pacing, long_name)
    assert pacing.paced(long_name)
    assert max(len(k) for k in pacing._next) <= 64


# -- through the login dialogue (telnet and the browser share it) -----------------------------


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    srv = make_server(tmp_path)
    add_user(srv, "alice")
    return srv


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names whose password the store was asked to check."""
    checked: list[str] = []
    real = AccountStore.authenticate

    def authenticate(self: AccountStore, name: str, password: str) -> Any:
        checked.append(name)
        return real(self, name, password)

    monkeypatch.setattr(AccountStore, "authenticate", authenticate)
    return checked


def test_distributed_guessing_is_checked_once_per_ten_seconds(
    server: Assembly, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = _count_checks(monkeypatch)
    clock: Clock = server.clock  # type: ignore[assignment]
    for i in range(10):  # ten addresses, one wrong password each: under each address's limit
        c = Client(server, peer=f"10.7.0.{i}")
        c.login("alice", "wrong-password")
        clock.advance(1)
        assert "Login incorrect" in c.output()
    assert len(checked) == 10
    guessers = [Client(server, peer=f"10.8.0.{i}") for i in range(40)]
    for g in guessers:
        g.output()
        g.login("alice", "wrong-password")
    assert len(checked) == 11  # one check now, the rest wait their turn
    for _ in range(10):
        clock.advance(1)
    assert len(checked) == 12  # 10 s on: one more
    for _ in range(30):
        clock.advance(1)
    assert len(checked) == 15
    clock.advance(1)  # the latest check's answer, 1 s after it started
    answers = [g.output() for g in guessers]
    answered = [a for a in answers if a]
    assert len(answered) == 5 and all(a == "Login incorrect\nlogin: " for a in answered)
    owner = Client(server, peer="10.9.9.9")  # a fresh address: waits its turn like the rest
    owner.output()
    owner.login("alice")
    assert "alice@testhost" not in owner.output()


def test_the_owner_from_an_address_known_to_the_account_is_not_slowed(server: Assembly) -> None:
    owner = Client(server, peer="192.0.2.7")
    assert "alice@testhost" in owner.login("alice")
    owner.drop()
    clock: Clock = server.clock  # type: ignore[assignment]
    for i in range(12):
        Client(server, peer=f"10.10.0.{i}").login("alice", "wrong-password")
        clock.advance(10)
    assert server.account_pacing.paced("alice")
    waiting = [Client(server, peer=f"10.11.0.{i}") for i in range(5)]
    for w in waiting:
        w.login("alice", "wrong-password")
    assert "alice@testhost:~$ " in Client(server, peer="192.0.2.7").login("alice")


def test_a_right_password_gets_in_on_its_turn(server: Assembly) -> None:
    clock: Clock = server.clock  # type: ignore[assignment]
    for i in range(10):
        Client(server, peer=f"10.12.0.{i}").login("alice", "wrong-password")
    clock.advance(5)
    guesser = Client(server, peer="10.13.0.1")
    guesser.login("alice", "wrong-password")  # takes this turn
    owner = Client(server, peer="10.13.0.2")
    owner.output()
    owner.login("alice")
    clock.advance(9)
    assert "alice@testhost" not in owner.output()
    clock.advance(1)
    assert "alice@testhost:~$ " in owner.output()


def test_the_previous_login_addresses_come_from_the_store(
    server: Assembly, tmp_path: Path
) -> None:
    """After a restart the memory is empty: the login history still knows the owner."""
    owner = Client(server, peer="192.0.2.8")
    assert "alice@testhost" in owner.login("alice")
    owner.drop()
    server = make_server(tmp_path, store=server.store)  # a fresh start's empty memory
    for i in range(11):
        Client(server, peer=f"10.14.0.{i}").login("alice", "wrong-password")
    assert "alice@testhost:~$ " in Client(server, peer="192.0.2.8").login("alice")


def test_the_browser_shares_the_pace(server: Assembly, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page logs in through the same dialogue: a paced account paces it too."""
    from test_web import FakeSocket

    from shellserver.wires.web.socket import WebWire

    checked = _count_checks(monkeypatch)
    clock: Clock = server.clock  # type: ignore[assignment]
    for i in range(10):
        Client(server, peer=f"10.18.0.{i}").login("alice", "wrong-password")
    assert len(checked) == 10 and server.account_pacing.paced("alice")

    def browser(peer: str) -> FakeSocket:
        wire = WebWire(server.new_connection, clock, peer)
        sock = FakeSocket()
        wire.negotiationStarted(sock)  # type: ignore[arg-type]
        wire.negotiationFinished()
        wire.textMessageReceived("0alice\r")
        wire.textMessageReceived("0wrong-password\r")
        return sock

    first, second = browser("10.19.0.1"), browser("10.19.0.2")
    assert len(checked) == 11  # the account's turn now, then one per 10 s
    clock.advance(1)
    assert b"Login incorrect" in first.transport.value()
    assert b"Login incorrect" not in second.transport.value()
    for _ in range(9):
        clock.advance(1)
    assert len(checked) == 12
    clock.advance(1)
    assert b"Login incorrect" in second.transport.value()


def test_a_login_under_the_limit_is_answered_without_a_coroutine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every login asks for its turn: the common case (an account under the limit, or an
    address it knows) is decided inline, and only a check that may wait runs :meth:`_turn`.
    Both paths agree: the ninth failure still lets a check go, the tenth paces it."""
    clock = Clock()
    pacing = AccountPacing(clock)
    slow: list[str] = []
    real_turn = AccountPacing._turn

    def counted(self: AccountPacing, name: str, peer: str, alive: Any) -> Any:
        slow.append(name)
        return real_turn(self, name, peer, alive)

    monkeypatch.setattr(AccountPacing, "_turn", counted)
    for i in range(9):
        _fail(pacing, "alice", f"10.0.0.{i}")
    assert _state(pacing.turn("bob", "10.0.1.1")) is True
    pacing.succeeded("bob", "10.0.1.1")
    pacing.finished("bob", failed=False)
    assert slow == []
    _fail(pacing, "alice", "10.0.0.9")
    assert pacing.paced("alice")
    assert _state(pacing.turn("alice", "10.0.2.1")) is True  # its turn: the first after the pace
    pacing.finished("alice", failed=True)
    assert _state(pacing.turn("alice", "10.0.2.2")) is None  # waits for the next
    assert slow == ["alice", "alice"]
    clock.advance(10)
