"""Several RedisHubs in one process against a real redis-server: what crosses nodes.

Fast and in-process (no twistd): each hub has its own node name, link and local
sessions, as each node of a cluster does; tests/test_cluster.py runs real nodes.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from redisserver import RedisServer
from test_hub import Sink
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

import shellserver.hub.cluster.presence as presence_module
from shellserver.hub.cluster.hub import RedisHub, cluster_hub
from shellserver.hub.cluster.url import RedisURL
from shellserver.hub.local import Delivery, Message
from shellserver.hub.record import SessionRecord
from shellserver.hub.rooms import CREATED, JOINED, Member
from shellserver.hub.session import Session
from shellserver.terminal.discipline import Redraws, Terminal


async def until(cond: Callable[[], bool], timeout: float = 3.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met in {timeout} s: {what or cond}")
        await deferLater(reactor, 0.02, lambda: None)


async def settle(seconds: float = 0.2) -> None:
    """For checking that something does NOT happen: give it a chance to."""
    await deferLater(reactor, seconds, lambda: None)


def joined(hub: RedisHub) -> bool:
    """The hub's first (or latest) sync is done: it beats."""
    return hub.presence._beat is not None


class Node:
    def __init__(self, hub: RedisHub) -> None:
        self.hub = hub
        self.name = hub.node
        self.sinks: dict[int, Sink] = {}
        self._ids = itertools.count(1)  # ids are per node: the same numbers on every node

    async def login(self, user: str, session_id: int | None = None) -> Session:
        """As sessionstart does: a tty name, a session on this node, attached."""
        tty = await self.hub.allocate_tty("tel")
        sink = Sink()
        now = reactor.seconds()
        s = Session(
            next(self._ids) if session_id is None else session_id,
            user,
            "user",
            tty,
            "p",
            now,
            Terminal(sink, Redraws(reactor)),
            now,
            node=self.name,
        )
        await self.hub.attach(s)
        self.sinks[s.id] = sink
        return s

    def got(self, s: Session) -> bytes:
        return b"".join(self.sinks[s.id].got)

    def sees(self, node: str, session_id: int) -> bool:
        return self.hub.mirror.get(node, session_id) is not None


@pytest.fixture
def cluster(redis_server: RedisServer) -> Iterator[Callable[..., Any]]:
    hubs: list[RedisHub] = []
    before = set(reactor.getDelayedCalls())

    async def make(*names: str) -> list[Node]:
        made = []
        for name in names:
            hub = cluster_hub(RedisURL("127.0.0.1", redis_server.port, 0), name, reactor)
            hubs.append(hub)
            hub.start()
            made.append(hub)
        for hub in made:
            await until(lambda hub=hub: joined(hub), what=f"{hub.node} joined")
        nodes = [Node(h) for h in made]
        for n in nodes:  # everyone has loaded everyone (an empty node is an empty table)
            others = {m.name for m in nodes if m is not n}
            await until(lambda n=n, o=others: o <= set(n.hub.mirror.nodes()), what="mirrors")
        return nodes

    yield make
    for hub in hubs:
        pytest_twisted.blockon(hub.stop())
    pytest_twisted.blockon(deferLater(reactor, 0.05, lambda: None))  # Redraws' last turn
    left = [c for c in reactor.getDelayedCalls() if c not in before]
    assert not left, f"the hubs left delayed calls: {left}"


