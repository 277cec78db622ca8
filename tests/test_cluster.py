"""Real ``twistd`` nodes on one data dir behave as one server through one real redis-server:
what a user of any node sees is what they would see on a single server.

The tests that only talk share one cluster of three nodes (a, b, c) for the module, each
with users of its own so they do not see each other's sessions; the ones that kill a node,
stop Redis or start nodes with other options have a cluster of their own.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusternodes import ADMIN, Cluster, eventually, heard, run, running, who_rows
from realserver import PASSWORD, RawClient

pytestmark = pytest.mark.integration

#: Each shared-cluster test has its own users (a kick or a wall must not hit another's).
USERS = [
    "ann", "ben", "cat",  # who
    "alice", "bob", "mia", "max",  # write
    "dan", "eve",  # wall
    "kim", "kay",  # kick
    "ron", "rae",  # rooms
    "sam", "sue",  # shutdown
]  # fmt: skip


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("cluster"), "abc", users=USERS) as cluster:
        yield cluster


@pytest.fixture
def cluster(three: Cluster) -> Iterator[Cluster]:
    """The shared cluster; the test's connections are closed after it, and no node may
    have logged a traceback meanwhile."""
    marks = three.log_marks()
    try:
        yield three
        assert three.tracebacks(since=marks) == {}
    finally:
        three.close_clients()


def tty_of(cluster: Cluster, user: str, node: str) -> str:
    [s] = [s for s in cluster.who_json(node) if s["user"] == user]
    return str(s["tty"])


def listed(c: RawClient, user: str, wanted: set[str]) -> set[tuple[str, str]]:
    """The (user, tty) rows of ``who`` on ``c`` for the users in ``wanted``."""
    return {row for row in who_rows(run(c, "who", user)) if row[0] in wanted}


# -- who, and tty names unique across the cluster -----------------------------------------


def test_who_on_every_node_lists_everyone(cluster: Cluster) -> None:
    mine = {"ann", "ben", "cat"}
    clients = {
        "a": ("ann", cluster.login("a", "ann")),
        "b": ("ben", cluster.login("b", "ben")),
        "c": ("cat", cluster.login("c", "cat")),
    }
    cluster.login("b", "ann")  # one user on two nodes
    cluster.login("c", "ann")

    # The CLI of each node: the whole cluster, each session with the node it is on.
    expected = sorted([("ann", "a"), ("ann", "b"), ("ann", "c"), ("ben", "b"), ("cat", "c")])
    for node in "abc":

        def all_five(node: str = node) -> list[dict[str, object]] | None:
            found = [s for s in cluster.who_json(node) if s["user"] in mine]
            return found if len(found) == 5 else None

        got = eventually(all_five, timeout=5)
        assert got, f"who --json on node {node}: {cluster.who_json(node)}"
        assert sorted((s["user"], s["node"]) for s in got) == expected, node
    everyone = cluster.who_json("a")
    rows = {(str(s["user"]), str(s["tty"])) for s in everyone if s["user"] in mine}
    assert len(rows) == 5

    # Tty names are the cluster's: no two sessions anywhere share one.
    ttys = Counter(str(s["tty"]) for s in everyone)
    assert [t for t, n in ttys.items() if n > 1] == [], everyone

    # ``who`` in a session on each node: the same sessions, with the same tty names.
    for node, (user, c) in clients.items():
        seen = eventually(lambda u=user, c=c: listed(c, u, mine) == rows, timeout=5)
        assert seen, f"who on node {node}: {listed(c, user, mine)} != {rows}"


# -- write, mesg, wall --------------------------------------------------------------------


def test_write_crosses_nodes(cluster: Cluster) -> None:
    alice, bob = cluster.login("a", "alice"), cluster.login("b", "bob")
    alice_tty, bob_tty = tty_of(cluster, "alice", "a"), tty_of(cluster, "bob", "a")

    out = run(alice, "write bob hello ☃", "alice")
    assert "write:" not in out
    got = heard(bob, "EOF", "bob")
    assert re.search(
        rf"Message from alice@testhost on {re.escape(alice_tty)} at \d\d:\d\d \.\.\.\n"
        r"hello ☃\nEOF\n",
        got,
    ), got

    # Line by line, the other way, naming the tty.
    bob.send_line(f"write alice {alice_tty}")
    bob.send_line("first line")
    bob.send_line("second, \x1b[31mred")
    got = alice.expect("second, ^[[31mred\n")
    assert f"Message from bob@testhost on {bob_tty} at " in got and "first line\n" in got
    bob.send_line(".")
    bob.expect("bob@testhost:~$ ")
    heard(alice, "EOF", "alice")

    # mesg n on node b (once node a has heard of it: see the next test) refuses a write from
    # node a; mesg y opens it again.
    assert "is y\n" in run(bob, "mesg", "bob")
    run(bob, "mesg n", "bob")
    assert eventually(
        lambda: [s["mesg"] for s in cluster.who_json("a") if s["user"] == "bob"] == [False], 5
    )
    out = run(alice, "write bob are you there", "alice")
    assert "write: bob has messages disabled\n" in out
    out = run(alice, f"write bob {bob_tty} are you there", "alice")
    assert "write: bob has messages disabled\n" in out
    run(bob, "mesg y", "bob")
    assert eventually(
        lambda: [s["mesg"] for s in cluster.who_json("a") if s["user"] == "bob"] == [True], 5
    )
    out = run(alice, "write bob now?", "alice")
    assert "write:" not in out
    heard(bob, "now?\nEOF", "bob")
    assert "write: bob is not logged in on tel/999" in run(alice, "write bob tel/999 x", "alice")


def test_a_write_right_after_mesg_n_is_refused(cluster: Cluster) -> None:
    """Once bob has his prompt back after ``mesg n``, no write reaches him, and the writer is
    told so: not "sent" while bob's node silently drops it."""
    mia, max_ = cluster.login("a", "mia"), cluster.login("b", "max")
    run(max_, "mesg n", "max")
    out = run(mia, "write max are you there", "mia")
    assert "write: max has messages disabled\n" in out, "told it went, but max never sees it"


