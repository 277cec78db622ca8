"""Commands are plain functions over a :class:`Context`; the registry maps names to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from attrs import define, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from shellserver.files.homefs import Homes
from shellserver.hub.local import IHub
from shellserver.hub.session import Session
from shellserver.ops.metrics import Metrics
from shellserver.shell.adminops import Admin
from shellserver.shell.argsplit import CommandLine
from shellserver.shell.bans import Bans
from shellserver.shell.mutes import muted_text
from shellserver.shell.secondfactor import SecondFactor
from shellserver.store.accounts import AccountStore
from shellserver.terminal.discipline import Disconnected, EndOfInput, Interrupted, Terminal

if TYPE_CHECKING:
    from shellserver.shell.shutdown import Shutdown

CommandResult = Coroutine[Any, Any, None] | None
CommandFunc = Callable[["Context", list[str]], CommandResult]


#: Long output goes out in pieces of this many characters (see ``Context.write_all``).
CHUNK = 16 * 1024


class UsageError(Exception):
    """Wrong arguments: the shell prints the message, if any, then the ``Usage:`` line."""


@frozen
class Services:
    """What commands use, and nothing else: built once by the assembly and handed to every
    :class:`Context`, so a command reaches the hub, the store or the admin operations
    without knowing how the server was put together."""

    hostname: str
    #: ``--cluster`` given: admins' listings show each session's node.
    clustered: bool
    clock: IReactorTime
    hub: IHub
    store: AccountStore
    metrics: Metrics
    homes: Homes
    registry: Registry
    shutdown: Shutdown
    #: The admin operations (``adminops``), shared with the control socket.
    admin: Admin
    #: Bans (``ban``, ``unban``, ``bans``; the login check), shared with the control socket.
    bans: Bans
    #: When the server started (``uptime``).
    started: float
    #: ``otp``: the second factor's records and dialogues.
    second_factor: SecondFactor

    def uptime(self) -> float:
        """Seconds since the server started, as ``uptime`` tells them."""
        return self.clock.seconds() - self.started

    async def plan_of(self, name: str) -> str | None:
        """The finger text for ``name``'s ``~/.plan``."""
        return await self.homes.plan(name)

    async def initial_password_spent(self, name: str) -> None:
        """A password changed: the first start's password file may have to go."""
        await self.admin.initial_password.spent(name)


