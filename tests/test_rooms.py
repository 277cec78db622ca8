"""Rooms: the table, and the commands through the whole stack without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import make_server_with, online

from shellserver.app.assembly import Assembly
from shellserver.hub import rooms
from shellserver.hub.local import Hub, Message
from shellserver.hub.rooms import Member, RoomInfo, RoomTable


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    return make_server_with(tmp_path, ("alice", "bob", "carol"))


# -- the table -----------------------------------------------------------------------------


def test_table_join_part_limits_and_vanishing() -> None:
    t = RoomTable()
    a, b = Member(1, "alice", "tel/0"), Member(2, "bob", "tel/1")
    assert t.join("#x", a, 2, 2) == rooms.CREATED
    assert t.join("#x", a, 2, 2) == rooms.ALREADY
    assert t.join("#x", b, 2, 2) == rooms.JOINED
    assert t.join("#x", Member(3, "carol", "tel/2"), 2, 2) == rooms.ROOM_FULL
    assert t.join("#y", a, 2, 2) == rooms.CREATED
    assert t.join("#z", a, 2, 2) == rooms.TOO_MANY
    assert t.rooms_of(1) == ["#x", "#y"]
    assert t.members("#x") == [a, b]
    assert t.set_topic("#x", "hello")
    assert t.info("#x") == RoomInfo("#x", "alice", "hello", 2)
    assert t.names() == ["#x", "#y"]
    assert t.part("#x", 1) and not t.part("#x", 1)
    assert t.info("#x") == RoomInfo("#x", "alice", "hello", 1)
    assert t.part_all(2) == ["#x"]
    assert t.info("#x") is None  # gone, and its topic with it
    assert t.join("#x", b, 2, 2) == rooms.CREATED
    assert t.info("#x") == RoomInfo("#x", "bob", "", 1)
    assert t.part_all(1) == ["#y"] and t.part_all(1) == []
    assert not t.set_topic("#nope", "x")


def test_room_names() -> None:
    for good in ("#a", "#lobby", "#a-b_c9", "#" + "x" * 32):
        assert rooms.valid_room(good), good
    for bad in ("a", "#", "#A", "#" + "x" * 33, "#a b", "#é", "##", "#a\n", "#a\x1b"):
        assert not rooms.valid_room(bad), bad


def test_hub_room_methods_speak_plain_data() -> None:
    hub = Hub()
    assert hub.room_names() == []
    hub.join_room("#x", 7, "alice", "tel/0", 10, 10)
    got: list[object] = []
    hub.room_members("#x").addCallback(got.append)
    hub.room_list().addCallback(got.append)
    hub.rooms_of(7).addCallback(got.append)
    assert got == [[Member(7, "alice", "tel/0")], [RoomInfo("#x", "alice", "", 1)], ["#x"]]
    assert hub.room_names() == ["#x"]


# -- the commands --------------------------------------------------------------------------


def test_join_say_part_are_shown_to_members(server: Assembly) -> None:
    a, b, c = online(server, "alice"), online(server, "bob"), online(server, "carol")
    assert a.run("join #lobby") == "[#lobby] alice has joined\nalice@testhost:~$ "
    assert b.run("join #lobby") == "[#lobby] bob has joined\nbob@testhost:~$ "
    assert "[#lobby] bob has joined\n" in a.output()
    assert a.run("say #lobby hello \x1b[2J there") == (
        "[#lobby] alice: hello ^[[2J there\nalice@testhost:~$ "
    )
    assert "[#lobby] alice: hello ^[[2J there\n" in b.output()
    assert c.output() == ""  # not a member
    assert b.run("part #lobby") == "[#lobby] bob has left\nbob@testhost:~$ "
    assert "[#lobby] bob has left\n" in a.output()
    a.run("say #lobby anyone?")
    assert b.output() == ""


def test_room_errors(server: Assembly) -> None:
    a = online(server, "alice")
    hint = "(a room name is # and 1-32 of a-z, 0-9, _ and -)"
    assert a.run("join lobby").startswith(f"join: bad room name: lobby {hint}\n")
    assert a.run("join #Lobby").startswith("join: bad room name: #Lobby")
    assert a.run("join #a\x1b").startswith("join: bad room name: #a^[ ")
    assert a.run("join").startswith("Usage: join #ROOM\n")
    assert a.run("say #lobby hi").startswith("say: you are not in #lobby\n")
    assert a.run("say #lobby").startswith("Usage: say #ROOM TEXT...\n")
    assert a.run("part #lobby").startswith("part: you are not in #lobby\n")
    assert a.run("part").startswith("part: you are not in any room\n")
    assert a.run("topic #lobby").startswith("topic: no such room: #lobby\n")
    assert a.run("who #lobby").startswith("who: no such room: #lobby\n")
    assert a.run("who #BAD").startswith("who: bad room name: #BAD")
    a.run("join #lobby")
    assert a.run("join #lobby").startswith("join: you are already in #lobby\n")
    assert a.run("say #lobby " + "x" * 1025).startswith(
        "say: message too long (at most 1024 bytes)\n"
    )
    for i in range(rooms.MAX_ROOMS_PER_SESSION - 1):
        a.run(f"join #r{i}")
    assert a.run("join #one-more").startswith("join: you are in too many rooms (at most 10)\n")


def test_room_full(server: Assembly, monkeypatch: pytest.MonkeyPatch) -> None:
    from shellserver.shell.commands import rooms as room_commands

    monkeypatch.setattr(room_commands, "MAX_MEMBERS", 2)
    a, b, c = online(server, "alice"), online(server, "bob"), online(server, "carol")
    a.run("join #x")
    b.run("join #x")
    assert c.run("join #x").startswith("join: #x is full (at most 2 members)\n")


def test_part_without_a_name_leaves_every_room(server: Assembly) -> None:
    a, b = online(server, "alice"), online(server, "bob")
    a.run("join #one")
    a.run("join #two")
    b.run("join #two")
    b.output()
    assert a.run("part") == "[#one] alice has left\n[#two] alice has left\nalice@testhost:~$ "
    assert "[#two] alice has left" in b.output()
    assert server.hub.room_names() == ["#two"]


def test_rooms_and_who_room(server: Assembly) -> None:
    a, b = online(server, "alice"), online(server, "bob")
    online(server, "carol")
    assert a.run("rooms").startswith("No rooms.\n")
    a.run("join #lobby")
    b.run("join #lobby")
    b.run("join #b")
    a.run("topic #lobby Welcome \x1b all")
    out = a.run("rooms").splitlines()
    assert out[0].split() == ["ROOM", "MEMBERS", "TOPIC"]
    assert out[1].split() == ["#b", "1"]
    assert out[2].split() == ["#lobby", "2", "Welcome", "^[", "all"]
    lines = a.run("who #lobby").splitlines()
    assert lines[0].split() == ["USER", "TTY", "LOGIN", "IDLE", "MESG"]
    assert [line.split()[0] for line in lines[1:-1]] == ["alice", "bob"]
    assert a.run("who a b").startswith("Usage: who [#ROOM]\n")


def test_topic_by_creator_or_admin(server: Assembly) -> None:
    a, b = online(server, "alice"), online(server, "bob")
    a.run("join #lobby")
    b.run("join #lobby")
    a.output()
    assert b.run("topic #lobby mine now").startswith("topic: permission denied\n")
    assert b.run("topic #lobby").startswith("#lobby has no topic\n")
    assert a.run("topic #lobby rules \x07 apply") == (
        "[#lobby] alice set the topic: rules ^G apply\nalice@testhost:~$ "
    )
    assert "[#lobby] alice set the topic: rules ^G apply\n" in b.output()
    assert b.run("topic #lobby").startswith("[#lobby] topic: rules ^G apply\n")
    admin = online(server, "root1")
    assert admin.run("topic #lobby by admin").startswith("[#lobby] root1 set the topic: by admin")
    assert a.run("topic #lobby " + "t" * 257).startswith("topic: topic too long (at most 256")
    c = online(server, "carol")
    assert c.run("join #lobby").startswith("[#lobby] carol has joined\n[#lobby] topic: by admin\n")


def test_rooms_obey_ignore(server: Assembly) -> None:
    a, b, c = online(server, "alice"), online(server, "bob"), online(server, "carol")
    b.run("ignore alice")
    for x in (b, c, a):
        x.run("join #lobby")
    b.output()
    assert "alice has joined" in c.output()
    a.run("say #lobby can you hear me")
    assert b.output() == ""
    assert "can you hear me" in c.output()
    a.run("part #lobby")
    assert b.output() == ""


def test_a_session_that_ends_leaves_its_rooms(server: Assembly) -> None:
    a, b = online(server, "alice"), online(server, "bob")
    a.run("join #lobby")
    a.run("join #empty-soon")
    b.run("join #lobby")
    a.output()
    b.drop()
    assert "[#lobby] bob has left\n" in a.output()
    a.drop()
    assert server.hub.room_names() == []
    got: list[object] = []
    server.hub.room_list().addCallback(got.append)
    assert got == [[]]


def test_room_lines_obey_the_output_cap(server: Assembly) -> None:
    a, b, c = online(server, "alice"), online(server, "bob"), online(server, "carol")
    for x in (a, b, c):
        x.run("join #lobby")
    b.output()
    b.transport.producer.pauseProducing()  # bob stops reading: his transport buffer is full
    text = "y" * 1000
    reached = []
    for _ in range(server.config.max_output // 1000 + 10):
        server.hub.send_room("#lobby", Message.of(text), "alice").addCallback(reached.append)
        server.clock.advance(0)  # type: ignore[attr-defined]  # a turn: the fan-out's slice
    assert reached[0] == (3, 0) and reached[-1] == (2, 1)  # bob's share dropped past the cap
    assert text in c.output()