def test_wall_reaches_every_node(cluster: Cluster) -> None:
    admin, dan, eve = cluster.admin("a"), cluster.login("b", "dan"), cluster.login("c", "eve")
    admin_tty = tty_of(cluster, ADMIN, "a")
    mine = run(admin, "wall hello from node a", ADMIN)
    if "hello from node a\n" not in mine:  # its own copy may come after the prompt
        mine += heard(admin, "hello from node a", ADMIN)
    for got in (
        mine,
        heard(dan, "hello from node a", "dan"),
        heard(eve, "hello from node a", "eve"),
    ):
        assert f"Broadcast message from boss@testhost ({admin_tty}) (" in got, got

    # From the CLI of node c: delivered to the sessions of every node.
    r = cluster.cli("c", "wall", "from the cli of c")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"delivered to (\d+) sessions?\n", r.stdout)
    assert m and int(m.group(1)) >= 3, r.stdout
    for c, user in ((admin, ADMIN), (dan, "dan"), (eve, "eve")):
        assert "(control)" in heard(c, "from the cli of c", user)


# -- kick -----------------------------------------------------------------------------------


def test_kick_from_the_cli_of_one_node_ends_sessions_on_others(cluster: Cluster) -> None:
    on_b, on_c = cluster.login("b", "kim"), cluster.login("c", "kim")
    r = cluster.cli("a", "kick", "kim", "--reason", "testing the cluster")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ended 2 sessions of kim\n"
    for c in (on_b, on_c):
        got = c.expect("testing the cluster")
        assert "You have been logged out by " in got
        assert c.closed()
    assert eventually(lambda: all(s["user"] != "kim" for s in cluster.who_json("a")), 5)
    r = cluster.cli("a", "kick", "kim")
    assert r.returncode == 1 and "kim is not logged in" in r.stderr

    # From a session: an admin on node c kicks a user on node a.
    kay, admin = cluster.login("a", "kay"), cluster.admin("c")
    run(admin, "kick kay bye now", ADMIN)
    assert "You have been logged out by boss: bye now" in kay.expect("bye now")
    assert kay.closed()


