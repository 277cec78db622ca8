"""Resume tokens: a browser page that lost its socket comes back to its session by itself,
with a random single-use token bound to that session; every other token is refused,
logged and counted as a failed login of its address."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Client, make_server_with, online
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from shellserver.app.assembly import Assembly
from shellserver.hub.session import Session
from shellserver.shell.detach import HeldOutput
from shellserver.shell.resume import ResumeTokens
from shellserver.wires.web.socket import WebWire, control

LINGER = 300


class FakeSocket:
    """What Twisted's WebSocket layer offers a protocol, over a StringTransport."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.transport.registerProducer(object(), True)
        self.closed: list[int] = []

    def loseConnection(self, code: int = 1000) -> None:
        self.closed.append(code)


def parse(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The server's unmasked frames: (opcode, payload)."""
    i = 0
    while i < len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            (n,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        yield opcode, data[i : i + n]
        i += n


class Page:
    """A browser page as the server meets it: a ``WebWire`` opened at ``/ws?resume``."""

    def __init__(self, server: Assembly, peer: str = "10.0.0.1", resume: bool = True) -> None:
        self.clock: Clock = server.clock  # type: ignore[assignment]
        self.sock = FakeSocket()
        self.wire = WebWire(
            server.new_connection, self.clock, peer, server.config.max_output, None, resume
        )
        self.wire.negotiationStarted(self.sock)
        self.wire.negotiationFinished()
        self.tokens: list[str] = []

    def output(self) -> str:
        self.clock.advance(0)
        data = self.sock.transport.value()
        self.sock.transport.clear()
        text = ""
        for opcode, payload in parse(data):
            if opcode == 1:
                text += payload.decode("utf-8")
            elif opcode == 2:
                body = payload.decode("utf-8")
                assert body[0] == "2", body
                self.tokens.append(body[1:])
        return text.replace("\r\n", "\n")

    def present(self, token: str) -> str:
        self.wire.textMessageReceived("2" + token)
        return self.output()

    def keys(self, text: str) -> None:
        self.wire.textMessageReceived("0" + text)

    def line(self, text: str) -> str:
        self.keys(text + "\r")
        return self.output()

    def login(self, name: str = "alice", password: str = "password1") -> str:
        self.line(name)
        return self.line(password)

    def drop(self) -> None:
        self.wire.connectionLost(Failure(ConnectionLost()))


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(seen.append)


def server(tmp_path: Path, **overrides: object) -> Assembly:
    return make_server_with(tmp_path, ("alice", "bob"), linger=LINGER, cmd_rate=0, **overrides)


def session(sid: int, detached_at: float | None = None) -> Session:
    held = HeldOutput(80, 24, 1000, "alice", "tel", lambda h: None, Clock())
    return Session(
        id=sid, user="alice", role="user", tty=f"web/{sid}", peer="10.0.0.1",
        login_time=0.0, terminal=held, last_active=0.0, detached_at=detached_at,
    )  # fmt: skip


# -- the table -------------------------------------------------------------------


def test_a_token_is_random_single_use_rotated_and_bound_to_its_session() -> None:
    tokens = ResumeTokens(LINGER)
    one, two = session(1), session(2)
    first = tokens.issue(one)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", first)  # 128 bits, URL-safe base64
    assert tokens.issue(two) != first
    assert tokens.take(first, 0.0) is one
    assert tokens.take(first, 0.0) is None  # used: worthless
    again = tokens.issue(one)
    rotated = tokens.issue(one)  # a new one (after a resume): the previous is worthless
    assert tokens.take(again, 0.0) is None
    assert len(tokens) == 2  # one per session at most, however often it is renewed
    assert tokens.take(rotated, 0.0) is one
    assert tokens.take("x" * 22, 0.0) is None and tokens.take("", 0.0) is None
    assert tokens.take(rotated + "x" * 100, 0.0) is None  # not even hashed
    last = tokens.issue(two)
    tokens.forget(two)  # its session ended
    assert tokens.take(last, 0.0) is None and len(tokens) == 0


def test_a_detached_sessions_token_is_worthless_after_the_linger() -> None:
    clock = Clock()
    clock.advance(1000)
    tokens = ResumeTokens(LINGER)
    s = session(1, detached_at=clock.seconds())
    token = tokens.issue(s)
    clock.advance(LINGER - 1)
    assert tokens.take(token, clock.seconds()) is s
    token = tokens.issue(s)
    clock.advance(1)
    assert tokens.take(token, clock.seconds()) is None
    attached = session(2)  # shown by a connection: no linger runs yet
    token = tokens.issue(attached)
    clock.advance(10 * LINGER)
    assert tokens.take(token, clock.seconds()) is attached


# -- the whole server, a page on a WebWire ------------------------------------------


def test_a_page_resumes_its_detached_session_with_its_token_without_being_asked(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    s = server(tmp_path)
    page = Page(s)
    assert page.output() == ""  # the login waits for the page's token
    assert "login: " in page.present("")
    assert "alice@testhost:~$ " in page.login()
    (token,) = page.tokens
    page.line("cd /home/alice")
    page.keys("echo half")
    page.output()
    page.drop()
    bob = online(s, "bob", peer="10.0.0.2")
    assert "(detached)" in bob.run("who")
    bob.run("write alice back soon?")
    s.clock.advance(60)
    again = Page(s, peer="10.0.0.9")  # another address: a new network
    shown = again.present(token)
    assert "login:" not in shown and "Password" not in shown and "Resume" not in shown
    assert "--- 1 message while you were away ---\n" in shown and "back soon?" in shown
    assert shown.rstrip().endswith("alice@testhost:~$ echo half")
    assert "Last login" not in shown  # the same session, not a new one
    (new,) = again.tokens  # a new token for the next drop
    assert new != token
    assert "(detached)" not in bob.run("who")
    resumed = [e for e in events if e.get("event") == "resume"]
    assert resumed[-1]["via"] == "token" and resumed[-1]["peer"] == "10.0.0.9"
    # The old token, replayed: refused, logged without the token, counted against the address.
    thief = Page(s, peer="10.0.0.66")
    refused = thief.present(token)
    assert refused.endswith("login: ") and "alice@testhost" not in refused
    (logged,) = [e for e in events if e.get("event") == "resume_refused"]
    assert logged["peer"] == "10.0.0.66" and logged["count"] == 1
    assert token not in repr(logged) and new not in repr(logged)
    assert s.failed_logins._failures.count("10.0.0.66", s.clock.seconds()) == 1
    assert thief.tokens == []
    # The live token still works once: no theft ended the owner's session.
    again.drop()
    third = Page(s, peer="10.0.0.9")
    assert "alice@testhost:~$ echo half" in third.present(new)


def test_refusals_are_logged_once_a_minute_and_guessing_blocks_the_address(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    s = server(tmp_path)
    for i in range(9):
        page = Page(s, peer="10.0.0.66")
        assert page.present(f"guess{i:017d}").endswith("login: ")
        page.drop()
    assert len([e for e in events if e.get("event") == "resume_refused"]) == 1
    tenth = Page(s, peer="10.0.0.66")  # the tenth failure blocks the address, as passwords do
    assert "Too many failed logins" in tenth.present("guess")
    assert tenth.sock.closed == [1000]
    blocked = Page(s, peer="10.0.0.66")
    assert "Too many failed logins" in blocked.present("")
    s.clock.advance(61)
    Page(s, peer="10.0.0.67").present("another")
    (_, second) = [e for e in events if e.get("event") == "resume_refused"]
    assert second["count"] == 10 and second["peer"] == "10.0.0.67"


def test_a_token_is_worthless_once_its_session_ended_or_the_linger_ran_out(
    tmp_path: Path,
) -> None:
    s = server(tmp_path)
    page = Page(s)
    page.present("")
    page.login()
    (token,) = page.tokens
    page.line("logout")
    assert page.sock.closed == [1000]  # on purpose: the page does not come back
    assert Page(s, peer="10.0.0.9").present(token).endswith("login: ")  # closing: no takeover
    page.drop()
    assert len(s.start.tokens) == 0
    page = Page(s)
    page.present("")
    page.login()
    (token,) = page.tokens
    page.drop()
    s.clock.advance(LINGER)
    assert Page(s).present(token).endswith("login: ")
    assert len(s.start.tokens) == 0


def test_a_token_takes_its_session_from_a_connection_the_server_still_thinks_alive(
    tmp_path: Path,
) -> None:
    s = server(tmp_path)
    old = Page(s)
    old.present("")
    old.login()
    old.keys("echo typed")
    old.output()
    (token,) = old.tokens
    new = Page(s, peer="10.0.0.9")  # the browser saw its socket die; the server did not
    shown = new.present(token)
    assert shown.rstrip().endswith("alice@testhost:~$ echo typed")
    assert "This session was resumed from another connection." in old.output()
    assert old.sock.closed == [1000]
    old.drop()
    bob = online(s, "bob", peer="10.0.0.2")
    listing = bob.run("who")
    assert listing.count("alice ") == 1 and "(detached)" not in listing
    bob.run("write alice still there")
    assert "still there" in new.output()


def test_the_question_still_resumes_and_gives_a_page_a_new_token(tmp_path: Path) -> None:
    s = server(tmp_path)
    page = Page(s)
    page.present("")
    page.login()
    (token,) = page.tokens
    page.drop()
    other = Page(s, peer="10.0.0.9")  # a page without a token logs in and is asked
    other.present("")
    assert "Resume it? [Y/n] " in other.login()
    assert "alice@testhost:~$ " in other.line("y")
    (renewed,) = other.tokens
    assert renewed != token and Page(s, peer="10.0.0.8").present(token).endswith("login: ")


def test_no_token_for_clients_that_do_not_ask_nor_without_linger(tmp_path: Path) -> None:
    s = server(tmp_path)
    plain = Page(s, resume=False)  # /ws without ?resume: the old protocol, nothing waits
    assert plain.output().endswith("login: ")
    assert "alice@testhost" in plain.login()
    telnet = Client(s)
    telnet.login("bob")
    assert plain.tokens == [] and len(s.start.tokens) == 0
    (tmp_path / "off").mkdir()
    off = make_server_with(tmp_path / "off", ("alice",), linger=0)
    page = Page(off)
    page.present("")
    assert "alice@testhost" in page.login()
    assert page.tokens == [] and len(off.start.tokens) == 0


def test_keys_before_the_token_mean_none_and_a_size_may_come_first(tmp_path: Path) -> None:
    s = server(tmp_path)
    page = Page(s)
    page.wire.textMessageReceived("1120 40")
    assert page.output() == "" and page.wire.width == 120
    page.keys("alice\r")
    assert "Password: " in page.output()
    page.wire.textMessageReceived("2whatever")  # too late: ignored, not counted
    assert s.failed_logins._failures.count("10.0.0.1", s.clock.seconds()) == 0
    assert "alice@testhost:~$ " in page.line("password1")


def test_a_page_that_never_sends_its_token_meets_the_login_timeout(tmp_path: Path) -> None:
    s = server(tmp_path, login_timeout=60)
    page = Page(s)
    s.clock.advance(61)
    assert "Login timed out" in page.output() and page.sock.closed == [1000]
    page.drop()


def test_the_token_frame_is_binary_apart_from_output() -> None:
    assert control("2abc") == b"\x82\x042abc"


def test_a_token_resume_meets_the_shutdown_refusal_and_a_ban_ends_its_token(
    tmp_path: Path,
) -> None:
    s = server(tmp_path)
    page = Page(s)
    page.present("")
    page.login()
    (token,) = page.tokens
    page.drop()
    root = online(s, "root1", peer="10.0.0.3")
    root.run("shutdown +3")  # within five minutes: new logins are refused, resumes too
    again = Page(s, peer="10.0.0.9")
    shown = again.present(token)
    assert "new logins are refused" in shown and "alice@testhost" not in shown
    assert again.sock.closed == [1000]
    root.run("shutdown -c")
    page = Page(s, peer="10.0.0.9")  # the refused resume spent its token: log in again
    page.present("")
    assert "Resume it? [Y/n] " in page.login()
    page.line("y")
    (token,) = page.tokens
    page.drop()
    root.run("ban alice 1h")  # the ban ends the detached session, and its token with it
    assert len(s.start.tokens) == 0
    assert Page(s, peer="10.0.0.8").present(token).endswith("login: ")


def test_no_token_while_a_second_factor_is_enrolled_one_once_it_is(tmp_path: Path) -> None:
    pyotp = pytest.importorskip("pyotp")
    from test_otp import T0, now, secret_of

    s = make_server_with(tmp_path, (), linger=LINGER, require_otp="admin")
    s.clock.advance(T0)  # type: ignore[attr-defined]
    page = Page(s)
    page.present("")
    out = page.login("root1")
    assert out.endswith("Verification code: ") and page.tokens == []  # no way round the steps
    out = page.line(pyotp.TOTP(secret_of(out)).at(now(s)))
    assert "Second factor enabled" in out and out.endswith("root1@testhost:~$ ")
    (token,) = page.tokens
    page.drop()
    assert "root1@testhost:~$ " in Page(s, peer="10.0.0.9").present(token)


def test_after_a_restart_the_page_is_told_to_come_back_and_its_token_still_works(
    tmp_path: Path,
) -> None:
    from test_parking import first_start, result
    from test_parking import server as restarted

    from shellserver.shell import parking

    stopped: list[int] = []
    s = first_start(tmp_path, stopped)
    page = Page(s)
    page.present("")
    page.login()
    page.keys("echo half")
    (token,) = page.tokens
    assert result(s.restart.restart("root", "cli")) == 1
    assert "The server is restarting" in page.output()
    assert page.sock.closed == [1012]  # not a goodbye: the page reconnects by itself
    page.drop()
    stored = s.store.db._db.execute("SELECT state FROM parked").fetchone()[0]
    assert token not in stored  # only its digest is parked
    s.store.db.close()
    again = restarted(tmp_path)
    assert result(parking.restore_node(again.start, None)) == 1
    back = Page(again, peer="10.0.0.9")
    shown = back.present(token)
    assert "login:" not in shown and "Resume" not in shown
    assert shown.rstrip().endswith("alice@testhost:~$ echo half")
    assert len(back.tokens) == 1 and back.tokens[0] != token
    assert Page(again, peer="10.0.0.8").present(token).endswith("login: ")  # spent
