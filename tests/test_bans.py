"""Bans without sockets: reading targets and durations, matching, expiry on a clock passed
in, the store's table, and the whole server (harness) refusing and ending what a ban covers."""

from __future__ import annotations

import ipaddress
import random
import time
from pathlib import Path

import pytest
from harness import Client, make_server_with, online

from shellserver.app.assembly import Assembly
from shellserver.hub.session import Session
from shellserver.ops import bans as ops_bans
from shellserver.ops.admission import Admission
from shellserver.ops.bans import (
    ADDRESS,
    KEY,
    NETWORK,
    USER,
    BadBan,
    Ban,
    BanIndex,
    BanList,
    make_ban,
    parse_duration,
    parse_target,
)
from shellserver.shell.bans import check_target, read_ban
from shellserver.store import bans as store_bans
from shellserver.store.accounts import AccountDB
from shellserver.text.timefmt import format_login_time

KEY_FP = "SHA256:" + "A" * 43


# -- reading what an admin typed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("30m", 1800.0), ("12h", 43200.0), ("7d", 604800.0), ("perm", None)],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "5x", "7", "h", "-5m", "1.5h", "99999d", "PERM"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(BadBan, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "kind", "canonical"),
    [
        ("bob", USER, "bob"),
        ("203.0.113.7", ADDRESS, "203.0.113.7"),
        ("2001:DB8::7", ADDRESS, "2001:db8::7"),
        ("::ffff:203.0.113.7", ADDRESS, "203.0.113.7"),
        ("203.0.113.0/24", NETWORK, "203.0.113.0/24"),
        ("203.0.113.7/24", NETWORK, "203.0.113.0/24"),
        ("203.0.113.7/32", ADDRESS, "203.0.113.7"),
        ("2001:db8::/48", NETWORK, "2001:db8::/48"),
        (KEY_FP, KEY, KEY_FP),
    ],
)
def test_targets(text: str, kind: str, canonical: str) -> None:
    assert parse_target(text) == (kind, canonical)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1.2.3", "invalid address '1.2.3'"),
        ("999.1.1.1", "invalid address"),
        ("2001:db8::zz", "invalid address"),
        ("10.0.0.0/33", "invalid network"),
        ("SHA256:short", "invalid key fingerprint"),
        ("fe80::1%eth0", "no zone index"),
        ("Bob!", "invalid target 'Bob!'"),
    ],
)
def test_bad_targets_are_clear_errors(text: str, error: str) -> None:
    with pytest.raises(BadBan, match=error):
        check_target(text)


def test_the_word_after_the_target_is_a_duration_only_when_it_looks_like_one() -> None:
    ban = read_ban(["bob", "spam", "and", "more"], "root", 100.0)
    assert (ban.target, ban.expires, ban.reason) == ("bob", None, "spam and more")
    ban = read_ban(["bob", "30m", "spam"], "root", 100.0)
    assert (ban.expires, ban.reason) == (1900.0, "spam")
    assert read_ban(["bob", "perm"], "root", 0.0).expires is None
    with pytest.raises(BadBan, match="invalid duration '5x'"):
        read_ban(["bob", "5x", "spam"], "root", 0.0)
    with pytest.raises(BadBan, match="no target"):
        read_ban([], "root", 0.0)


def test_a_reason_is_made_safe_and_bounded() -> None:
    ban = read_ban(["bob", "1h", "\x1b[2Jclear", "x" * 500], "root", 0.0)
    assert "\x1b" not in ban.reason
    assert len(ban.reason) == ops_bans.MAX_REASON


# -- texts ------------------------------------------------------------------------------------


def test_the_texts_name_the_ban() -> None:
    ends = time.mktime((2026, 12, 10, 14, 2, 0, 0, 0, -1))
    ban = make_ban("203.0.113.0/24", "1h", "spam", "root", ends - 3600)
    assert ban.answer() == "banned 203.0.113.0/24 until Thu Dec 10 14:02 (spam)"
    assert ban.address_refusal() == "Your address is banned until Thu Dec 10 14:02."
    assert ban.login_refusal() == "Login refused: banned until Thu Dec 10 14:02 (spam)"
    forever = make_ban("bob", None, "", "root", 0.0)
    assert forever.answer() == "banned bob permanently"
    assert forever.login_refusal() == "Login refused: banned permanently"
    assert forever.address_refusal() == "Your address is banned permanently."