# -- rooms ----------------------------------------------------------------------------------


def test_a_room_spans_nodes(cluster: Cluster) -> None:
    ron, rae = cluster.login("a", "ron"), cluster.login("b", "rae")
    assert "[#lobby] ron has joined\n" in run(ron, "join #lobby", "ron")
    assert "[#lobby] rae has joined\n" in run(rae, "join #lobby", "rae")
    heard(ron, "[#lobby] rae has joined", "ron")

    run(ron, "say #lobby hi", "ron")
    heard(rae, "[#lobby] ron: hi", "rae")
    run(rae, "say #lobby hello ☃ \x07", "rae")
    heard(ron, "[#lobby] rae: hello ☃ ^G", "ron")

    for c, user in ((ron, "ron"), (rae, "rae")):
        assert {u for u, _ in who_rows(run(c, "who #lobby", user))} == {"ron", "rae"}
        out = run(c, "rooms", user)
        assert re.search(r"^#lobby +2\b", out, re.M), out

    out = run(ron, "topic #lobby cluster talk", "ron")
    assert "[#lobby] ron set the topic: cluster talk\n" in out
    heard(rae, "[#lobby] ron set the topic: cluster talk", "rae")
    assert "[#lobby] topic: cluster talk\n" in run(rae, "topic #lobby", "rae")

    assert "[#lobby] rae has left\n" in run(rae, "part #lobby", "rae")
    heard(ron, "[#lobby] rae has left", "ron")
    assert {u for u, _ in who_rows(run(rae, "who #lobby", "rae"))} == {"ron"}
    ron.send_line("exit")
    assert ron.closed()
    # The last member gone (on another node): the room is gone everywhere.
    assert eventually(lambda: "No rooms.\n" in run(rae, "rooms", "rae"), 5)


# -- shutdown -------------------------------------------------------------------------------


def test_shutdown_warnings_reach_every_node(cluster: Cluster) -> None:
    sam, sue = cluster.login("b", "sam"), cluster.login("c", "sue")
    r = cluster.cli("a", "shutdown", "+10", "maintenance")
    try:
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("shutdown scheduled for ")
        for c, user in ((sam, "sam"), (sue, "sue")):
            got = heard(c, "maintenance", user)
            assert "The system is going down at " in got and "(in 10 minutes)!" in got, got
        # Every node knows: a login on node c is told at once.
        c = cluster.connect("c")
        c.expect("login: ")
        c.send_line("sue")
        c.expect("Password: ")
        c.send_line(PASSWORD)
        got = c.expect("sue@testhost:~$ ")
        assert re.search(
            r"The system is going down at .* \(in (10|9) minutes\): maintenance\n", got
        )
    finally:
        r = cluster.cli("a", "shutdown", "-c")
    assert (r.returncode, r.stdout) == (0, "shutdown cancelled\n"), r.stderr
    for c, user in ((sam, "sam"), (sue, "sue")):
        heard(c, "The system shutdown has been cancelled.", user)


# -- --max-sessions across nodes ------------------------------------------------------------


def test_max_sessions_replace_across_nodes(tmp_path: Path) -> None:
    opts = ("--max-sessions", "1", "--on-max", "replace")
    with running(tmp_path, "ab", *opts, users=["bob"]) as cluster:
        first = cluster.login("a", "bob")
        second = cluster.login("b", "bob")
        first.expect("Session replaced by a new login from 127.0.0.1.")
        assert first.closed()
        assert "bob" in run(second, "whoami", "bob")
        bobs = eventually(
            lambda: [s for s in cluster.who_json("a") if s["user"] == "bob"] or None, 5
        )
        assert bobs and [s["node"] for s in bobs] == ["b"], cluster.who_json("a")
        # And back: a login on a replaces the one on b.
        third = cluster.login("a", "bob")
        second.expect("Session replaced by a new login from 127.0.0.1.")
        assert second.closed()
        assert "bob" in run(third, "whoami", "bob")
        assert cluster.tracebacks() == {}