class RedisCLI:
    """Blocking commands to the test's Redis (db 0), to look at and plant shared records:
    a few short calls while Redis is up, so blocking the reactor for them is fine."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def __call__(self, *args: str | bytes) -> Any:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            self.file = self.sock.makefile("rb")
        parts = [a if isinstance(a, bytes) else a.encode() for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.sock.sendall(out)
        return self._reply()

    def _reply(self) -> Any:
        line = self.file.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise AssertionError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if rest == b"-1" else self.file.read(int(rest) + 2)[:-2]
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise AssertionError(f"bad reply {line!r}")

    def close(self) -> None:
        if self.sock is not None:
            self.file.close()
            self.sock.close()
            self.sock = None

    reconnect = close  # after a restart: connect again on the next call


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[RedisCLI]:
    cli = RedisCLI(redis_server.port)
    yield cli
    cli.close()


@pytest_twisted.ensureDeferred
async def test_attach_is_listed_on_every_node_and_detach_removes(cluster: Any) -> None:
    a, b = await cluster("a", "b")
    alice = await a.login("alice")
    await until(lambda: b.sees("a", alice.id), what="b sees alice")
    [rec] = await b.hub.sessions_of("alice")
    assert (rec.node, rec.id, rec.user, rec.tty) == ("a", alice.id, "alice", alice.tty)
    assert [s.user for s in await b.hub.sessions()] == ["alice"]
    assert b.hub.counts() == (1, 1)

    alice2 = await b.login("alice")  # the same id as alice's on a: keyed by node too
    assert alice2.id == alice.id
    bob = await b.login("bob")
    await until(lambda: a.hub.counts() == (3, 2), what="a counts")
    assert b.hub.counts() == (3, 2)
    assert [(s.node, s.user) for s in await a.hub.sessions()] == [
        ("a", "alice"),
        ("b", "alice"),
        ("b", "bob"),
    ]  # in login order
    assert [s.node for s in await a.hub.sessions_of("alice")] == ["a", "b"]

    # mesg and the current command travel (mesg at once)
    alice.mesg, alice.doing = False, "vi"
    a.hub.changed(alice)
    await until(lambda: not b.hub.mirror.get("a", alice.id).mesg, what="mesg n seen")
    assert b.hub.mirror.get("a", alice.id).doing == "vi"

    await a.hub.detach(alice)
    await a.hub.detach(alice)  # twice is harmless
    await until(lambda: not b.sees("a", alice.id), what="b forgets alice")
    assert [s.node for s in await b.hub.sessions_of("alice")] == ["b"]
    assert b.hub.counts() == (2, 2)
    await b.hub.detach(bob)
    await until(lambda: a.hub.counts() == (1, 1), what="a counts after bob")
    assert not b.hub.mirror.stale and not a.hub.mirror.stale


@pytest_twisted.ensureDeferred
async def test_tty_names_are_unique_across_nodes_and_reused_lowest_first(cluster: Any) -> None:
    a, b = await cluster("a", "b")
    s0 = await a.login("u0")
    s1 = await b.login("u1")
    s2 = await a.login("u2")
    s3 = await b.login("u3")
    assert [s.tty for s in (s0, s1, s2, s3)] == ["tel/0", "tel/1", "tel/2", "tel/3"]
    await b.hub.detach(s3)
    await b.hub.detach(s1)
    await a.hub.detach(s0)
    assert await a.hub.allocate_tty("tel") == "tel/0"
    assert await a.hub.allocate_tty("tel") == "tel/1"
    assert await b.hub.allocate_tty("tel") == "tel/3"
    assert await b.hub.allocate_tty("tel") == "tel/4"
    assert await b.hub.allocate_tty("ssh") == "ssh/0"


@pytest_twisted.ensureDeferred
async def test_deliver_across_nodes(cluster: Any) -> None:
    a, b = await cluster("a", "b")
    alice = await a.login("alice")
    await until(lambda: b.sees("a", alice.id))
    [to] = await b.hub.sessions_of("alice")
    assert await b.hub.deliver(to, Message.of("hello from b"), "bob") is Delivery.DELIVERED
    await until(lambda: b"hello from b" in a.got(alice), what="text arrives")

    alice.mesg = False
    a.hub.changed(alice)
    await until(lambda: not b.hub.mirror.get("a", alice.id).mesg)
    [to] = await b.hub.sessions_of("alice")
    assert await b.hub.deliver(to, Message.of("refused"), "bob") is Delivery.REFUSED
    assert await b.hub.deliver(to, Message.of("notice 1"), None) is Delivery.DELIVERED
    alice.mesg = True
    a.hub.changed(alice)
    await until(lambda: b.hub.mirror.get("a", alice.id).mesg)

    a.hub.set_ignores("alice", frozenset({"bob"}))
    await until(lambda: "bob" in b.hub.ignores("alice"), what="ignore list travels")
    assert await b.hub.deliver(to, Message.of("ignored"), "bob") is Delivery.REFUSED
    assert await b.hub.deliver(to, Message.of("from carol"), "carol") is Delivery.DELIVERED
    assert await b.hub.deliver(to, Message.of("notice 2"), None) is Delivery.DELIVERED
    await until(lambda: b"notice 2" in a.got(alice))
    assert b"refused" not in a.got(alice) and b"ignored" not in a.got(alice)
    assert b"notice 1" in a.got(alice) and b"from carol" in a.got(alice)

    a.hub.set_ignores("alice", None)
    await until(lambda: not b.hub.ignores("alice"), what="ignore list forgotten")

    ghost = SessionRecord("a", 999, "alice", "user", "tel/9", "p", "", 0.0, 0.0, True, "")
    assert await b.hub.deliver(ghost, Message.of("x"), "bob") is Delivery.GONE
    await a.hub.detach(alice)
    await until(lambda: not b.sees("a", alice.id))
    assert await b.hub.deliver(to, Message.of("late"), "bob") is Delivery.GONE


@pytest_twisted.ensureDeferred
async def test_broadcast_reaches_every_node(cluster: Any) -> None:
    a, b, c = await cluster("a", "b", "c")
    sa = await a.login("alice")
    sb = [await b.login("bob"), await b.login("bob")]
    await until(lambda: len(a.hub.mirror) == 2)
    assert await a.hub.broadcast(Message.of("wall text")) == (3, 0)
    for s in sb:
        await until(lambda s=s: b"wall text" in b.got(s), what="wall on b")
    assert b"wall text" in a.got(sa)
    await settle()
    assert b.got(sb[0]).count(b"wall text") == 1  # once, not once per subscriber
    assert b.hub.broadcast_here(Message.of("only b")) == (2, 0)
    await settle()
    assert b"only b" not in a.got(sa)
    assert len(c.hub.local_sessions()) == 0


@pytest_twisted.ensureDeferred
async def test_logout_user_and_end_session_across_nodes(cluster: Any) -> None:
    a, b = await cluster("a", "b")
    alice1 = await a.login("alice")
    alice2 = await a.login("alice")
    bob = await a.login("bob")
    carol = await b.login("carol")
    await until(lambda: len(b.hub.mirror) == 3)
    assert await b.hub.logout_user("alice", Message.of("go away")) == 2
    for s in (alice1, alice2):
        await until(lambda s=s: a.sinks[s.id].closed, what="alice's session closed")
        assert b"go away" in a.got(s)
    assert not a.sinks[bob.id].closed
    await until(lambda: not b.hub.mirror.of("alice"), what="alice detached")
    assert [s.user for s in a.hub.local_sessions()] == ["bob"]

    [to] = await b.hub.sessions_of("bob")
    await b.hub.end_session(to, Message.of("ended by b"))
    await until(lambda: a.sinks[bob.id].closed)
    assert b"ended by b" in a.got(bob)
    await until(lambda: not b.hub.mirror.of("bob"))
    assert a.hub.local_sessions() == []
    # their tty names are free again, lowest first
    assert [await a.hub.allocate_tty("tel") for _ in range(4)] == [
        "tel/0",
        "tel/1",
        "tel/2",
        "tel/4",
    ]
    assert carol.tty == "tel/3" and not b.sinks[carol.id].closed


@pytest_twisted.ensureDeferred
async def test_max_sessions_across_nodes(cluster: Any, redis: Any) -> None:
    a, b = await cluster("a", "b")
    old = await a.login("alice")
    await until(lambda: b.sees("a", old.id))
    assert await b.hub.admit("alice", 7, 1, False) is None  # refused: one on a
    assert await b.hub.admit("alice", 7, 2, False) == []  # under a limit of two: claimed
    assert await a.hub.admit("alice", 8, 2, False) is None  # the claim counts
    b.hub.release("alice", 7)
    await until(lambda: len(redis("ZRANGE", "ss:u:alice", "0", "-1")) == 1)

    ended = await b.hub.admit("alice", 7, 1, True)
    assert [(s.node, s.id) for s in ended] == [("a", old.id)]
    for s in ended:
        await b.hub.end_session(s, Message.of("replaced"))
    await until(lambda: a.sinks[old.id].closed, what="the old session ended on a")
    assert b"replaced" in a.got(old)
    assert a.hub.local_sessions() == []
    await b.login("alice", 7)  # the claimed id
    assert await a.hub.admit("alice", 9, 1, False) is None  # now b's is the one
    assert redis("ZRANGE", "ss:u:alice", "0", "-1") == [b"b/7"]

    # a claim of a node that is not beating (dead, or never there) does not count
    redis("ZADD", "ss:u:carol", "1", "ghost/1")
    assert await a.hub.admit("carol", 3, 1, False) == []
    assert redis("ZRANGE", "ss:u:carol", "0", "-1") == [b"a/3"]


@pytest_twisted.ensureDeferred
async def test_replace_ends_a_detached_session_before_an_older_attached_one(
    cluster: Any,
) -> None:
    a, b = await cluster("a", "b")
    older = await a.login("alice")
    newer = await a.login("alice")
    newer.detached_at = reactor.seconds()  # its connection was lost: it waits, detached
    await a.hub.changed(newer)
    await until(lambda: bool((r := b.hub.mirror.get("a", newer.id)) and r.detached))
    ended = await b.hub.admit("alice", 7, 2, True)
    assert [(s.node, s.id) for s in ended] == [("a", newer.id)]
    b.hub.release("alice", 7)
    assert older.terminal.connected


@pytest_twisted.ensureDeferred
async def test_rooms_across_nodes(cluster: Any) -> None:
    a, b = await cluster("a", "b")
    alice = await a.login("alice")
    bob = await b.login("bob")
    assert alice.id == bob.id == 1  # the same id on two nodes: rooms must key by node too
    assert await a.hub.join_room("lobby", alice.id, "alice", alice.tty, 5, 50) == CREATED
    await until(lambda: b.hub.room_names() == ["lobby"], what="b hears of the room")
    assert a.hub.room_names() == ["lobby"]
    assert await b.hub.join_room("lobby", bob.id, "bob", bob.tty, 5, 50) == JOINED
    members = [
        Member(alice.id, "alice", alice.tty, "a"),
        Member(bob.id, "bob", bob.tty, "b"),
    ]
    assert await a.hub.room_members("lobby") == members
    assert await b.hub.room_members("lobby") == members
    assert await b.hub.rooms_of(bob.id) == ["lobby"]
    assert await a.hub.rooms_of(alice.id) == ["lobby"]

    # from a, skipping alice's session 1: bob's session 1 on b still gets it
    assert await a.hub.send_room("lobby", Message.of("hi lobby"), "alice", alice.id) == (1, 0)
    await until(lambda: b"hi lobby" in b.got(bob))
    assert b"hi lobby" not in a.got(alice)
    assert await b.hub.send_room("lobby", Message.of("hi alice"), "bob", bob.id) == (1, 0)
    await until(lambda: b"hi alice" in a.got(alice))

    carol = await a.login("carol")
    assert await a.hub.join_room("lobby", carol.id, "carol", carol.tty, 5, 50) == JOINED
    b.hub.set_ignores("bob", frozenset({"carol"}))
    await until(lambda: "carol" in a.hub.ignores("bob"))
    assert await a.hub.send_room("lobby", Message.of("from carol"), "carol", carol.id) == (1, 0)
    await until(lambda: b"from carol" in a.got(alice))
    await settle()
    assert b"from carol" not in b.got(bob)

    assert await b.hub.set_room_topic("lobby", "tea")
    assert not await b.hub.set_room_topic("nowhere", "x")
    info = await a.hub.room("lobby")
    assert info is not None and (info.creator, info.topic, info.members) == ("alice", "tea", 3)
    assert await a.hub.room("nowhere") is None
    assert await b.hub.join_room("kitchen", bob.id, "bob", bob.tty, 5, 50) == CREATED
    await until(lambda: a.hub.room_names() == ["kitchen", "lobby"])
    assert [(r.name, r.creator, r.topic, r.members) for r in await a.hub.room_list()] == [
        ("kitchen", "bob", "", 1),
        ("lobby", "alice", "tea", 3),
    ]

    assert await b.hub.part_room("lobby", bob.id)
    assert not await b.hub.part_room("lobby", bob.id)
    assert [m.user for m in await a.hub.room_members("lobby")] == ["alice", "carol"]
    assert await b.hub.part_all_rooms(bob.id) == ["kitchen"]
    await until(lambda: a.hub.room_names() == ["lobby"], what="an empty room is gone")
    assert sorted(await a.hub.part_all_rooms(alice.id)) == ["lobby"]
    assert await a.hub.part_all_rooms(carol.id) == ["lobby"]
    await until(lambda: b.hub.room_names() == [], what="the last room is gone")
    assert await b.hub.room_list() == []


@pytest_twisted.ensureDeferred
async def test_room_lines_to_many_members_on_a_node_are_paced_and_in_order(
    cluster: Any,
) -> None:
    """A line said on node a to 120 members on node b: b hands it out a slice at a time (here
    16 a turn), every member gets every line, in the order said; so do a's own members."""
    a, b = await cluster("a", "b")
    a.hub.local.fanout.size = b.hub.local.fanout.size = 16
    alice = await a.login("alice")
    assert await a.hub.join_room("big", alice.id, "alice", alice.tty, 5, 500) == CREATED
    here = [await a.login(f"h{i}") for i in range(40)]
    there = [await b.login(f"m{i}") for i in range(120)]
    for node, sessions in ((a, here), (b, there)):
        for s in sessions:
            assert await node.hub.join_room("big", s.id, s.user, s.tty, 5, 500) == JOINED
    for n in range(3):
        reached, dropped = await a.hub.send_room("big", Message.of(f"line {n}"), "alice", alice.id)
        assert (reached, dropped) == (160, 0)
    await until(lambda: all(b"line 2" in b.got(s) for s in there), what="all on b")
    for node, sessions in ((a, here), (b, there)):
        for s in sessions:
            got = re.findall(rb"line (\d)", node.got(s))
            assert got == [b"0", b"1", b"2"], (s.user, got)