def test_a_ban_travels_as_fields() -> None:
    ban = make_ban("2001:db8::/48", "7d", "why", "root", 5.0)
    assert Ban.from_fields(ban.to_fields()) == ban
    with pytest.raises(ValueError, match="malformed"):
        Ban.from_fields({"target": "x"})
    with pytest.raises(ValueError, match="kind"):
        Ban.from_fields(dict(ban.to_fields(), kind="planet"))


# -- matching and expiry ------------------------------------------------------------------------


def test_matching_addresses_networks_users_and_keys_with_expiry() -> None:
    bans = BanList()
    bans.add(make_ban("203.0.113.0/24", "1h", "net", "root", 0.0))
    bans.add(make_ban("203.0.113.7", "perm", "host", "root", 0.0))
    bans.add(make_ban("2001:db8::/48", "90s", "", "root", 0.0))
    bans.add(make_ban("bob", "30m", "", "root", 0.0))
    bans.add(make_ban(KEY_FP, None, "", "root", 0.0))
    # The most specific ban covering an address is the one that answers.
    assert bans.address("203.0.113.7", 10.0).target == "203.0.113.7"  # type: ignore[union-attr]
    assert bans.address("203.0.113.8", 10.0).target == "203.0.113.0/24"  # type: ignore[union-attr]
    assert bans.address("::ffff:203.0.113.9", 10.0) is not None
    assert bans.address("203.0.114.1", 10.0) is None
    assert bans.address("2001:db8:0:1::5", 10.0) is not None
    assert bans.address("2001:db9::5", 10.0) is None
    assert bans.address("local", 10.0) is None
    # Expiry: each ban ends by itself, on the clock passed in.
    assert bans.address("2001:db8::5", 90.0) is None
    assert bans.address("203.0.113.8", 3600.0) is None
    assert bans.address("203.0.113.7", 1e12) is not None  # permanent
    assert bans.login("bob", "", 1799.0) is not None
    assert bans.login("bob", "", 1800.0) is None
    assert bans.login("carl", KEY_FP, 1e12) is not None
    assert bans.login("carl", "", 0.0) is None
    bans.remove("203.0.113.7")
    assert bans.address("203.0.113.7", 10.0).target == "203.0.113.0/24"  # type: ignore[union-attr]
    bans.remove("203.0.113.0/24")
    assert bans.address("203.0.113.7", 10.0) is None
    assert 4 not in bans.index.lengths.get(4, [])  # an empty prefix length is dropped
    assert len(bans) == 3


def test_a_session_matches_by_user_address_or_key() -> None:
    net = make_ban("10.0.0.0/8", None, "", "root", 0.0)
    assert net.matches("anyone", "10.2.3.4", "")
    assert not net.matches("anyone", "11.2.3.4", "")
    assert not net.matches("anyone", "local", "")
    key = make_ban(KEY_FP, None, "", "root", 0.0)
    assert key.matches("bob", "1.2.3.4", KEY_FP)
    assert not key.matches("bob", "1.2.3.4", "")
    assert make_ban("bob", None, "", "root", 0.0).matches("bob", "x", "")


def test_ten_thousand_network_bans_cost_one_lookup_per_prefix_length() -> None:
    draw = random.Random(7)
    bans = []
    for _ in range(10_000):
        length = draw.choice([16, 20, 24, 28, 32])
        address = ipaddress.IPv4Address(draw.getrandbits(32))
        bans.append(make_ban(f"{address}/{length}", "1h", "", "root", 0.0))
    index = BanIndex.of(bans)
    assert len(index.nets) == 5 and index.lengths[4] == [32, 28, 24, 20, 16]
    for ban in bans[:500]:
        network = ipaddress.ip_network(ban.target)
        inside = network.network_address + draw.randrange(network.num_addresses)
        found = index.address(inside, 10.0)
        assert found is not None and inside in ipaddress.ip_network(found.target)
    # Every covering ban found is right, and an address no ban covers finds none: check
    # against a plain scan for a sample of random addresses.
    networks = [ipaddress.ip_network(b.target) for b in bans]
    for _ in range(200):
        address = ipaddress.IPv4Address(draw.getrandbits(32))
        expected = any(address in net for net in networks)
        assert (index.address(address, 10.0) is not None) == expected


def test_admission_refuses_a_banned_address_first_and_counts_nothing() -> None:
    admission = Admission(0, 0, 0)
    admission.bans.add(make_ban("198.51.100.0/24", "1h", "", "root", 0.0))
    assert admission.admit("198.51.100.9", 5.0) == "Your address is banned until " + (
        format_login_time(3600.0) + "."
    )
    assert admission.connections == 0 and admission.unauth == 0
    assert admission.refusals_to_log(1000.0) == 0  # not a refusal over the limits
    assert admission.admit("198.51.100.9", 3600.0) is None  # expired by itself
    assert admission.admit("198.51.101.9", 5.0) is None


