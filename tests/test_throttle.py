"""Per-address limits keep bounded memory, whatever the number of addresses (SPEC §7)."""

from __future__ import annotations

from shellserver.throttle import FailedLogins, Recent, Registrations


def test_failed_logins_remember_at_most_max_addresses() -> None:
    logins = FailedLogins(limit=2, window=600.0, block=300.0, max_addresses=3)
    for i in range(50):  # all inside the window: none has expired to make room
        assert logins.attempt(f"10.0.0.{i}", now=float(i))
    assert logins.addresses() <= 3
    for i in range(50):  # and as many blocked ones
        logins.attempt(f"10.1.0.{i}", now=100.0)
        logins.attempt(f"10.1.0.{i}", now=100.0)
        assert logins.blocked(f"10.1.0.{i}", now=100.0)
    assert logins.addresses() <= 6
    assert logins.blocked("10.1.0.49", now=101.0)  # the latest block holds


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