@define(eq=False)
class Context:
    """What a running command may use: its session, the services, the line it came from."""

    server: Services
    session: Session
    line: CommandLine
    name: str
    #: The session's terminal itself, for what only a terminal does (read a line, wait
    #: for the client to read): the hub's ``session.terminal`` is only its port.
    terminal: Terminal
    #: The exit status (``ssh host CMD`` reports it): 1 once the command has failed.
    status: int = 0

    def write(self, text: str) -> None:
        """All command output goes through the session, so it meets the session's output cap like
        any other text.
        """
        self.session.write(text)

    def read_line(self, prompt: str = "", hidden: bool = False) -> Deferred[str]:
        """A line typed into a running command (a prompt, ``cat >``); it counts as activity, so a
        user answering prompts is not logged out as idle.
        """
        d = self.terminal.read_line(prompt, hidden)
        d.addCallback(self._active)
        return d

    async def typed_lines(self) -> AsyncIterator[str]:
        """The lines a user types into a command (``cat > FILE``, ``write``, an
        offline message): until a line with ``.`` alone, ^D, ^C or a hang-up.

        All four end the text the same way, keeping what was typed, as a
        terminal that hangs up under ``cat`` or ``write`` has already sent it.
        """
        while True:
            try:
                line = await self.read_line()
            except (EndOfInput, Interrupted, Disconnected):
                return
            if line == ".":
                return
            yield line

    async def pace(self) -> None:
        """Take a command token for a typed line, waiting for one if need be.

        Lines typed into a message are paced, not refused: a paste reaches the
        other terminal complete, no faster than commands would.
        """
        me = self.session
        delay = me.bucket.wait(self.now())
        if delay:
            await deferLater(self.server.clock, delay)
        me.bucket.take(self.now())
        me.last_active = self.now()

    async def write_all(self, pieces: Iterable[str]) -> None:
        """Long output (a file, a listing, ``who`` of thousands) in :data:`CHUNK` writes,
        each once the session's output has room: a client that stops reading holds the
        command, not the server's memory. Short output is one write, at once."""
        buffered: list[str] = []
        size = 0
        for piece in pieces:
            for start in range(0, len(piece), CHUNK):
                part = piece[start : start + CHUNK]
                buffered.append(part)
                size += len(part)
                if size >= CHUNK:
                    self.write("".join(buffered))
                    buffered, size = [], 0
                    await self.drain()
                    if not self.terminal.connected:
                        return
        if buffered:
            self.write("".join(buffered))

    def drain(self) -> Deferred[None]:
        """Fires when the session's own output has room again.

        A command that writes a lot (``cat``, ``ls`` of a big directory)
        awaits this between chunks, so a client that stops reading holds the
        command instead of the server's memory.
        """
        return self.terminal.drain()

    def _active(self, line: str) -> str:
        self.session.last_active = self.server.clock.seconds()
        return line

    def now(self) -> float:
        """The server's clock rather than ``time.time``, so tests drive command time with a
        ``Clock``.
        """
        return self.server.clock.seconds()

    def where(self) -> str:
        """For the admin log: which session, from which address."""
        return f"{self.session.tty} from {self.session.peer}"

    def refuse_if_muted(self) -> bool:
        """True, and the sender told (``write: you are muted until 14:32 (spam)``), when this
        session's user is muted: every command that sends others a message asks first. A dict
        lookup in memory, never a store round trip."""
        now = self.server.clock.seconds()
        mute = self.server.admin.mutes.of(self.session.user, now)
        if mute is None:
            return False
        self.fail(muted_text(mute, now))
        return True

    def fail(self, message: str) -> None:
        """``name: message`` — the form Unix commands complain in; the exit status is 1."""
        self.status = 1
        self.write(f"{self.name}: {message}\n")


@frozen
class Command:
    """One registered command: the usage and help users read, whether only administrators may run
    it, and whether it takes ``>``/``>>`` (the others refuse a redirection rather than ignore it).
    """

    name: str
    func: CommandFunc
    usage: str
    help: str
    admin: bool = False
    redirect: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """The help's first sentence (from its first paragraph, joined), for ``help``'s list:
        a help text's first line may stop mid-sentence."""
        para = " ".join(self.help.split("\n\n", 1)[0].split())
        end = para.find(". ")
        return para if end < 0 else para[: end + 1]


class Registry:
    """The table of names the shell dispatches on. A class rather than a bare dict, so a test can
    build one of its own commands; a name or alias registered twice is an error at import, never a
    silent override.
    """

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._primary: dict[str, Command] = {}

    def command(
        self,
        name: str,
        usage: str,
        help: str,
        admin: bool = False,
        redirect: bool = False,
        aliases: tuple[str, ...] = (),
    ) -> Callable[[CommandFunc], CommandFunc]:
        """The decorator each command module registers with, so a command's usage and help sit
        beside its code; aliases share one entry, listed once by ``help``.
        """

        def register(func: CommandFunc) -> CommandFunc:
            cmd = Command(name, func, usage, help.strip(), admin, redirect, aliases)
            self._primary[name] = cmd
            for n in (name, *aliases):
                if n in self._commands:
                    raise ValueError(f"command {n!r} registered twice")
                self._commands[n] = cmd
            return func

        return register

    def get(self, name: str) -> Command | None:
        """A typed name or alias to its command; None lets the shell answer ``command not found``
        with status 127, as sh does.
        """
        return self._commands.get(name)

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._primary.values(), key=lambda c: c.name))


#: The registry the command modules add themselves to.
REGISTRY = Registry()
command = REGISTRY.command