# -- the store ----------------------------------------------------------------------------------


def test_the_store_adds_replaces_removes_and_prunes(tmp_path: Path) -> None:
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    try:
        assert not store_bans.add_ban(db, make_ban("bob", "1h", "a", "root", 0.0))
        assert store_bans.add_ban(db, make_ban("bob", "2h", "b", "root", 10.0))
        store_bans.add_ban(db, make_ban("10.0.0.0/8", "90s", "", "root", 0.0))
        store_bans.add_ban(db, make_ban(KEY_FP, None, "", "root", 20.0))
        listed = store_bans.active_bans(db, 50.0)
        assert [b.target for b in listed] == ["10.0.0.0/8", "bob", KEY_FP]
        assert listed[1].expires == 7210.0 and listed[1].reason == "b"
        # Expired bans are not listed, and are deleted as they are read.
        assert [b.target for b in store_bans.active_bans(db, 100.0)] == ["bob", KEY_FP]
        (count,) = db._db.execute("SELECT count(*) FROM bans").fetchone()
        assert count == 2
        assert store_bans.remove_ban(db, "bob") is not None
        assert store_bans.remove_ban(db, "bob") is None
        index = store_bans.load_index(db, 100.0)
        assert index.keys and not index.users
    finally:
        db.close()


def test_the_store_holds_a_bounded_number_of_bans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_bans, "MAX_BANS", 2)
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    try:
        store_bans.add_ban(db, make_ban("ann", "90s", "", "root", 0.0))
        store_bans.add_ban(db, make_ban("bob", None, "", "root", 0.0))
        with pytest.raises(store_bans.TooManyBans, match="too many bans"):
            store_bans.add_ban(db, make_ban("cat", None, "", "root", 0.0))
        store_bans.add_ban(db, make_ban("bob", "1h", "", "root", 0.0))  # replacing is fine
        # An expired ban makes room.
        store_bans.add_ban(db, make_ban("cat", None, "", "root", 100.0))
    finally:
        db.close()


# -- the whole server ---------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    return make_server_with(tmp_path, ("bob", "carl", "dora"))


def test_a_network_ban_ends_sessions_and_refuses_connections_until_it_expires(
    server: Assembly,
) -> None:
    admin = online(server, "root1", peer="192.0.2.1")
    bob = online(server, "bob", peer="10.0.0.5")
    carl = online(server, "carl", peer="10.0.1.5")
    until = format_login_time(3600.0)
    answer = admin.run("ban 10.0.0.7/24 1h spam")
    assert answer == f"banned 10.0.0.0/24 until {until} (spam)\nroot1@testhost:~$ "
    assert bob.output() == (
        f"\nYou have been logged out by root1: banned 10.0.0.0/24 until {until} (spam)\n"
    )
    assert bob.disconnecting
    assert carl.output() == "" and not carl.disconnecting
    refused = Client(server, peer="10.0.0.9")
    assert refused.output() == f"Your address is banned until {until}.\n"
    assert refused.disconnecting
    listing = admin.run("bans")
    assert listing.splitlines()[0].split() == ["TARGET", "BY", "WHEN", "UNTIL", "REASON"]
    assert listing.splitlines()[1].split()[:2] == ["10.0.0.0/24", "root1"]
    server.clock.advance(3600)
    again = Client(server, peer="10.0.0.9")
    assert "login: " in again.output() and not again.disconnecting
    assert "no bans" in admin.run("bans")


def test_a_user_ban_refuses_the_login_and_unban_lifts_it(server: Assembly) -> None:
    admin = online(server, "root1", peer="192.0.2.1")
    carl = online(server, "carl", peer="10.0.1.5")
    assert admin.run("ban carl flooding").startswith("banned carl permanently (flooding)\n")
    assert "logged out by root1: banned carl permanently (flooding)" in carl.output()
    c = Client(server, peer="10.0.2.9")
    assert "Login refused: banned permanently (flooding)\n" in c.login("carl", "password1")
    assert c.disconnecting
    assert admin.run("unban carl") == "unbanned carl\nroot1@testhost:~$ "
    assert admin.run("unban carl") == "unban: carl is not banned\nroot1@testhost:~$ "
    online(server, "carl", peer="10.0.2.9")


