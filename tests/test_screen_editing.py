"""The line editor as a person sees it: the real server, a character-mode client, a pyte screen."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from charclient import CharClient, login
from realserver import RealServer, have_telnet

pytestmark = pytest.mark.integration

PROMPT = "bob@testhost:~$ "
PW = "correct horse"


def register(port: int, name: str) -> None:
    c = CharClient(port)
    c.wait_for("login: ")
    c.type("new\r")
    c.wait_for("Username: ")
    c.type(name + "\r")
    c.wait_for("Password: ")
    c.type(PW + "\r")
    c.wait_for("Password again: ")
    c.type(PW + "\r")
    c.wait_for(f"{name}@testhost:~$")
    c.type("exit\r")
    c.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    s = RealServer(tmp_path_factory.mktemp("editor")).start()
    try:
        for name in ("bob", "alice", "bobby"):
            register(s.port, name)
        yield s
    finally:
        s.stop()


@pytest.fixture
def bob(srv: RealServer) -> Iterator[CharClient]:
    c = login(srv.port, "bob", PW)
    yield c
    c.close()


def typed(c: CharClient, keys: str) -> str:
    c.type(keys)
    c.settle(0.08)
    return c.line_at_cursor()


def test_insert_in_the_middle_of_a_line(bob: CharClient) -> None:
    assert typed(bob, "echo hllo\x1b[D\x1b[D\x1b[De") == (PROMPT + "echo hello").rstrip()
    assert bob.cursor()[1] == len(PROMPT) + len("echo he")
    bob.type("\r")
    bob.wait_for("hello\n" + PROMPT)


def test_wide_characters_and_backspace_over_them(bob: CharClient) -> None:
    assert typed(bob, "echo 日本語☃") == (PROMPT + "echo 日本語☃").rstrip()
    assert bob.cursor()[1] == len(PROMPT) + 5 + 6 + 1
    assert typed(bob, "\x7f\x7f") == (PROMPT + "echo 日本").rstrip()
    assert bob.cursor()[1] == len(PROMPT) + 5 + 4
    assert typed(bob, "\x02\x7fx") == (PROMPT + "echo x本").rstrip()  # ^B, backspace, insert
    bob.type("\r")
    bob.wait_for("x本\n" + PROMPT)


def test_kill_and_yank(bob: CharClient) -> None:
    assert typed(bob, "echo one two three\x17") == (PROMPT + "echo one two").rstrip()
    assert typed(bob, "\x19") == (PROMPT + "echo one two three").rstrip()  # ^Y yanks the word back
    assert typed(bob, "\x01\x06\x06\x06\x06\x0b") == (PROMPT + "echo").rstrip()  # ^A, 4x ^F, ^K
    assert typed(bob, "\x15") == PROMPT.rstrip()  # ^U
    assert typed(bob, "\x19") == (PROMPT + "echo").rstrip()
    assert typed(bob, "\x05\x19") == (PROMPT + "echoecho").rstrip()


def test_history_up_down_and_reverse_search(bob: CharClient) -> None:
    for word in ("first", "second"):
        bob.type(f"echo {word}\r")
        bob.wait_for(f"{word}\n{PROMPT}")
    assert typed(bob, "\x1b[A") == (PROMPT + "echo second").rstrip()
    assert typed(bob, "\x1b[A") == (PROMPT + "echo first").rstrip()
    assert typed(bob, "\x1b[B") == (PROMPT + "echo second").rstrip()
    assert typed(bob, "\x1b[B") == PROMPT.rstrip()
    assert typed(bob, "\x12fir") == "(reverse-i-search)`fir': echo first"
    bob.type("\r")
    bob.wait(lambda: bob.lines()[bob.cursor()[0] - 1] == "first", what="first")
    assert bob.lines()[bob.cursor()[0] - 2] == (PROMPT + "echo first").rstrip()


def test_tab_completes_commands_users_and_files(srv: RealServer, bob: CharClient) -> None:
    others = [login(srv.port, name, PW) for name in ("alice", "bobby")]
    bob.type("touch alpha.txt beta1 beta2\r")
    bob.settle()
    assert typed(bob, "whoa\t") == (PROMPT + "whoami ").rstrip()
    assert bob.cursor()[1] == len(PROMPT + "whoami ")
    assert typed(bob, "\x15wh\t") == (PROMPT + "who").rstrip()  # who, whoami: the common part
    bob.type("\t")
    bob.settle(0.1)
    assert bob.lines()[bob.cursor()[0] - 1].split() == ["who", "whoami"]
    assert typed(bob, "\x15write al\t") == (PROMPT + "write alice ").rstrip()
    assert (
        typed(bob, "\x15finger bob\t") == (PROMPT + "finger bob").rstrip()
    )  # bob and bobby: ambiguous
    assert typed(bob, "\x15cat al\t") == (PROMPT + "cat alpha.txt ").rstrip()
    assert typed(bob, "\x15cat b\t") == (PROMPT + "cat beta").rstrip()  # the common prefix
    bob.type("\t")  # the second Tab lists them under the line, then redraws it
    bob.settle()
    lines = bob.lines()
    row = bob.cursor()[0]
    assert lines[row] == (PROMPT + "cat beta").rstrip()
    assert lines[row - 1].split() == ["beta1", "beta2"]
    assert lines[row - 2] == (PROMPT + "cat beta").rstrip()
    for c in others:
        c.close()


def test_tab_completes_room_names(srv: RealServer, bob: CharClient) -> None:
    other = login(srv.port, "alice", PW)
    other.type("join #lounge\r")
    other.wait_for("[#lounge] alice has joined")
    assert typed(bob, "join #lo\t") == (PROMPT + "join #lounge ").rstrip()
    assert typed(bob, "\x15who #l\t") == (PROMPT + "who #lounge ").rstrip()
    assert typed(bob, "\x15who al\t") == (PROMPT + "who al").rstrip()  # who USER is no room
    other.close()


def test_ctrl_c_ctrl_l_and_ctrl_d(bob: CharClient) -> None:
    assert typed(bob, "echo abandoned\x03") == PROMPT.rstrip()
    assert bob.lines()[bob.cursor()[0] - 1] == (PROMPT + "echo abandoned^C").rstrip()
    assert typed(bob, "echo kept\x0c") == (PROMPT + "echo kept").rstrip()
    assert bob.cursor()[0] == 0  # the screen was cleared, the line drawn again at the top
    assert bob.lines()[1:] == [""] * 23
    bob.type("\x15\x04")
    bob.wait(lambda: not bob.pump(0.2) and bob.closed, 10, "the connection to close")
    assert "logout" in bob.text()


def test_a_message_while_a_wrapped_half_line_is_typed(srv: RealServer, bob: CharClient) -> None:
    half = "echo " + "x" * 90 + " y"
    bob.type(half)
    bob.type("\x02\x02")  # the cursor two characters back
    bob.settle()
    alice = login(srv.port, "alice", PW)
    alice.type("write bob hello from alice\r")
    bob.wait_for("hello from alice")
    bob.settle()
    lines = bob.lines()
    row, col = bob.cursor()
    assert lines[row - 1] == PROMPT + half[: 80 - len(PROMPT)]
    assert lines[row] == half[80 - len(PROMPT) :]
    assert col == len(half) - (80 - len(PROMPT)) - 2
    assert lines[row - 2] == "EOF"
    assert lines[row - 3] == "hello from alice"
    assert lines[row - 4].startswith("Message from alice@testhost on tel/")
    bob.type("\r")
    bob.wait_for("x" * 10 + " y\n" + PROMPT)
    assert bob.lines()[bob.cursor()[0] - 2] == "x" * 80
    alice.close()


def test_a_resize_rewraps_the_line(bob: CharClient) -> None:
    bob.resize(40, 24)
    bob.settle()
    long = "echo " + "z" * 40
    bob.type(long)
    bob.settle()
    row, col = bob.cursor()
    assert bob.lines()[row - 1] == (PROMPT + long)[:40]
    assert bob.lines()[row] == (PROMPT + long)[40:]
    assert col == len(PROMPT + long) - 40
    bob.type("\r")
    bob.wait_for("z" * 40)


def test_a_paste_of_three_lines_runs_them_in_order(bob: CharClient) -> None:
    bob.type("echo one\recho two\recho three\r")
    bob.wait_for(f"three\n{PROMPT}")
    text = bob.text()
    assert text.index("\none\n") < text.index("\ntwo\n") < text.index("\nthree\n")
    assert f"{PROMPT}echo two\n" in text and f"{PROMPT}echo three\n" in text


def test_password_is_not_echoed_backspace_works_and_not_in_history(srv: RealServer) -> None:
    c = CharClient(srv.port)
    c.wait_for("login: ")
    c.type("bob\r")
    c.wait_for("Password: ")
    c.type(PW + "x\x7f\r")  # a typo corrected with backspace
    c.wait_for(PROMPT)
    assert PW not in c.text() and "*" not in c.text()
    assert typed(c, "\x1b[A") == PROMPT.rstrip()  # nothing in the history
    c.close()


@pytest.mark.skipif(not have_telnet(), reason="the telnet client is not installed")
def test_stock_telnet_sends_utf8_intact(srv: RealServer) -> None:
    pexpect = pytest.importorskip("pexpect")
    alice = login(srv.port, "alice", PW)
    env = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "xterm", "PATH": "/usr/bin:/bin"}
    child = pexpect.spawn(
        shutil.which("telnet") or "telnet",
        ["127.0.0.1", str(srv.port)],
        encoding="utf-8",
        timeout=10,
        env=env,
        dimensions=(24, 80),
    )
    try:
        child.expect("login: ")
        child.send("bob\r")
        child.expect("Password: ")
        child.send(PW + "\r")
        child.expect_exact(PROMPT)
        child.send("write alice ☃ café 日本\r")
        child.expect_exact(PROMPT)
        alice.wait_for("EOF")
        row = alice.text().splitlines()
        assert row[row.index("EOF") - 1] == "☃ café 日本"
        child.send("exit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
        alice.close()
