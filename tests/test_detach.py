"""Sessions that outlive their connection: detached when the client goes, resumed at the
next login, their held messages shown or, if never resumed, saved to the mailbox."""

from __future__ import annotations

from pathlib import Path

from harness import Client, make_server_with, online
from twisted.internet.task import Clock

from shellserver.shell.detach import HeldOutput, HeldWrite, Lingering, idle_words
from shellserver.text.message import Message

LINGER = 300


def _at(now: float) -> Clock:
    clock = Clock()
    clock.advance(now)
    return clock


def server(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    return make_server_with(tmp_path, ("alice", "bob"), linger=LINGER, cmd_rate=0, **overrides)


def test_a_dropped_connection_detaches_and_the_next_login_resumes_it(tmp_path: Path) -> None:
    s = server(tmp_path)
    alice, bob = online(s, "alice"), online(s, "bob", peer="10.0.0.2")
    alice.run("mkdir notes")
    alice.run("cd notes")
    tty = [x for x in s.hub.local_sessions() if x.user == "alice"][0].tty
    alice.drop()  # the client went: no logout
    assert f"alice        {tty} (detached)" in bob.run("who")
    assert "not reading" not in bob.run("write alice are you there?")
    root = online(s, "root1", peer="10.0.0.3")
    root.run("wall back in five")
    s.clock.advance(125)
    again = Client(s, peer="10.0.0.9")
    asked = again.login("alice")
    assert f"You have a detached session on {tty} (idle 2 minutes). Resume it? [Y/n] " in asked
    again.send("")
    shown = again.output()
    assert "--- 2 messages while you were away ---\n" in shown
    assert "are you there?" in shown and "back in five" in shown
    prompt = shown.index("alice@testhost:~/notes$ ")
    assert shown.index("back in five") < shown.rindex("---\n") < prompt
    assert "Last login" not in shown  # the same session, not a new one
    assert f"alice        {tty}  " in bob.run("who") and "(detached)" not in bob.run("who")
    bob.run("write alice hello")  # the resumed session is reached as before
    assert "Message from bob@testhost on " in again.output()


def test_n_ends_the_detached_session_and_its_writes_are_saved_as_mail(tmp_path: Path) -> None:
    s = server(tmp_path)
    alice, bob = online(s, "alice"), online(s, "bob", peer="10.0.0.2")
    alice.drop()
    bob.run("write alice")
    bob.send("first line")
    bob.send("second line")
    bob.send(".")
    bob.output()
    again = Client(s, peer="10.0.0.9")
    assert "Resume it? [Y/n] " in again.login("alice")
    again.send("n")
    shown = again.output()
    assert "alice@testhost:~$ " in shown and "while you were away" not in shown
    assert "new message" in shown  # saved before the new session's greeting counted them
    assert "bob" in again.run("messages")
    read = again.run("messages read 1")
    assert "first line" in read and "second line" in read
    assert "Message from" not in read and "EOF" not in read
    assert len([x for x in s.hub.local_sessions() if x.user == "alice"]) == 1


def test_the_linger_running_out_ends_it_frees_its_tty_and_keeps_the_writes(
    tmp_path: Path,
) -> None:
    s = server(tmp_path)
    alice, bob = online(s, "alice"), online(s, "bob", peer="10.0.0.2")
    alice.drop()
    bob.run("write alice one more thing")
    s.clock.advance(LINGER - 1)
    assert "(detached)" in bob.run("who")
    s.clock.advance(1)
    assert "alice" not in bob.run("who")
    assert "alice is not logged in; message saved" in bob.run("write alice too late")
    again = Client(s, peer="10.0.0.9")
    shown = again.login("alice")
    assert "Resume" not in shown and "alice@testhost:~$ " in shown
    assert "one more thing" in again.run("messages read 1")


def test_logout_kick_and_ssh_like_closes_never_detach(tmp_path: Path) -> None:
    s = server(tmp_path)
    alice, bob = online(s, "alice"), online(s, "bob", peer="10.0.0.2")
    alice.run("logout")
    alice.drop()
    assert "alice" not in bob.run("who")
    alice = online(s, "alice")
    alice.drop()
    assert "(detached)" in bob.run("who")
    root = online(s, "root1", peer="10.0.0.3")
    root.run("kick alice")
    assert "alice" not in bob.run("who")


def test_held_output_is_bounded_and_the_sender_told(tmp_path: Path) -> None:
    s = server(tmp_path, max_output=2048)
    alice, bob = online(s, "alice"), online(s, "bob", peer="10.0.0.2")
    alice.drop()
    said = [bob.run("write alice " + "x" * 500) for _ in range(6)]
    assert any("alice is not reading; message dropped" in out for out in said)
    held = [x for x in s.hub.local_sessions() if x.user == "alice"][0].terminal
    assert isinstance(held, HeldOutput) and held.size <= 2048 and held.dropped >= 1


def test_max_sessions_one_resumes_instead_of_refusing_and_replace_ends_detached_first(
    tmp_path: Path,
) -> None:
    s = server(tmp_path, max_sessions=1)
    alice = online(s, "alice")
    alice.drop()
    again = Client(s, peer="10.0.0.9")
    assert "Resume it? [Y/n] " in again.login("alice")
    again.send("y")
    assert "alice@testhost:~$ " in again.output()
    (tmp_path / "two").mkdir()
    s2 = server(tmp_path / "two", max_sessions=2, on_max="replace")
    first = online(s2, "alice")
    second = online(s2, "alice", peer="10.0.0.5")
    first.drop()
    third = Client(s2, peer="10.0.0.6")
    assert "Resume it? [Y/n] " in third.login("alice")
    third.send("n")  # a new session: the detached one ends, the attached one stays
    assert "alice@testhost:~$ " in third.output()
    assert not second.disconnecting


def test_several_detached_sessions_are_listed_to_choose_from(tmp_path: Path) -> None:
    s = server(tmp_path)
    one, two = online(s, "alice"), online(s, "alice", peer="10.0.0.5")
    one.run("cd /home/alice")
    one.drop()
    two.drop()
    again = Client(s, peer="10.0.0.9")
    asked = again.login("alice")
    assert "You have 2 detached sessions:\n" in asked and asked.endswith("Resume which? [1] ")
    again.send("7")
    assert "Answer a number from 1 to 2" in again.output()
    again.send("2")
    assert "alice@testhost:~$ " in again.output()
    assert len([x for x in s.hub.local_sessions() if x.detached]) == 1


def test_mail_is_one_message_per_conversation_without_header_or_eof() -> None:
    held = HeldOutput(80, 24, 10_000, "alice", "tel", lambda h: None, _at(5.0))
    for text in [
        "Message from bob@h on tel/1 at 12:00 ...\n",
        "line one\n",
        "line two\n",
        "EOF\n",
        "Message from carol@h on tel/2 at 12:01 ...\nsaid once\nEOF\n",
    ]:
        sender = "carol" if "carol" in text else "bob"
        assert held.notify_write(Message(text), sender)
    assert held.notify(Message("a wall\n"))
    assert [(w.sender, w.text) for w in held.mail()] == [
        ("bob", "line one\nline two\n"),
        ("carol", "said once\n"),
    ]
    assert held.messages == 6 and held.framed().startswith("--- 6 messages while you were away")
    assert isinstance(held.mail()[0], HeldWrite)


def test_idle_words() -> None:
    assert [idle_words(x) for x in (0, 1, 59, 60, 125, 3600, 7300, 90000)] == [
        "0 seconds", "1 second", "59 seconds", "1 minute", "2 minutes", "1 hour", "2 hours",
        "1 day",
    ]  # fmt: skip


def test_the_resume_question_waits_a_minute_at_most_and_ctrl_c_says_no(tmp_path: Path) -> None:
    s = server(tmp_path)
    online(s, "alice").drop()
    waiting = Client(s, peer="10.0.0.9")
    assert "Resume it? [Y/n] " in waiting.login("alice")
    s.clock.advance(60)
    assert "No answer in 60 seconds." in waiting.output() and waiting.disconnecting
    again = Client(s, peer="10.0.0.8")
    assert "Resume it? [Y/n] " in again.login("alice")
    again.send_bytes(b"\x03")  # ^C: a new session, the detached one ends
    assert "alice@testhost:~$ " in again.output()
    assert not [x for x in s.hub.local_sessions() if x.detached]


def test_own_output_held_alone_is_framed_as_output() -> None:
    held = HeldOutput(80, 24, 1000, "alice", "tel", lambda h: None, Clock())
    held.write("done copying\n")
    assert held.framed() == "--- output while you were away ---\ndone copying\n---\n"


def test_one_heap_ends_the_lingering_sessions_in_their_order() -> None:
    clock = Clock()
    ended: list[str] = []
    lingering = Lingering(clock)
    ports = {
        name: HeldOutput(80, 24, 100, name, "tel", lambda h: ended.append(h.user), clock)
        for name in ("a", "b", "c")
    }
    for name, until in (("a", 30.0), ("b", 10.0), ("c", 20.0)):
        ports[name].until = until
        lingering.add(ports[name])
    ports["c"].let_go()  # resumed meanwhile: skipped when its time comes
    clock.advance(10)
    assert ended == ["b"]
    clock.advance(20)
    assert ended == ["b", "a"] and len(lingering) == 0
    assert clock.getDelayedCalls() == []  # one timer at most, none once the heap is empty


def test_a_wall_held_by_many_is_measured_once() -> None:
    """Each held port counts the message's UTF-8 size, worked out once for all of them."""
    wall = Message("é" * 100 + "\n")
    ports = [HeldOutput(80, 24, 1000, "a", "tel", lambda h: None, Clock()) for _ in range(3)]
    for port in ports:
        assert port.notify(wall)
    assert [port.size for port in ports] == [201, 201, 201] and wall.size() == 201
    assert not ports[0].notify(Message("x" * 800))  # 201 + 801 > 1000: dropped, counted
    assert ports[0].dropped == 1 and ports[0].size == 201