@pytest_twisted.ensureDeferred
async def test_a_silent_node_is_reaped(
    cluster: Any, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "BEAT", 0.2)
    monkeypatch.setattr(presence_module, "TTL", 1.0)
    a, b = await cluster("a", "b")
    alice = await a.login("alice")
    b.hub.set_ignores("bob", frozenset({"eve"}))
    bob = await b.login("bob")  # tel/1
    await b.login("carol")  # tel/2
    assert await b.hub.admit("bob", 9, 5, False) == []  # a claim, never attached
    assert await a.hub.join_room("lobby", alice.id, "alice", alice.tty, 5, 50) == CREATED
    assert await b.hub.join_room("lobby", bob.id, "bob", bob.tty, 5, 50) == JOINED
    assert await b.hub.join_room("den", bob.id, "bob", bob.tty, 5, 50) == CREATED
    await until(lambda: len(a.hub.mirror) == 2 and a.hub.room_names() == ["den", "lobby"])

    # b stops dead: no beat, no goodbye (as kill -9 would)
    for loop in (b.hub.presence._beat, b.hub.presence._updates):
        assert loop is not None
        loop.stop()
    await b.hub.link.stop()

    await until(lambda: "b" not in a.hub.mirror.nodes(), timeout=3, what="b reaped")
    assert await a.hub.sessions_of("bob") == [] and a.hub.counts() == (1, 1)
    assert redis("ZRANGE", "ss:nodes", "0", "-1") == [b"a"]
    assert redis("EXISTS", "ss:s:b", "ss:tty:b", "ss:nu:b", "ss:u:bob", "ss:u:carol") == 0
    assert [m.user for m in await a.hub.room_members("lobby")] == ["alice"]
    await until(lambda: a.hub.room_names() == ["lobby"], what="b's room is gone")
    assert await a.hub.allocate_tty("tel") == "tel/1"
    assert await a.hub.allocate_tty("tel") == "tel/2"
    assert await a.hub.admit("bob", 1, 1, False) == []


