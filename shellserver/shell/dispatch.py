"""The command loop of one session: parse a line, check it, run the command."""

from __future__ import annotations

import sqlite3
import types
from collections.abc import Coroutine, Generator
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub.local import ClusterUnavailable
from shellserver.hub.session import Session
from shellserver.shell.argsplit import SplitError, split_line
from shellserver.shell.commands.registry import Command, Context, Services, UsageError
from shellserver.shell.completion import complete
from shellserver.store.sql import StoreUnavailable
from shellserver.terminal.discipline import Disconnected, EndOfInput, Interrupted, Terminal
from shellserver.text.sanitize import careful

log = Logger()
IDLE = "-sh"


@define(eq=False)
class Shell:
    """One session's command loop: rate limit, split, look up, check permission, run, and the exit
    status."""

    server: Services
    session: Session
    terminal: Terminal
    #: The exit status of the last command line: 0 ok, 1 error or usage, 127 not found.
    status: int = 0
    #: The prompt, made again only when the directory changes: the same string
    #: object each time also lets the wire reuse its encoding.
    _prompt_cwd: str | None = field(default=None, init=False)
    _prompt: str = field(default="", init=False)

    def prompt(self) -> str:
        """The prompt, the same string object until the directory changes, so the wire reuses its
        encoding."""
        s = self.session
        if s.cwd != self._prompt_cwd:
            path = f"~/{s.cwd}" if s.cwd else "~"
            self._prompt = f"{s.user}@{self.server.hostname}:{careful(path)}$ "
            self._prompt_cwd = s.cwd
        return self._prompt

    def complete(self, before: str) -> Deferred[tuple[int, list[str]]]:
        """Tab in the line editor: see ``completion.py``."""
        return Deferred.fromCoroutine(
            complete(
                self.server.registry, self.server.hub, self.server.homes, self.session, before
            )
        )

    def logout(self) -> None:
        """^D or ``exit``: say ``logout`` as a shell does, then close."""
        self.session.write("logout\n")
        self.session.disconnect()

    async def run_once(self, line: str) -> int:
        """One command line without a prompt (``ssh host CMD``); its exit status."""
        running = self.line(line)
        if running is not None:
            await running
        return self.status

    def line(self, line: str) -> Deferred[Any] | None:
        """One typed line; a Deferred while a command is still running."""
        self.status = 1
        session = self.session
        now = self.server.clock.seconds()
        session.last_active = now
        if not line or line.isspace():
            self.status = 0
            return None
        if not session.bucket.take(now):
            session.write("shellserver: too many commands; slow down and try again.\n")
            return None
        try:
            parsed = split_line(line)
        except SplitError as e:
            session.write(f"{e.program}: {e}\n")
            return None
        if not parsed.words:
            self.status = 0
            return None
        name = parsed.words[0]
        cmd = self.server.registry.get(name)
        if cmd is None:
            session.write(f"{careful(name)}: command not found\n")
            self.status = 127
            return None
        if cmd.admin and not session.is_admin:
            session.write(f"{name}: permission denied\n")
            return None
        if parsed.redirect is not None and not cmd.redirect:
            session.write(f"{name}: output redirection is not supported by this command\n")
            return None
        ctx = Context(self.server, session, parsed, name, self.terminal)
        try:
            result = cmd.func(ctx, list(parsed.words[1:]))
        except UsageError as e:
            _usage(ctx, cmd, e)
            return None
        if result is None:
            self.status = ctx.status
            return None
        # Run the coroutine by hand up to its first real wait. Awaiting an
        # already-fired Deferred (the in-memory hub's answers) does not
        # suspend, so a command that finishes at once (write, wall, who)
        # costs no Deferred and no inlineCallbacks loop; only one that
        # really waits is handed to Deferred.fromCoroutine from there.
        session.doing = careful(line[:60])
        try:
            waiting = result.send(None)
        except StopIteration:
            session.doing = IDLE
            self.status = ctx.status
            return None
        except Exception:
            session.doing = IDLE
            self._failed(Failure(), ctx, cmd)
            return None
        d: Deferred[Any] = Deferred.fromCoroutine(_resume(result, waiting))
        d.addErrback(self._failed, ctx, cmd)
        d.addBoth(self._finished, ctx)
        return d

    def _failed(self, failure: Failure, ctx: Context, cmd: Command) -> None:
        if failure.check(UsageError):
            _usage(ctx, cmd, failure.value)  # type: ignore[arg-type]
        elif failure.check(ClusterUnavailable):
            ctx.fail("cluster unavailable")
        elif failure.check(StoreUnavailable, sqlite3.OperationalError):
            # The store is down (its outage is logged once, when the store's probe sees it).
            ctx.fail("service temporarily unavailable")
        elif failure.check(Interrupted, EndOfInput, Disconnected) is None:
            log.failure("{cmd} failed for {user}", failure, cmd=cmd.name, user=ctx.session.user)
            ctx.fail("internal error")

    def _finished(self, _: object, ctx: Context) -> None:
        self.session.doing = IDLE
        self.status = ctx.status


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """The rest of ``coro``, which has already run up to awaiting ``waiting``.

    Yields what ``coro`` yields and passes results and exceptions back, so
    ``Deferred.fromCoroutine`` drives it (cancellation included) as if it
    had started it.
    """
    while True:
        try:
            value = yield waiting
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:
            try:
                waiting = coro.throw(e)
            except StopIteration:
                return
        else:
            try:
                waiting = coro.send(value)
            except StopIteration:
                return


def _usage(ctx: Context, cmd: Command, error: BaseException) -> None:
    ctx.status = 1
    if str(error):
        ctx.fail(str(error))
    ctx.write(f"Usage: {cmd.usage}\n")
