"""Commands are plain functions over a :class:`Context`; the registry maps names to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from attrs import define, frozen
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from shellserver.hub.session import Session
from shellserver.shell.adminops import AdminServices
from shellserver.shell.argsplit import CommandLine
from shellserver.terminal.discipline import Disconnected, EndOfInput, Interrupted, Terminal

if TYPE_CHECKING:
    from shellserver.shell.shutdown import Shutdown

CommandResult = Coroutine[Any, Any, None] | None
CommandFunc = Callable[["Context", list[str]], CommandResult]


#: Long output goes out in pieces of this many characters (see ``Context.write_all``).
CHUNK = 16 * 1024


class UsageError(Exception):
    """Wrong arguments: the shell prints the message, if any, then the ``Usage:`` line."""


class Services(AdminServices, Protocol):
    """What commands use of the running server, and nothing else (``Server`` provides it).

    Defined here, so nothing under ``commands/`` depends on ``server.py``.
    """

    registry: Registry
    shutdown: Shutdown | None

    def uptime(self) -> float: ...

    async def plan_of(self, name: str) -> str | None: ...


@define(eq=False)
class Context:
    """What a running command may use: its session, the server, the line it came from."""

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
        self.session.write(text)

    def read_line(self, prompt: str = "", hidden: bool = False) -> Deferred[str]:
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
        command, not the server's memory (SPEC §7). Short output is one write, at once."""
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
        command instead of the server's memory (SPEC §7).
        """
        return self.terminal.drain()

    def _active(self, line: str) -> str:
        self.session.last_active = self.server.clock.seconds()
        return line

    def now(self) -> float:
        return self.server.clock.seconds()

    def where(self) -> str:
        """For the admin log: which session, from which address."""
        return f"{self.session.tty} from {self.session.peer}"

    def fail(self, message: str) -> None:
        """``name: message`` — the form Unix commands complain in; the exit status is 1."""
        self.status = 1
        self.write(f"{self.name}: {message}\n")


@frozen
class Command:
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
        return self._commands.get(name)

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._primary.values(), key=lambda c: c.name))


#: The registry the command modules add themselves to.
REGISTRY = Registry()
command = REGISTRY.command