@pytest_twisted.ensureDeferred
async def test_a_node_that_goes_is_logged_and_its_rooms_are_told(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of node b: every node that sees it go logs it with the count of sessions that
    ended, and the members left in its sessions' rooms see them leave, as for a part (not
    those who ignore them; a room that went with them tells nobody). A clean stop is logged
    as such; a node starting fresh is not news."""
    monkeypatch.setattr(presence_module, "BEAT", 0.2)
    monkeypatch.setattr(presence_module, "TTL", 1.0)
    logged: list[str] = []
    observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        a, b, c = await cluster("a", "b", "c")
        assert not [line for line in logged if "left the cluster" in line]
        alice, eve = await a.login("alice"), await a.login("eve")
        bob, carol, dave = await b.login("bob"), await b.login("carol"), await b.login("dave")
        a.hub.set_ignores("eve", frozenset({"carol"}))
        for s, node in ((alice, a), (eve, a), (bob, b), (carol, b)):
            assert await node.hub.join_room("lobby", s.id, s.user, s.tty, 5, 50) in (
                CREATED,
                JOINED,
            )
        assert await b.hub.join_room("den", dave.id, "dave", dave.tty, 5, 50) == CREATED
        await until(lambda: len(a.hub.mirror) == 3 and len(c.hub.mirror) == 5, what="mirrors")

        for loop in (
            b.hub.presence._beat,
            b.hub.presence._updates,
        ):  # b stops dead, as kill -9 would
            assert loop is not None
            loop.stop()
        await b.hub.link.stop()

        await until(lambda: b"[lobby] carol has left" in a.got(alice), what="alice told")
        assert b"[lobby] bob has left" in a.got(alice)
        await until(lambda: b"[lobby] bob has left" in a.got(eve), what="eve told")
        await settle()
        assert b"carol has left" not in a.got(eve)  # eve ignores carol
        assert a.got(alice).count(b"has left") == 2  # and nothing of the den, gone with dave
        lines = [line for line in logged if "node b left the cluster" in line]
        assert len(lines) == 2, lines  # a and c both saw it go
        for line in lines:
            assert re.fullmatch(
                r"node b left the cluster \(no heartbeat for [12] s\); 3 sessions ended", line
            ), line
        await until(lambda: a.hub.nodes() == ["a", "c"], what="a's live nodes")

        await c.hub.stop()  # a clean stop, nobody on it
        await until(lambda: any("node c left" in line for line in logged), what="c logged")
        assert [line for line in logged if "node c left" in line] == [
            "node c left the cluster (stopped); 0 sessions ended"
        ]
    finally:
        globalLogPublisher.removeObserver(observer)


@pytest_twisted.ensureDeferred
async def test_a_node_restarted_at_once_ends_its_previous_life_visibly(cluster: Any) -> None:
    """Killed and started again under its name before anyone reaped it (a supervisor's quick
    restart): its old sessions still end, logged and told as if it had been reaped."""
    logged: list[str] = []
    observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        a, b = await cluster("a", "b")
        alice, bob = await a.login("alice"), await b.login("bob")
        assert await a.hub.join_room("lobby", alice.id, "alice", alice.tty, 5, 50) == CREATED
        assert await b.hub.join_room("lobby", bob.id, "bob", bob.tty, 5, 50) == JOINED
        for loop in (b.hub.presence._beat, b.hub.presence._updates):  # b dies ...
            assert loop is not None
            loop.stop()
        await b.hub.link.stop()
        await cluster("b")  # ... and is back at once, with nobody on it yet
        await until(lambda: b"[lobby] bob has left" in a.got(alice), what="alice told")
        assert [line for line in logged if "left the cluster" in line] == [
            "node b left the cluster (restarted); 1 session ended"
        ]
        assert [m.user for m in await a.hub.room_members("lobby")] == ["alice"]
    finally:
        globalLogPublisher.removeObserver(observer)


@pytest_twisted.ensureDeferred
async def test_redis_down_local_service_goes_on(cluster: Any, redis_server: RedisServer) -> None:
    a, b = await cluster("a", "b")
    alice = await a.login("alice")
    bob = await b.login("bob")
    await until(lambda: a.sees("b", bob.id) and b.sees("a", alice.id))
    [to_bob] = await a.hub.sessions_of("bob")

    redis_server.stop()
    await until(lambda: not a.hub.link.available and not b.hub.link.available, what="down")
    assert await a.hub.deliver(to_bob, Message.of("x"), "alice") is Delivery.UNAVAILABLE
    assert await a.hub.deliver(to_bob, Message.of("x")) is Delivery.UNAVAILABLE
    assert await a.hub.deliver(alice, Message.of("local"), "carol") is Delivery.DELIVERED
    assert b"local" in a.got(alice)
    assert await a.hub.broadcast(Message.of("wall")) == (1, 0)
    assert await a.hub.logout_user("bob", None) == 0  # not reached: not counted
    assert not b.sinks[bob.id].closed
    assert await a.hub.allocate_tty("tel") == "tel/a.0"
    assert await a.hub.allocate_tty("tel") == "tel/a.1"
    assert await b.hub.allocate_tty("tel") == "tel/b.0"
    # the last known records still show
    assert [s.user for s in await a.hub.sessions()] == ["alice", "bob"]
    assert await a.hub.admit("alice", 5, 1, False) is None  # the local table decides
    assert await a.hub.admit("dave", 5, 1, False) == []

    redis_server.start()
    await until(lambda: joined(a.hub) and joined(b.hub), timeout=10, what="rejoined")
    await until(lambda: a.sees("b", bob.id) and b.sees("a", alice.id), what="see again")
    assert await a.hub.deliver(to_bob, Message.of("back"), "alice") is Delivery.DELIVERED
    await until(lambda: b"back" in b.got(bob))


async def _outage_ends_a_session(
    a: Node, b: Node, redis: Any, down: Callable[[], None], up: Callable[[], None]
) -> Session:
    """carol (on a) ends while a cannot reach Redis; b comes back after a republished."""
    alice = await a.login("alice")
    carol = await a.login("carol")
    await a.hub.join_room("lobby", carol.id, "carol", carol.tty, 5, 50)
    await a.hub.join_room("lobby", alice.id, "alice", alice.tty, 5, 50)
    bob = await b.login("bob")
    await until(lambda: b.sees("a", carol.id) and a.sees("b", bob.id))

    down()
    await until(lambda: not a.hub.link.available and not b.hub.link.available, timeout=10)
    await b.hub.link.stop()  # b is the later one back
    a.hub.local.end_here(carol.id, None, a.hub.presence.detach)
    dave = await a.login("dave")  # a fallback tty name: tel/a.0
    assert dave.tty == "tel/a.0"
    assert await a.hub.part_all_rooms(carol.id) == []  # as session_ended does: no error
    up()
    await until(lambda: joined(a.hub), timeout=10, what="a rejoined")
    b.hub.link.start()
    await until(lambda: joined(b.hub), timeout=10, what="b rejoined")
    await until(lambda: b.sees("a", dave.id) and a.sees("b", bob.id), what="see again")

    for hub in (a.hub, b.hub):
        assert sorted(s.user for s in await hub.sessions()) == ["alice", "bob", "dave"]
        assert await hub.sessions_of("carol") == []
    assert redis("ZRANGE", "ss:u:carol", "0", "-1") == []
    assert sorted(redis("SMEMBERS", "ss:tty:a")) == [alice.tty.encode(), b"tel/a.0"]
    assert carol.tty.encode() not in redis("SMEMBERS", "ss:tty:a")
    assert await b.hub.admit("carol", 5, 1, False) == []
    assert [m.user for m in await b.hub.room_members("lobby")] in ([], ["alice"])
    return carol


@pytest_twisted.ensureDeferred
async def test_a_session_that_ended_during_an_outage_is_seen_leaving_its_rooms(
    cluster: Any, redis: Any, redis_server: RedisServer
) -> None:
    """Its part could not be announced while Redis was away: the node, back, tells the rooms
    (every node hears it and tells its own members: here alice, on carol's node)."""
    a, b = await cluster("a", "b")
    await _outage_ends_a_session(a, b, redis, redis_server.pause, redis_server.resume)
    [alice] = [s for s in a.hub.local_sessions() if s.user == "alice"]
    await until(lambda: b"[lobby] carol has left" in a.got(alice), what="alice told")


@pytest_twisted.ensureDeferred
async def test_redis_restart_resurrects_nothing(
    cluster: Any, redis: Any, redis_server: RedisServer
) -> None:
    """Redis restarted empty: the generations start again from 1 and must still win."""
    a, b = await cluster("a", "b")
    redis.reconnect()
    await _outage_ends_a_session(a, b, redis, redis_server.stop, redis_server.start)


@pytest_twisted.ensureDeferred
async def test_hung_redis_resurrects_nothing(
    cluster: Any, redis: Any, redis_server: RedisServer
) -> None:
    """Redis paused, its data kept: what carol held there (record, claim, tty, room) goes."""
    a, b = await cluster("a", "b")
    carol = await _outage_ends_a_session(a, b, redis, redis_server.pause, redis_server.resume)
    assert [m.user for m in await a.hub.room_members("lobby")] == ["alice"]
    assert await b.hub.allocate_tty("tel") == carol.tty  # free for the next login


@pytest_twisted.ensureDeferred
async def test_a_malformed_message_is_logged_and_ignored(cluster: Any, redis: Any) -> None:
    a, b = await cluster("a", "b")
    alice = await a.login("alice")
    await until(lambda: b.sees("a", alice.id))
    logged: list[str] = []
    observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    garbage = [
        b"\xff\xfe not json",
        b"[1, 2]",
        b'"op"',
        b"{}",
        b'{"op": ["att"]}',
        b'{"op": "att", "n": "z", "g": "x", "r": [1]}',
        b'{"op": "det", "n": "z"}',
        b'{"op": "dlv", "i": "one", "t": "x"}',
        b'{"op": "dlv", "i": 1, "t": 5}',
        b'{"op": "wall", "n": "z", "t": null}',
        b'{"op": "room", "i": 7, "t": "x", "s": "y"}',
        b'{"op": "ann", "n": "z", "k": "k", "f": [1]}',
        b'{"op": "ign", "u": "x", "v": "not json"}',
    ]
    try:
        for data in garbage:
            redis("PUBLISH", "ss:0:all", data)
            redis("PUBLISH", "ss:0:node:a", data)
        redis("PUBLISH", "ss:0:all", b'{"op": "from-the-future"}')  # ignored quietly
        await until(lambda: len(logged) >= 2 * len(garbage) - 2, what="all logged")
        await settle()
    finally:
        globalLogPublisher.removeObserver(observer)
    assert all("bad cluster message" in line for line in logged), logged
    # still working
    [to] = await b.hub.sessions_of("alice")
    assert await b.hub.deliver(to, Message.of("still here"), "bob") is Delivery.DELIVERED
    await until(lambda: b"still here" in a.got(alice))
    assert a.hub.link.available and b.hub.link.available


@pytest_twisted.ensureDeferred
async def test_a_stopped_hub_leaves_at_once(cluster: Any, redis: Any) -> None:
    a, b = await cluster("a", "b")
    bob = await b.login("bob")
    await until(lambda: a.sees("b", bob.id))
    await b.hub.stop()
    await until(lambda: "b" not in a.hub.mirror.nodes(), what="b gone without waiting for TTL")
    assert redis("EXISTS", "ss:s:b", "ss:u:bob", "ss:tty:b") == 0
    assert await a.hub.allocate_tty("tel") == bob.tty


@pytest_twisted.ensureDeferred
async def test_idle_and_command_are_published_at_a_bounded_rate(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "UPDATES", 0.1)
    a, b = await cluster("a", "b")
    alice = await a.login("alice")
    await until(lambda: b.sees("a", alice.id))
    alice.doing = "make"  # no changed(): the periodic pass finds it
    await until(lambda: b.hub.mirror.get("a", alice.id).doing == "make", what="doing")
    alice.last_active = 1000.0  # idle is published in 10 s steps
    await until(lambda: b.hub.mirror.get("a", alice.id).last_active == 1000.0)
    alice.last_active = 1009.0  # within the same step: not worth an event
    await settle(0.3)
    assert b.hub.mirror.get("a", alice.id).last_active == 1000.0


@pytest_twisted.ensureDeferred
async def test_announcements_and_a_late_node_learns_the_shared_state(cluster: Any) -> None:
    a, b = await cluster("a", "b")
    heard: dict[str, list[tuple[str, dict[str, Any]]]] = {"a": [], "b": []}
    for n in (a, b):
        n.hub.subscribe_announcements(
            lambda kind, fields, n=n: heard[n.name].append((kind, fields))
        )
    a.hub.announce("shutdown", {"at": 5})
    await until(lambda: heard["b"] != [], what="b hears")
    assert heard["b"] == [("shutdown", {"at": 5, "origin": "a"})]
    assert heard["a"] == []  # not our own

    alice = await a.login("alice")
    a.hub.set_ignores("alice", frozenset({"eve"}))
    await a.hub.join_room("lobby", alice.id, "alice", alice.tty, 5, 50)
    await until(lambda: b.hub.room_names() == ["lobby"])
    [c] = await cluster("c")  # joins after all that: loads it
    assert c.hub.ignores("alice") == frozenset({"eve"})
    assert c.hub.room_names() == ["lobby"]
    assert c.sees("a", alice.id)
    assert c.hub.counts() == (1, 1)


@pytest_twisted.ensureDeferred
async def test_an_event_out_of_order_reloads_the_node(cluster: Any, redis: Any) -> None:
    a, b = await cluster("a", "b")
    bob = await b.login("bob")
    await until(lambda: a.sees("b", bob.id))
    forged = SessionRecord("b", 77, "mallory", "user", "tel/9", "p", "", 0.0, 0.0, True, "")
    event = {"op": "att", "n": "b", "g": 10_000, "r": json.loads(forged.to_json())}
    redis("PUBLISH", "ss:0:all", json.dumps(event))
    await until(lambda: not a.hub.mirror.stale, what="reloaded")
    await settle()
    assert not a.sees("b", 77)  # a gap is never applied: the node's records are loaded
    assert a.sees("b", bob.id) and len(a.hub.mirror) == 1
    carol = await b.login("carol")  # and the events that follow apply again
    await until(lambda: a.sees("b", carol.id))


@pytest_twisted.ensureDeferred
async def test_a_lost_event_is_noticed_by_the_heartbeat(
    cluster: Any, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "BEAT", 0.2)
    a, b = await cluster("a", "b")
    bob = await b.login("bob")
    await until(lambda: a.sees("b", bob.id))
    # what ATTACH does, without its event: as if a had missed it
    lost = SessionRecord("b", 5, "dora", "user", "tel/5", "p", "", 0.0, 0.0, True, "")
    redis("HSET", "ss:s:b", "5", lost.to_json())
    redis("HINCRBY", "ss:gen", "b", "1")
    await until(lambda: a.sees("b", 5), timeout=3, what="a reloads b")
    assert [s.user for s in await a.hub.sessions_of("dora")] == ["dora"]


@pytest_twisted.ensureDeferred
async def test_a_node_reaped_while_paused_puts_itself_back(
    cluster: Any, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "BEAT", 0.2)
    monkeypatch.setattr(presence_module, "TTL", 1.0)
    a, b = await cluster("a", "b")
    bob = await b.login("bob")
    await until(lambda: a.sees("b", bob.id))
    beat = b.hub.presence._beat
    assert beat is not None
    beat.stop()  # a long pause (SIGSTOP, swapping): b's link stays up, its beat does not
    await until(lambda: not a.sees("b", bob.id), what="b reaped")
    assert redis("EXISTS", "ss:s:b", "ss:tty:b") == 0
    beat.start(0.2)
    await until(lambda: a.sees("b", bob.id), what="b back")
    assert redis("SMEMBERS", "ss:tty:b") == [bob.tty.encode()]
    assert redis("ZRANGE", "ss:u:bob", "0", "-1") == [b"b/1"]


@pytest_twisted.ensureDeferred
async def test_tty_names_after_redis_lost_its_data(
    cluster: Any, redis_server: RedisServer
) -> None:
    """Nothing in Redis says which names the later node holds until it has republished: the
    node back first sees the epoch changed and gives its own names (tel/NODE.N) meanwhile."""
    a, b = await cluster("a", "b")
    await a.login("alice")  # tel/0
    bob = await b.login("bob")  # tel/1
    redis_server.stop()
    await until(lambda: not a.hub.link.available and not b.hub.link.available, timeout=10)
    await b.hub.link.stop()
    redis_server.start()
    await until(lambda: joined(a.hub), timeout=10)
    new = await a.hub.allocate_tty("tel")
    b.hub.link.start()
    await until(lambda: joined(b.hub), timeout=10)
    assert new != bob.tty


@pytest_twisted.ensureDeferred
async def test_logins_wait_until_the_node_has_joined(redis_server: RedisServer) -> None:
    """A login that reaches a node before its first sync waits for it (so --max-sessions and
    tty names are the cluster's), and is served as soon as the node has joined."""
    hub = cluster_hub(RedisURL("127.0.0.1", redis_server.port, 0), "early", reactor)
    waited = hub.ready()
    assert not waited.called
    hub.start()
    try:
        await until(lambda: waited.called, what="ready after joining")
        assert joined(hub)
        assert hub.ready().called
    finally:
        await hub.stop()


@pytest_twisted.ensureDeferred
async def test_logins_are_served_locally_when_redis_is_down_at_start(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    monkeypatch.setattr(presence_module, "READY_WAIT", 0.3)
    redis_server.stop()
    hub = cluster_hub(RedisURL("127.0.0.1", redis_server.port, 0), "lonely", reactor)
    hub.start()
    try:
        waited = hub.ready()
        await settle(0.1)
        assert not waited.called
        await until(lambda: waited.called, what="gave up waiting")
        assert (await hub.allocate_tty("tel")).startswith("tel/lonely.")
    finally:
        await hub.stop()
        redis_server.start()


@pytest_twisted.ensureDeferred
async def test_the_cluster_nodes_gauge(cluster: Any, redis_server: RedisServer) -> None:
    """``shellserver_cluster_nodes``: the live nodes at the last heartbeat; 0 while Redis is
    unreachable."""
    from prometheus_client import generate_latest

    from shellserver.ops.metrics import Metrics

    a, _ = await cluster("a", "b")
    metrics = Metrics()
    metrics.watch_cluster(lambda: a.hub.live_nodes)
    await until(lambda: a.hub.live_nodes == 2, what="two nodes seen")
    assert b"shellserver_cluster_nodes 2.0" in generate_latest(metrics.registry)
    redis_server.stop()
    await until(lambda: not a.hub.link.available, timeout=10, what="Redis gone")
    assert b"shellserver_cluster_nodes 0.0" in generate_latest(metrics.registry)
    redis_server.start()
    await until(lambda: a.hub.live_nodes == 2, timeout=15, what="back")
