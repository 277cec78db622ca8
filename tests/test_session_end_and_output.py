"""The real server: goodbye notices are the last thing sent (own output: tests/hostile)."""

from __future__ import annotations

import pytest
from charclient import login as char_login
from realserver import RawClient, RealServer, login

pytestmark = pytest.mark.integration


def new_user(server: RealServer, name: str, pw: str = "correct horse") -> None:
    c = RawClient(server.port)
    c.expect("login: ")
    c.send_line("new")
    c.expect("Username: ")
    c.send_line(name)
    c.expect("Password: ")
    c.send_line(pw)
    c.expect("Password again: ")
    c.send_line(pw)
    c.expect(f"{name}@testhost:~$ ")
    c.send_line("exit")
    assert c.closed()


def rest(c: RawClient) -> str:
    assert c.closed()
    return c.buffer.decode("utf-8", "replace").replace("\r\n", "\n")


def test_kick_and_shutdown_notices_are_the_last_thing_sent(server: RealServer) -> None:
    new_user(server, "bob")
    admin = login(server.port, "admin", server.admin_password())
    bob = login(server.port, "bob", "correct horse")
    screen_bob = char_login(server.port, "bob", "correct horse")
    admin.send_line("kick bob enough")
    admin.expect("admin@testhost:~$ ")
    assert rest(bob).endswith("You have been logged out by admin: enough\n")
    screen_bob.wait(lambda: not screen_bob.pump(0.2) and screen_bob.closed, what="close")
    last = [line for line in screen_bob.lines() if line][-1]
    assert last == "You have been logged out by admin: enough"

    bob = login(server.port, "bob", "correct horse")
    server.stop()
    assert rest(bob).rstrip("\n").endswith("The system is going down NOW!")