def test_max_sessions_refuse_across_nodes(tmp_path: Path) -> None:
    opts = ("--max-sessions", "1", "--on-max", "refuse")
    with running(tmp_path, "ab", *opts, users=["bob"]) as cluster:
        first = cluster.login("a", "bob")
        c = cluster.connect("b")
        c.expect("login: ")
        c.send_line("bob")
        c.expect("Password: ")
        c.send_line(PASSWORD)
        c.expect("Too many sessions for bob (limit 1); log out elsewhere first.\n")
        assert c.closed()
        assert "bob" in run(first, "whoami", "bob")  # the first one is untouched
        first.send_line("exit")
        assert first.closed()

        # Logged out on a: the claim is free for a login on b.
        def again() -> RawClient | None:
            c = cluster.connect("b")
            c.expect("login: ")
            c.send_line("bob")
            c.expect("Password: ")
            c.send_line(PASSWORD)
            try:
                c.expect("bob@testhost:~$ ", timeout=5)
            except AssertionError:
                return None
            return c

        assert eventually(again, 5, every=0.5), "bob could not log in on b after logging out on a"
        assert cluster.tracebacks() == {}


# -- failures: a node killed, Redis gone ----------------------------------------------------


def test_a_node_killed_drops_out_of_who_within_15_s(tmp_path: Path) -> None:
    """kill -9 of node b: gone from who everywhere within 15 s; node a logs it with the count
    of sessions that ended, its rooms' members see them leave, and ``shellserver status``
    names the node and the live ones."""
    with running(tmp_path, "abc", users=["alice", "bob", "carol", "dave"]) as cluster:
        alice, dave = cluster.login("a", "alice"), cluster.login("a", "dave")
        bob, carol = cluster.login("b", "bob"), cluster.login("b", "carol")
        for c, user in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            assert f"[#x] {user} has joined" in run(c, "join #x", user)
        away = {"bob", "carol"}
        assert eventually(lambda: {u for u, _ in listed(alice, "alice", away)} == away, 5), (
            "node a never saw node b's sessions"
        )
        status = cluster.cli("a", "status")
        assert status.returncode == 0, status.stderr
        assert "\nnode a, in a cluster of 3 live nodes: a, b, c\n" in status.stdout + "\n"

        cluster.kill("b")
        killed = time.monotonic()
        gone = eventually(lambda: not listed(alice, "alice", away), timeout=20, every=0.5)
        took = time.monotonic() - killed
        assert gone, f"node b's sessions still in node a's who {took:.1f} s after kill -9"
        assert took <= 15, f"node b's sessions left node a's who only after {took:.1f} s"

        # The room: bob and carol left it, as if they had typed part.
        def told() -> bool:
            run(alice, "echo", "alice")
            return b"[#x] carol has left" in alice.raw_seen

        assert eventually(told, 5), alice.raw_seen[-500:]
        assert b"[#x] bob has left\r\n" in alice.raw_seen
        alice.send_line("echo in step")  # past the prompts the messages drew again
        alice.expect("in step\nalice@testhost:~$ ")
        assert not [s for s in cluster.who_json("a") if s["user"] in away]
        assert {u for u, _ in who_rows(run(alice, "who", "alice"))} >= {"alice"}
        # Nobody to write to on b any more: saved for later, as for anyone offline.
        assert "write: bob is not logged in" in run(alice, "write bob are you there?", "alice")
        assert {u for u, _ in who_rows(run(alice, "who #x", "alice"))} == {"alice"}
        # The log of node a (and c): who went, why, and what ended with it.
        for node in "ac":
            log = cluster[node].log_text()
            assert re.search(
                r"node b left the cluster \(no heartbeat for 1[0-5] s\); 2 sessions ended\n", log
            ), (node, log[-2000:])
        status = cluster.cli("a", "status")
        assert status.returncode == 0, status.stderr
        assert "\nnode a, in a cluster of 2 live nodes: a, c\n" in status.stdout + "\n"

        # Plain who shows admins the node of each session (the CLI, and a session); not others.
        cluster.login("c", "bob")
        r = cluster.cli("a", "who")
        assert r.returncode == 0, r.stderr
        header, *rows = r.stdout.splitlines()
        assert header.split() == ["USER", "TTY", "ROLE", "LOGIN", "IDLE", "MESG", "NODE", "FROM"]
        assert any(row.split()[0] == "bob" and " c " in row for row in rows), r.stdout
        admin = cluster.admin("a")
        assert eventually(lambda: "bob" in run(admin, "who", ADMIN), 5)
        header, *rows = run(admin, "who", ADMIN).splitlines()
        assert header.split() == ["USER", "TTY", "LOGIN", "IDLE", "MESG", "NODE", "FROM"]
        assert re.search(r"^bob +\S+ .* c +127\.0\.0\.1$", "\n".join(rows), re.M), rows
        header = run(dave, "who", "dave").splitlines()[0]
        assert header.split() == ["USER", "TTY", "LOGIN", "IDLE", "MESG"]
        assert "Traceback" not in cluster["a"].log_text()


