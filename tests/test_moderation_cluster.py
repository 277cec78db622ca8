"""Moderation across real nodes on one real redis-server: a mute made on one node holds for a
session on the other, an unmute frees it there, a deletion on one node is forgotten by the
other node's sessions, and the ledger names the node each action was taken on."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusternodes import ADMIN, Cluster, eventually, run, running
from realserver import PASSWORD, RawClient

pytestmark = pytest.mark.integration
#: The end of a mute as shown: the time, with the day before it once it is not today.
UNTIL = r"(?:\w{3} \w{3} \d\d )?\d\d:\d\d"


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Cluster]:
    with running(tmp_path, "ab", users=["alice", "bob", "carol"]) as cluster:
        marks = cluster.log_marks()
        yield cluster
        assert cluster.tracebacks(since=marks) == {}


def muted(c: RawClient, user: str) -> str | None:
    """What ``write nobody x`` answers: the mute when there is one (checked before the name)."""
    out = run(c, "write nobody x", user)
    return out if "you are muted" in out else None


def test_a_mute_on_one_node_holds_on_the_other(two: Cluster) -> None:
    boss = two.admin("a")
    alice = two.login("b", "alice")
    bob = two.login("a", "bob")
    out = run(boss, "mute alice 10m flooding", ADMIN)
    assert re.search(rf"muted alice until {UNTIL} \(flooding\)", out), out
    got = eventually(lambda: muted(alice, "alice"), 10)
    assert got is not None and re.search(rf"write: you are muted until {UNTIL} \(flooding\)", got)
    assert "say: you are muted" in run(alice, "say #x hi", "alice")
    # Reading goes on across the nodes.
    assert eventually(lambda: any(s["user"] == "alice" for s in two.who_json("a")), 10)
    assert run(bob, "write alice still there?", "bob") == "bob@testhost:~$ "
    assert "still there?" in alice.expect("EOF\nalice@testhost:~$ ")

    r = two.cli("a", "unmute", "alice")
    assert r.returncode == 0, r.stderr
    assert eventually(lambda: muted(alice, "alice") is None, 10)
    assert run(alice, "write bob free", "alice") == "alice@testhost:~$ "

    # From the CLI of node b, for a session on node a.
    r = two.cli("b", "mute", "bob", "1h", "--reason", "calm down")
    assert r.returncode == 0, r.stderr
    got = eventually(lambda: muted(bob, "bob"), 10)
    assert got is not None and "(calm down)" in got

    records = json.loads(two.cli("b", "audit", "--json", "--limit", "3").stdout)["records"]
    assert [(x["action"], x["target"], x["node"], x["from"]) for x in records] == [
        ("mute", "bob", "b", "cli"),
        ("unmute", "alice", "a", "cli"),
        ("mute", "alice", "a", records[2]["from"]),
    ]
    assert records[2]["from"].startswith("tel/") and records[2]["actor"] == ADMIN


def test_a_deletion_on_one_node_is_forgotten_by_the_other_nodes_sessions(two: Cluster) -> None:
    bob = two.login("a", "bob")
    assert "Ignoring carol." in run(bob, "ignore carol", "bob")
    r = two.cli("b", "userdel", "carol")
    assert r.returncode == 0, r.stderr
    r = two.cli("b", "useradd", "carol", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert eventually(lambda: "You are not ignoring anyone." in run(bob, "ignore", "bob"), 10), (
        "node a's session still ignores the deleted name"
    )
    carol = two.login("b", "carol")
    assert run(carol, "write bob hello from the new carol", "carol") == "carol@testhost:~$ "
    assert "hello from the new carol" in bob.expect("EOF\nbob@testhost:~$ ")