def test_usage_errors_are_clear(server: Assembly) -> None:
    admin = online(server, "root1", peer="192.0.2.1")
    usage = "Usage: ban TARGET [DURATION] [REASON...]\n"
    assert admin.run("ban") == usage + "root1@testhost:~$ "
    assert admin.run("ban 1.2.3").startswith("ban: invalid address '1.2.3'\n" + usage)
    assert admin.run("ban bob 5x spam").startswith(
        "ban: invalid duration '5x' (use 90s, 30m, 12h, 7d or perm)\n" + usage
    )
    assert admin.run("unban").startswith("Usage: unban TARGET\n")
    bob = online(server, "bob")
    assert bob.run("ban carl").startswith("ban: permission denied\n")
    assert bob.run("bans").startswith("bans: permission denied\n")


def test_a_ban_heard_from_another_node_applies_here(server: Assembly) -> None:
    dora = online(server, "dora", peer="10.9.0.5")
    ban = make_ban("10.9.0.0/16", "1h", "far away", "boss", 0.0)
    store_bans.add_ban(server.store.db, ban)  # the other node wrote it to the shared store
    server.bans.heard("ban", ban.to_fields())
    assert "You have been logged out by boss: banned 10.9.0.0/16 until" in dora.output()
    assert Client(server, peer="10.9.1.1").disconnecting
    store_bans.remove_ban(server.store.db, ban.target)
    server.bans.heard("unban", {"target": "10.9.0.0/16"})
    assert not Client(server, peer="10.9.1.1").disconnecting
    server.bans.heard("ban", {"target": "x"})  # malformed: logged, ignored
    server.bans.heard("shutdown", {})  # not ours


def test_a_key_ban_refuses_key_logins_and_ends_their_sessions(server: Assembly) -> None:
    start = server.start
    carl = server.store.db.get("carl")
    assert carl is not None
    server.bans.memory.add(make_ban(KEY_FP, None, "stolen", "root1", 0.0))
    assert start.login_refusal(carl, "10.0.0.1", KEY_FP) == (
        "Login refused: banned permanently (stolen)"
    )
    # The same user with a password (no key) is let in: only a user ban bars the user.
    assert start.login_refusal(carl, "10.0.0.1", "") is None
    closed: list[bool] = []

    class Port:
        connected, width, height = True, 80, 24

        def write(self, text: str) -> None:
            pass

        def notify(self, message: object) -> bool:
            return True

        def close(self) -> None:
            closed.append(True)

    with_key = Session(1, "carl", "user", "ssh/0", "10.0.0.1", 0.0, Port(), 0.0, key=KEY_FP)
    plain = Session(2, "carl", "user", "ssh/1", "10.0.0.1", 0.0, Port(), 0.0)
    server.hub.attach(with_key)
    server.hub.attach(plain)
    assert server.bans.end_here(make_ban(KEY_FP, None, "", "root1", 0.0)) == 1
    assert closed == [True]
    assert [s.id for s in server.hub.local_sessions()] == [2]


def test_a_ban_missed_while_cut_off_is_applied_at_the_next_reload(server: Assembly) -> None:
    dora = online(server, "dora", peer="10.9.0.5")
    # Another node banned dora while this one heard nothing (Redis away): only the store has it.
    store_bans.add_ban(server.store.db, make_ban("dora", "1h", "missed", "boss", 0.0))
    assert dora.output() == ""
    server.bans.reload()
    assert "You have been logged out by boss: banned dora until" in dora.output()
    assert dora.disconnecting
    c = Client(server, peer="10.9.2.2")
    assert "Login refused: banned until" in c.login("dora", "password1")


def test_a_malformed_stored_ban_is_left_out_not_fatal(server: Assembly) -> None:
    db = server.store.db
    db._db.execute(
        "INSERT INTO bans (target, kind, actor, created, expires, reason) "
        "VALUES ('not-a-network', 'network', 'x', 0, NULL, '')"
    )
    store_bans.add_ban(db, make_ban("10.1.0.0/16", None, "", "root1", 0.0))
    index = store_bans.load_index(db, 1.0)
    assert index.skipped == 1 and len(index) == 1
    server.bans.load_now(db)
    assert Client(server, peer="10.1.2.3").disconnecting


def test_a_connection_still_logging_in_when_its_address_is_banned_is_refused_at_login(
    server: Assembly,
) -> None:
    waiting = Client(server, peer="10.4.0.9")
    assert "login: " in waiting.output()
    admin = online(server, "root1", peer="192.0.2.1")
    admin.run("ban 10.4.0.0/16 12h")
    seen = waiting.login("bob", "password1")
    assert f"Your address is banned until {format_login_time(12 * 3600.0)}.\n" in seen
    assert "bob@testhost" not in seen and waiting.disconnecting