def crosses(c: RawClient, user: str, to: str, text: str) -> bool:
    """Did ``user``'s ``write TO TEXT`` go through (no ``write:`` complaint)?"""
    return "write:" not in run(c, f"write {to} {text}", user, timeout=15)


def test_redis_down_keeps_local_service_and_the_cluster_heals(tmp_path: Path) -> None:
    with running(tmp_path, "ab", users=["alice", "bob", "carol"]) as cluster:
        alice, carol = cluster.login("a", "alice"), cluster.login("a", "carol")
        bob = cluster.login("b", "bob")
        everyone = {"alice", "bob", "carol"}

        def all_listed() -> bool:
            return {u for u, _ in listed(alice, "alice", everyone)} == everyone and {
                u for u, _ in listed(bob, "bob", everyone)
            } == everyone

        assert eventually(all_listed, 5), "the nodes never saw each other"
        run(alice, "write bob before", "alice")
        heard(bob, "before\nEOF", "bob")

        cluster.redis.stop()
        # Local service on node a goes on: who, and write both ways.
        assert {u for u, _ in listed(alice, "alice", {"alice", "carol"})} == {"alice", "carol"}
        assert "write:" not in run(alice, "write carol still here", "alice", timeout=15)
        heard(carol, "still here\nEOF", "carol")
        assert "write:" not in run(carol, "write alice me too", "carol", timeout=15)
        heard(alice, "me too\nEOF", "alice")
        # Across nodes: a clear answer, in good time, and nothing saved for later.
        started = time.monotonic()
        out = run(alice, "write bob lost?", "alice", timeout=15)
        assert "write: cluster unavailable\n" in out, out
        assert time.monotonic() - started < 10
        assert "write: cluster unavailable\n" in run(bob, "write alice lost?", "bob", timeout=15)
        assert "bob" in {u for u, _ in who_rows(run(bob, "who", "bob", timeout=15))}
        assert cluster.tracebacks() == {}

        cluster.redis.start()
        back = time.monotonic()
        # (who may show the last known records all along: the proof of healing is a write.)
        # Each node reconnects on its own backoff: healed is both ways.
        healed = eventually(lambda: crosses(alice, "alice", "bob", "after"), 15, every=0.5)
        assert healed, (
            f"a's write did not cross {time.monotonic() - back:.1f} s after Redis came back"
        )
        got = heard(bob, "after\nEOF", "bob")
        assert "lost?" not in got  # nothing from the outage delivered late
        healed = eventually(lambda: crosses(bob, "bob", "carol", "and you"), 15, every=0.5)
        took = time.monotonic() - back
        assert healed, f"b's write did not cross {took:.1f} s after Redis came back"
        assert took <= 10, f"write crossed both ways again only {took:.1f} s after Redis came back"
        heard(carol, "and you\nEOF", "carol")
        assert all_listed()
        assert sorted((s["user"], s["node"]) for s in cluster.who_json("b")) == [
            ("alice", "a"), ("bob", "b"), ("carol", "a")
        ]  # fmt: skip
        assert cluster.tracebacks() == {}


