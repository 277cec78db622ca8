"""The line discipline between a wire (telnet, later ssh) and the shell.

It knows about prompts, hidden input, lines read by a running command, and
how a message from someone else is shown without corrupting the line being
typed: on its own lines, followed by the prompt again. It knows nothing about
bytes; the wire below encodes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from shellserver.wire import encode

log = Logger()

_CRLF = b"\r\n"
_ERASE_LINE = b"\r\x1b[K"
MAX_TYPEAHEAD = 64


class EndOfInput(Exception):
    """^D on an empty line."""


class Interrupted(Exception):
    """^C: the line, or the command reading it, is abandoned."""


class Disconnected(Exception):
    """The connection went away while a line was awaited."""


class IWire(Interface):
    """What a protocol layer offers the terminal."""

    kind = Attribute("Short name used in tty names: 'tel', later 'ssh'.")
    peer = Attribute("The client's address as text.")
    width = Attribute("Terminal width in columns (80 until the client says otherwise).")

    def send(text: str) -> None:
        """Own output, encoded by the wire. Never dropped."""

    def send_message(chunks: Sequence[bytes]) -> bool:
        """Pre-encoded output from elsewhere; False when dropped (client not reading)."""

    def set_echo(on: bool) -> None:
        """Turn the client's local echo on or off (off for passwords)."""

    def close() -> None:
        """End the connection after pending output."""

    def abort() -> None:
        """End the connection now."""


class ILineReceiver(Interface):
    """What the terminal offers a protocol layer."""

    def line_received(line: str) -> None: ...

    def eof_received() -> None: ...

    def interrupted() -> None: ...

    def line_too_long(limit: int) -> None: ...

    def connection_lost() -> None: ...


LineHandler = Callable[[str], "Deferred[Any] | None"]


