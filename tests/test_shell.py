"""The shell's command loop: a command that finishes at once costs no Deferred."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Client, make_server_with
from twisted.internet.defer import CancelledError, Deferred

from shellserver.app.assembly import Assembly
from shellserver.hub.session import Session
from shellserver.shell.commands.registry import REGISTRY, Context, Registry, UsageError
from shellserver.shell.dispatch import IDLE, Shell
from shellserver.terminal.discipline import Terminal


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    return make_server_with(tmp_path, ("alice", "bob"), admins=())


def online(server: Assembly, name: str) -> tuple[Client, Shell]:
    c = Client(server)
    assert f"{name}@testhost" in c.login(name)
    c.output()
    session = server.hub.sessions_of(name).result[-1]
    assert isinstance(session, Session)
    assert isinstance(session.terminal, Terminal)
    return c, Shell(server.services, session, session.terminal)


def test_a_command_that_finishes_at_once_returns_no_deferred(server: Assembly) -> None:
    _, shell = online(server, "alice")
    bob, _ = online(server, "bob")
    assert shell.line("write bob hello there") is None
    assert "hello there\nEOF\n" in bob.output()
    assert shell.session.doing == IDLE


def test_a_command_that_waits_is_resumed_where_it_stopped(server: Assembly) -> None:
    alice, shell = online(server, "alice")
    bob, _ = online(server, "bob")
    d = shell.line("write bob")
    assert isinstance(d, Deferred) and not d.called
    assert shell.session.doing == "write bob"
    alice.send("first line")
    alice.send(".")
    assert d.called
    seen = bob.output()
    assert "first line\n" in seen and "EOF\n" in seen
    assert shell.session.doing == IDLE


def _with_command(tmp_path: Path, name: str, func: object) -> Assembly:
    """A server whose registry has ``name`` besides the real commands."""
    reg = Registry()
    for cmd in REGISTRY:
        reg._commands[cmd.name] = cmd
    reg.command(name, usage=name, help="test")(func)  # type: ignore[arg-type]
    return make_server_with(tmp_path, ("alice", "bob"), admins=(), registry=reg)


def test_errors_before_and_after_a_wait(tmp_path: Path, logged_errors: object) -> None:
    gate: list[Deferred[None]] = []

    async def flaky(ctx: Context, args: list[str]) -> None:
        if args == ["now"]:
            raise RuntimeError("at once")
        if args == ["usage"]:
            raise UsageError("bad")
        d: Deferred[None] = Deferred()
        gate.append(d)
        await d
        raise RuntimeError("later")

    server = _with_command(tmp_path, "flaky", flaky)
    alice, shell = online(server, "alice")
    assert shell.line("flaky now") is None
    assert "flaky: internal error\n" in alice.output()
    assert shell.line("flaky usage") is None
    assert alice.output() == "flaky: bad\nUsage: flaky\n"
    d = shell.line("flaky wait")
    assert isinstance(d, Deferred)
    gate.pop().callback(None)
    assert d.called
    assert "flaky: internal error\n" in alice.output()
    assert shell.session.doing == IDLE
    assert len(logged_errors.flush(RuntimeError)) == 2  # type: ignore[attr-defined]


def test_cancelling_a_waiting_command_reaches_the_coroutine(
    tmp_path: Path, logged_errors: object
) -> None:
    seen: list[str] = []

    async def waiter(ctx: Context, args: list[str]) -> None:
        try:
            await Deferred()
        except CancelledError:
            seen.append("cancelled")
            raise

    server = _with_command(tmp_path, "waiter", waiter)
    _, shell = online(server, "alice")
    d = shell.line("waiter")
    assert isinstance(d, Deferred)
    d.cancel()
    assert seen == ["cancelled"]
    assert shell.session.doing == IDLE
    assert logged_errors.flush(CancelledError)  # type: ignore[attr-defined]


def test_the_prompt_is_made_again_only_when_the_directory_changes(server: Assembly) -> None:
    _, shell = online(server, "alice")
    first = shell.prompt()
    assert first == "alice@testhost:~$ "
    assert shell.prompt() is first
    shell.session.cwd = "notes\x1b"
    assert shell.prompt() == "alice@testhost:~/notes^[$ "
    shell.session.cwd = ""
    assert shell.prompt() == first


@pytest.mark.parametrize(
    "line", ["write bob hi | cat", "write bob hi; ls", "write bob a&&b", "ls;"]
)
def test_pipes_and_command_lists_run_nothing(server: Assembly, line: str) -> None:
    alice, shell = online(server, "alice")
    bob, _ = online(server, "bob")
    assert alice.run(line) == "sh: pipes and command lists are not supported\nalice@testhost:~$ "
    assert bob.output() == ""  # nothing was written to bob
    assert shell.line(line) is None and shell.status == 1


def test_quoted_pipes_and_semicolons_are_text(server: Assembly) -> None:
    alice, _ = online(server, "alice")
    assert alice.run("echo 'a|b' \"c;d\" e\\&\\&f fish&chips").startswith(
        "a|b c;d e&&f fish&chips\n"
    )