def test_sessions_that_came_and_went_during_an_outage(tmp_path: Path) -> None:
    """Redis restarts empty: each node puts its own sessions back, so what changed while it
    was away (a logout, a login) is right everywhere afterwards, tty names unique."""
    with running(tmp_path, "ab", users=["alice", "bob", "carol", "dave"]) as cluster:
        alice, carol = cluster.login("a", "alice"), cluster.login("a", "carol")
        bob = cluster.login("b", "bob")
        assert eventually(lambda: {u for u, _ in listed(bob, "bob", {"carol"})} == {"carol"}, 5)

        cluster.redis.stop()
        carol.send_line("exit")
        assert carol.closed()
        dave = cluster.login("a", "dave")  # a login while Redis is away is still served
        assert "write:" not in run(dave, "write alice local", "dave", timeout=15)
        heard(alice, "local\nEOF", "alice")

        cluster.redis.start()
        assert eventually(lambda: crosses(bob, "bob", "dave", "welcome back"), 15, every=0.5), (
            "bob on b could not write to dave (who logged in on a during the outage)"
        )
        heard(dave, "welcome back\nEOF", "dave")
        for node in "ab":
            sessions = eventually(
                lambda n=node: (
                    sorted((s["user"], s["node"]) for s in cluster.who_json(n))
                    == [("alice", "a"), ("bob", "b"), ("dave", "a")]
                ),
                10,
            )
            assert sessions, f"who --json on node {node}: {cluster.who_json(node)}"
        ttys = [s["tty"] for s in cluster.who_json("a")]
        assert len(set(ttys)) == len(ttys), ttys
        assert "write: carol is not logged in" in run(bob, "write carol gone?", "bob")
        assert cluster.tracebacks() == {}


def test_a_wedged_redis_makes_nobody_wait_long(tmp_path: Path) -> None:
    """Redis paused (SIGSTOP: connections open, no answers), then resumed: the link's timeout
    turns it into an outage, so nobody hangs, and the cluster heals on its own."""
    with running(tmp_path, "ab", users=["alice", "bob", "carol"]) as cluster:
        alice, carol = cluster.login("a", "alice"), cluster.login("a", "carol")
        bob = cluster.login("b", "bob")
        assert eventually(lambda: "bob" in {u for u, _ in listed(alice, "alice", {"bob"})}, 5)

        cluster.redis.pause()
        try:
            started = time.monotonic()
            out = run(alice, "write bob hello?", "alice", timeout=15)
            assert "write: cluster unavailable\n" in out, out
            assert time.monotonic() - started < 5
            started = time.monotonic()
            assert "write:" not in run(alice, "write carol local", "alice", timeout=15)
            heard(carol, "local\nEOF", "carol")
            assert time.monotonic() - started < 5
        finally:
            cluster.redis.resume()

        assert eventually(lambda: crosses(alice, "alice", "bob", "back"), 10, every=0.5), (
            "write never crossed again after the pause"
        )
        heard(bob, "back\nEOF", "bob")
        assert cluster.tracebacks() == {}


def test_a_write_said_unavailable_is_not_shown_later(tmp_path: Path) -> None:
    """``write: cluster unavailable`` means it did not go: it must not turn up once a wedged
    Redis wakes up."""
    with running(tmp_path, "ab", users=["alice", "bob"]) as cluster:
        alice, bob = cluster.login("a", "alice"), cluster.login("b", "bob")
        assert eventually(lambda: "bob" in {u for u, _ in listed(alice, "alice", {"bob"})}, 5)
        cluster.redis.pause()
        try:
            out = run(alice, "write bob hello?", "alice", timeout=15)
            assert "write: cluster unavailable\n" in out, out
        finally:
            cluster.redis.resume()
        assert eventually(lambda: crosses(alice, "alice", "bob", "back"), 10, every=0.5)
        got = heard(bob, "back\nEOF", "bob")
        assert "hello?" not in got
