"""Per-address limits keep bounded memory, whatever the number of addresses."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from shellserver.ops.throttle import FailedLogins, Recent, Registrations


def _fired(d: Deferred[bool]) -> bool | None:
    got: list[bool] = []

    def seen(value: bool) -> bool:
        got.append(value)
        return value

    d.addCallback(seen)
    return got[0] if got else None


def _fail(logins: FailedLogins, addr: str, now: float) -> None:
    assert _fired(logins.attempt(addr, now)) is True
    logins.finished(addr, now, failed=True)


def test_failed_logins_remember_at_most_max_addresses() -> None:
    logins = FailedLogins(limit=2, window=600.0, block=300.0, max_addresses=3)
    for i in range(50):  # all inside the window: none has expired to make room
        _fail(logins, f"10.0.0.{i}", now=float(i))
    assert logins.addresses() <= 3
    for i in range(50):  # and as many blocked ones
        _fail(logins, f"10.1.0.{i}", now=100.0)
        _fail(logins, f"10.1.0.{i}", now=100.0)
        assert logins.blocked(f"10.1.0.{i}", now=100.0)
    assert logins.addresses() <= 6
    assert logins.blocked("10.1.0.49", now=101.0)  # the latest block holds


def test_parallel_checks_past_the_limit_wait_for_a_slot() -> None:
    logins = FailedLogins(limit=2)
    first, second, third, fourth = (logins.attempt("10.0.0.1", 0.0) for _ in range(4))
    assert (_fired(first), _fired(second), _fired(third)) == (True, True, None)
    logins.finished("10.0.0.1", 1.0, failed=False)  # a success frees its slot for the next
    assert _fired(third) is True and _fired(fourth) is None
    logins.finished("10.0.0.1", 1.0, failed=True)
    logins.finished("10.0.0.1", 1.0, failed=True)  # the limit: the address is blocked ...
    assert _fired(fourth) is False  # ... and whoever waited is refused, never checked
    assert _fired(logins.attempt("10.0.0.1", 2.0)) is False
    assert _fired(logins.attempt("10.0.0.2", 2.0)) is True  # other addresses carry on


def test_a_waiting_check_can_be_cancelled() -> None:
    logins = FailedLogins(limit=1)
    assert _fired(logins.attempt("a", 0.0)) is True
    waiting = logins.attempt("a", 0.0)
    waiting.addErrback(lambda f: None)
    waiting.cancel()  # the connection went away
    later = logins.attempt("a", 0.0)
    logins.finished("a", 1.0, failed=False)
    assert _fired(later) is True


def test_registrations_remember_at_most_max_addresses() -> None:
    made = Registrations(limit=1, window=3600.0, max_addresses=4)
    for i in range(50):
        assert made.take(f"10.0.0.{i}", now=float(i))
    assert made.addresses() <= 4
    assert made.full("10.0.0.49", now=60.0)


def test_recent_forgets_the_address_first_seen_longest_ago() -> None:
    recent = Recent(window=10.0, keep=5, max_addresses=2)
    recent.add("a", 0.0)
    recent.add("b", 1.0)
    recent.add("a", 2.0)
    recent.add("c", 3.0)  # a was first seen first: it goes
    assert (recent.count("a", 3.0), recent.count("b", 3.0), recent.count("c", 3.0)) == (0, 1, 1)
    assert recent.count("b", 11.0) == 0 and len(recent) == 1  # b's event expired: b forgotten