@implementer(ILineReceiver)
class Terminal:
    """Reads lines for whoever asked, or hands them to the shell.

    A pending :meth:`read_line` gets the next line. Otherwise lines go to the
    handler (the shell); while the handler's Deferred runs, lines wait as
    typeahead. The shell's common case (a command that finishes at once)
    costs no Deferred at all.
    """

    def __init__(self, wire: IWire) -> None:
        self.wire = wire
        self._prompt: str | None = None  # shown and awaiting input
        self._prompt_bytes = b""
        self._reader: Deferred[str] | None = None
        self._hidden = False
        self._echo_off = False
        self._closing = False
        self._handler: LineHandler | None = None
        self._handler_prompt: Callable[[], str] = str
        self._busy = False
        self._looping = False
        self._typeahead: deque[str] = deque()
        self._at_bol = True
        self._reprinted = False
        self.on_disconnect: Callable[[], None] | None = None
        self.on_eof: Callable[[], None] | None = None
        self.connected = True

    # -- output ----------------------------------------------------------

    def write(self, text: str) -> None:
        if text:
            self._echo_on()
            self.wire.send(text)
            self._at_bol = text.endswith("\n")
            self._reprinted = False

    def notify(self, body: bytes) -> bool:
        """Show an encoded message from someone else on its own lines.

        ``body`` is shared by every recipient; only the short lead and the
        prompt after it are per session.
        """
        if not self.connected:
            return False
        chunks: list[bytes] = [body]
        if self._reprinted:
            # Only our own copy of the prompt is on that line: replace it, so a
            # run of messages reads as one block with one prompt under it.
            chunks.insert(0, _ERASE_LINE)
        elif not self._at_bol or self._prompt is not None:
            chunks.insert(0, _CRLF)
        if self._prompt is not None:
            chunks.append(self._prompt_bytes)
        sent = self.wire.send_message(chunks)
        if sent:
            self._reprinted = self._prompt is not None
            self._at_bol = self._prompt is None
        return sent

    def drain(self) -> Deferred[None]:
        """Fires when own output may continue (see ``Context.drain``)."""
        return succeed(None)

    # -- input -------------------------------------------------------------

    def read_line(self, prompt: str = "", hidden: bool = False) -> Deferred[str]:
        """The next line typed, after showing ``prompt``; ``hidden`` turns echo off."""
        if self._reader is not None:
            raise RuntimeError("a line is already being read")
        d: Deferred[str] = Deferred()
        if not self.connected:
            d.errback(Disconnected())
            return d
        if self._typeahead and not hidden:
            self._echo_on()
            self.write(prompt)
            d.callback(self._typeahead.popleft())
            return d
        self._reader = d
        if hidden:
            self._hidden = True
            if not self._echo_off:
                self._echo_off = True
                self.wire.set_echo(False)
        self._show(prompt)
        return d

    def set_handler(self, handler: LineHandler | None, prompt: Callable[[], str] = str) -> None:
        """Lines not asked for by a reader go to ``handler``; show its prompt when idle."""
        self._handler = handler
        self._handler_prompt = prompt
        if handler is not None and self._reader is None and not self._busy:
            self._next()

    def line_received(self, line: str) -> None:
        self._reprinted = False
        reader = self._reader
        if reader is not None:
            self._reader = None
            self._prompt = None
            self._at_bol = True
            if self._hidden:
                # Echo stays off until something other than another hidden
                # question is shown: turning it on between "Password:" and
                # "Password again:" would race the client's answer and could
                # echo the second password.
                self._hidden = False
                self.wire.send("\n")  # the client echoed nothing, not even the newline
            reader.callback(line)
        elif self._busy or self._handler is None:
            if len(self._typeahead) < MAX_TYPEAHEAD:
                self._typeahead.append(line)
            else:
                self.write("Too much typed ahead; line dropped.\n")
        else:
            self._prompt = None
            self._at_bol = True
            self._run(line)

    def eof_received(self) -> None:
        if self._reader is not None:
            self._fail_reader(EndOfInput())
        elif not self._busy and self.on_eof is not None:
            self._prompt = None
            self.on_eof()

    def interrupted(self) -> None:
        self._typeahead.clear()
        if self._reader is not None:
            self.write("^C\n")
            self._fail_reader(Interrupted())
        elif not self._busy and self._prompt is not None:
            self.write("^C\n")
            self._next()

    def line_too_long(self, limit: int) -> None:
        self.write(f"\nLine too long (over {limit} bytes); discarded.\n")
        if self._prompt is not None:
            self.write(self._prompt)

    def close(self) -> None:
        """End the connection after pending output; show no prompt meanwhile."""
        self._closing = True
        self._typeahead.clear()
        self.wire.close()

    def connection_lost(self) -> None:
        self.connected = False
        self._typeahead.clear()
        if self._reader is not None:
            self._fail_reader(Disconnected())
        if self.on_disconnect is not None:
            self.on_disconnect()

    # -- internals -----------------------------------------------------------

    def _echo_on(self) -> None:
        """Echo back on, unless a hidden line is being read."""
        if self._echo_off and not self._hidden:
            self._echo_off = False
            if self.connected:
                self.wire.set_echo(True)

    def _show(self, prompt: str) -> None:
        self._echo_on()
        self._reprinted = False
        self._prompt = prompt
        self._prompt_bytes = encode(prompt)
        if prompt:
            self.wire.send(prompt)
            self._at_bol = False

    def _fail_reader(self, exc: Exception) -> None:
        reader, self._reader = self._reader, None
        self._prompt = None
        self._hidden = False
        self._echo_on()
        assert reader is not None
        reader.errback(exc)

    def _run(self, line: str) -> None:
        self._typeahead.appendleft(line)
        self._next()

    def _start(self, line: str) -> None:
        assert self._handler is not None
        result = self._handler(line)
        if result is not None:
            self._busy = True
            result.addErrback(self._handler_failed)
            result.addBoth(self._done)

    def _handler_failed(self, failure: Any) -> None:
        log.failure("command failed", failure)
        self.write("shellserver: internal error\n")

    def _done(self, _: object) -> None:
        self._busy = False
        self._next()

    def _next(self) -> None:
        """Run typeahead, or show the prompt and wait. Never re-entered."""
        if self._looping:
            return
        self._looping = True
        try:
            while (
                self.connected
                and not self._closing
                and self._handler is not None
                and not self._busy
            ):
                if self._reader is not None:
                    return
                if not self._typeahead:
                    self._show(self._handler_prompt())
                    return
                self._start(self._typeahead.popleft())
        finally:
            self._looping = False
