"""The line discipline between a wire (telnet, later ssh and the browser) and the shell.

It knows about prompts, hidden input, lines read by a running command,
typeahead, and how a message from someone else is shown without corrupting
the line being typed. Two input paths meet here: complete lines from a wire
in line mode, and keystrokes from a wire in character mode, which go through
the key parser and the line editor (``editor.py``). It knows nothing about
bytes; the wire below encodes.

A message shown while a prompt waits erases the prompt and input (character
mode) or starts a fresh line (line mode); the prompt and input are drawn again
at the end of the reactor turn (:class:`Redraws`). So a burst of messages is
one block under one prompt, and a notice followed at once by ``close()``
(kick, lock, idle, shutdown) is the last thing the client sees.

What a client can repeat at no cost is coalesced here, once for every wire: a
resize only stores the size, and the editor's whole-line redraws (after a
resize, a message, an edit in the middle of a long line) and cursor moves are
drawn at most once per :data:`PACE` seconds per session, however many asked
for them. The first is drawn at once, so a person typing sees no delay.

Where a terminal is in its life (ready, running a command, backlogged, closing,
closed) is the Automat machine in :mod:`.lifecycle`, whose table lists every
transition; the per-line and per-message paths read its ``state`` attribute.
The hub holds a terminal only as a ``SessionPort`` (``hub/session.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from shellserver.terminal.editor import (
    COMPLETE,
    EOF,
    ERASE_ROW,
    INTERRUPT,
    LINE,
    WHOLE,
    LineEditor,
)
from shellserver.terminal.keys import KeyParser
from shellserver.terminal.lifecycle import (
    BACKLOGGED,
    ENDED_MACHINE,
    FINISHED_FROM_RUNNING,
    READY,
    RUNNING,
    STARTED_FROM_READY,
    TAKES_LINES,
    LifeInputs,
    LifeMachine,
)
from shellserver.terminal.screen import Screen

if TYPE_CHECKING:
    from shellserver.text.message import Message

log = Logger()

_ERASE_LINE = "\r\x1b[K"
MAX_TYPEAHEAD = 64
#: A window size a wire reports (NAWS, pty-req, a browser's resize) is kept within these:
#: a client's claim of a huge window must not make every redraw huge.
MIN_W, MAX_W, MIN_H, MAX_H = 20, 500, 5, 200


def clamp_size(cols: int, rows: int) -> tuple[int, int]:
    """``cols`` x ``rows`` within the bounds above, whatever the client claimed."""
    return max(MIN_W, min(cols, MAX_W)), max(MIN_H, min(rows, MAX_H))


#: Characters typed ahead in character mode while no prompt waits (a paste).
MAX_PENDING = 64 * 1024
#: Seconds between two redraws of one session's line (resizes, messages, edits coalesced).
PACE = 0.05
#: History characters ^R may search per :data:`PACE`; keys past it wait for the next interval.
SEARCH_BUDGET = 64 * 1024
#: Keys that end a line or list completions under it: they wait for a deferred redraw.
_FRESH_KEYS = frozenset("\r\n\x03\x04\t")
_NEVER = float("-inf")


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
    height = Attribute("Terminal height in rows (24 until the client says otherwise).")
    term = Attribute("The terminal type the client named (TTYPE), or ''.")
    backlogged = Attribute("True while the client is not reading what we send.")

    def send(text: str) -> None:
        """Own output, encoded by the wire. Never dropped."""

    def send_message(lead: str, message: Message, after: str = "") -> bool:
        """``lead``, then a message shared by many recipients, then own text ``after``
        (the prompt drawn again), as one block; False when dropped.

        Drops only while ``backlogged``: the terminal relies on that to hold a
        message until the end of the turn and still answer at once."""

    def drain() -> Deferred[None]:
        """Fires when the client reads again (at once when it does)."""

    def set_echo(on: bool) -> None:
        """Turn the client's local echo on or off (off for passwords)."""

    def session_started() -> None:
        """A session (a shell) runs on this wire now: its output may go straight out
        (``Output.own_through``)."""

    def close() -> None:
        """End the connection after pending output."""

    def abort() -> None:
        """End the connection now."""


class ILineReceiver(Interface):
    """What the terminal offers a protocol layer."""

    def line_received(line: str) -> None:
        """Line mode: one complete line."""

    def text_received(text: str) -> None:
        """Character mode: keystrokes, as decoded text (escape sequences included)."""

    def mode_changed(character: bool) -> None:
        """The client entered (or left) character mode."""

    def resized() -> None:
        """The wire's width or height changed."""

    def eof_received() -> None:
        """^D on an empty line, or the client's end of input: log out, or end a read."""

    def interrupted() -> None:
        """^C (telnet's IP, a browser's key): abandon the line or the command reading it."""

    def line_too_long(limit: int) -> None:
        """A line over the wire's limit was discarded: say so, rather than run a part."""

    def connection_lost() -> None:
        """The connection is gone: let go of everything, fail a pending read."""


@implementer(ILineReceiver)
class _Gone:
    """What a wire talks to once its connection is lost: nothing, and nothing held.

    The wire drops its terminal for this, so the two are not a reference
    cycle that only the garbage collector could free.
    """

    def line_received(self, line: str) -> None:
        """A line read after the hang-up: there is no session left to run it."""

    def text_received(self, text: str) -> None:
        """Keys typed after the hang-up go nowhere."""

    def mode_changed(self, character: bool) -> None:
        """A late negotiation answer changes nothing now."""

    def resized(self) -> None:
        """A late window size has no screen to redraw."""

    def eof_received(self) -> None:
        """End of input after the hang-up: the session already ended."""

    def interrupted(self) -> None:
        """^C after the hang-up: no line to abandon."""

    def line_too_long(self, limit: int) -> None:
        """No one is left to tell that a line was too long."""

    def connection_lost(self) -> None:
        """A second loss report (a wire may send one) is harmless."""


GONE: ILineReceiver = _Gone()


class Redraws:
    """Prompts to draw again after messages, all at the end of the reactor turn.

    One timer for every terminal that got a message in this turn, so a wall to
    thousands of sessions adds one delayed call, not one per recipient.
    """

    def __init__(self, clock: IReactorTime) -> None:
        #: Also the clock the terminals pace their redraws by (:data:`PACE`).
        self.clock = clock
        self._due: list[Terminal] = []
        self._call: IDelayedCall | None = None

    def add(self, terminal: Terminal) -> None:
        """``terminal`` got a message this turn: its prompt is drawn again at the end."""
        self._due.append(terminal)
        if self._call is None:
            self._call = self.clock.callLater(0, self.run)

    def run(self) -> None:
        """The end of the turn: every prompt due, once, however many messages came."""
        self._call = None
        due, self._due = self._due, []
        for terminal in due:
            terminal.settle()


LineHandler = Callable[[str], "Deferred[Any] | None"]
Completer = Callable[[str], "Deferred[tuple[int, list[str]]]"]


@implementer(ILineReceiver)
class Terminal:
    """Reads lines for whoever asked, or hands them to the shell.

    A pending :meth:`read_line` gets the next line. Otherwise lines go to the
    handler (the shell); while the handler's Deferred runs, lines wait as
    typeahead, and none runs while the client is not reading our output. The
    shell's common case (a command that finishes at once) costs no Deferred.

    Its life is ``state`` (see :mod:`.lifecycle`). The booleans left are facts
    independent of it, each read on a per-line, per-message or per-key path:
    where the cursor is and what is on its line (``_at_bol``, ``_reprinted``,
    ``_redraw_due``); the current question's kind (``_hidden``) and the client's
    echo, which deliberately lags it so echo never comes on between two hidden
    questions (``_echo_off``); the client's end of input, after which typed lines
    still run (``_input_ended``); re-entrancy guards (``_looping``, ``_replaying``);
    the once-per-prompt typeahead note (``_noted_drop``); and in character mode the
    keystroke gates (``_completing``: Tab's answer pending; ``_throttled``: keys wait
    for the pacing tick). ``connected`` (not ``closed``) and ``_live`` (neither
    ``closing`` nor ``closed``) are written only by the machine's outputs: plain
    attributes for the hub, the commands and the per-message checks.
    """

    __slots__ = (
        "_at_bol",
        "_completer",
        "_completing",
        "_echo_off",
        "_editor",
        "_handler",
        "_handler_prompt",
        "_hidden",
        "_input_ended",
        "_live",
        "_looping",
        "_machine",
        "_noted_drop",
        "_paced_at",
        "_parser",
        "_pending",
        "_pending_len",
        "_prompt",
        "_reader",
        "_redraw_due",
        "_redraws",
        "_replaying",
        "_reprinted",
        "_screen",
        "_stash",
        "_stash_lead",
        "_throttled",
        "_tick",
        "_typeahead",
        "connected",
        "dropped",
        "on_disconnect",
        "on_eof",
        "state",
        "wire",
    )

    def __init__(self, wire: IWire, redraws: Redraws) -> None:
        self.wire = wire
        self._redraws = redraws
        self._prompt: str | None = None  # shown and awaiting input
        self._reader: Deferred[str] | None = None
        self._hidden = False
        self._echo_off = False
        self._handler: LineHandler | None = None
        self._handler_prompt: Callable[[], str] = str
        self._completer: Completer | None = None
        self._looping = False
        # Made only when a line has to wait: an empty deque is ~0.75 KiB, per session.
        self._typeahead: deque[str] | None = None
        self._noted_drop = False
        self._at_bol = True
        self._reprinted = False
        self._redraw_due = False
        # Line mode: the message held until the end of the turn, to go out with the prompt.
        self._stash: Message | None = None
        #: The lead of a message held in line mode; None for one held in character mode,
        #: whose lead (erasing the line) is worked out when it is sent.
        self._stash_lead: str | None = ""
        #: The client will send nothing more (an SSH channel's EOF): after the lines already
        #: typed, a read ends with EndOfInput and the shell logs out.
        self._input_ended = False
        # Character mode only (None in line mode, which costs nothing more).
        self._editor: LineEditor | None = None
        self._screen: Screen | None = None
        self._parser: KeyParser | None = None
        self._pending: deque[str] | None = None
        self._pending_len = 0
        self._completing = False
        self._replaying = False
        # Redraw pacing (character mode): when the line was last drawn in full, the timer
        # for the next one, and whether keys wait for it (a deferred redraw, ^R's budget).
        self._paced_at = _NEVER
        self._tick: IDelayedCall | None = None
        self._throttled = False
        self.on_disconnect: Callable[[], None] | None = None
        self.on_eof: Callable[[], None] | None = None
        #: False once the connection is gone (set by the machine's ``end``); the hub
        #: and commands read it, so it stays a plain attribute.
        self.connected = True
        #: Set as the connection ends: True when the client went without the server closing
        #: (no logout, kick or shutdown), so the session may be kept, detached.
        self.dropped = False
        #: The machine's state (:mod:`.lifecycle`), set only by its outputs: the hot
        #: paths read this attribute instead of calling the machine.
        self.state = READY
        #: ``state`` is neither closing nor closed: written by the machine's outputs
        #: alone (``_begin_closing``, ``_end``), one slot for the per-message and
        #: per-key checks, as cheap as reading a flag.
        self._live = True
        # Made on the first input, and let go of on the way back to ``ready`` (its initial
        # state, so one made later starts where the terminal is): an idle session holds
        # no machine, which would add a fifth to its memory.
        self._machine: LifeInputs | None = None

    @property
    def width(self) -> int:
        """The window's columns as the wire last heard them (the hub's port reads it)."""
        return int(self.wire.width)

    @property
    def height(self) -> int:
        """The window's rows as the wire last heard them."""
        return int(self.wire.height)

    @property
    def live(self) -> bool:
        """Neither closing nor closed: a session shown here may still be taken over by its
        resume token, one whose goodbye is on its way may not."""
        return self._live

    @property
    def character_mode(self) -> bool:
        """Whether keys are edited here (the line editor exists) or by the client."""
        return self._editor is not None

    # -- output ----------------------------------------------------------

    def write(self, text: str) -> None:
        """Own output, never dropped; above a drawn prompt, which is then drawn again."""
        if not text:
            return
        if self._redraw_due:
            self.settle()
        if self._echo_off:
            self._echo_on()
        editor = self._editor
        if editor is not None and (editor.drawn or (editor.stale == WHOLE and editor.active)):
            # Own text while a prompt is drawn: above it, then the prompt again.
            editor.suspend()
            editor.screen.write(text)
            if not text.endswith("\n"):
                editor.screen.newline()
            editor.redraw()
            self._flush()
            return
        self.wire.send(text)
        self._at_bol = text.endswith("\n")
        self._reprinted = False

    def notify(self, message: Message) -> bool:
        """Show a message from someone else on its own lines, then the prompt again.

        The message's bytes are shared by every recipient (the wire encodes it
        once); only the short lead before it is this terminal's own. Once closing,
        nothing is shown: the goodbye stays the last thing the client sees.
        """
        if not self._live:
            return False
        editor = self._editor
        if editor is not None and self._prompt is not None:
            if self._stash is not None:
                self._unstash()  # a burst: the first message goes out alone, as it was
            if not self._redraw_due and not self.wire.backlogged:
                # As in line mode: held till the end of the turn (settle), then the line
                # erased, the message and the line drawn again go in one write, not two.
                # The erasing is worked out then, from where the drawing stands then.
                self._stash = message
                self._stash_lead = None
                self._redraw_due = True  # where the line ends is seen when it is sent
                self._redraws.add(self)
                return True
            if not self._erase_and_send(message, not self._redraw_due):
                return False
        else:
            if self._redraw_due:
                lead = ""
            elif self._reprinted:
                # Only our own copy of the prompt is on that line: replace it, so a
                # run of messages reads as one block with one prompt under it.
                lead = _ERASE_LINE
            elif not self._at_bol or self._prompt is not None:
                lead = "\n"
            else:
                lead = ""
            if self._stash is not None:
                self._unstash()  # a burst: the first message goes out alone, as it was
            if self._prompt is not None and not self._redraw_due and not self.wire.backlogged:
                # The prompt follows at the end of the turn (settle): hold the message
                # till then, so each recipient costs one transport write, not two.
                # Not backlogged, the wire takes it (IWire.send_message).
                self._stash = message
                self._stash_lead = lead
            elif not self.wire.send_message(lead, message):
                return False
            self._reprinted = False
        self._at_bol = True
        if self._prompt is not None and not self._redraw_due:
            self._redraw_due = True
            self._redraws.add(self)
        return True

    def settle(self) -> None:
        """Draw the prompt (and input) again after messages, unless the session is ending."""
        if not self._redraw_due:
            return
        self._redraw_due = False
        if not self._live or self._prompt is None:
            if self._stash is not None:
                self._unstash()
            return
        stash = self._stash
        editor = self._editor
        if stash is not None and self._stash_lead is None and editor is not None:
            self._stash = None
            if self._tick is None:
                # The usual case (a short line on one row, drawn again at once): the editor's
                # kept string, the same bytes _erase_and_send builds part by part.
                now = self._redraws.clock.seconds()
                if now - self._paced_at >= PACE:
                    after = editor.redraw_row()
                    if after is not None:
                        self._paced_at = now  # a whole drawing, as _pace counts one
                        if self.wire.send_message(ERASE_ROW, stash, after):
                            self._at_bol = self._reprinted = False
                        return
            self._erase_and_send(stash, True, redraw=True)
        elif stash is not None:
            self._stash = None
            self.wire.send_message(self._stash_lead or "", stash, self._prompt)
            self._at_bol = not self._prompt
            self._reprinted = True
        elif editor is not None:
            editor.redraw()
            self._flush()
        elif self._prompt:
            self.wire.send(self._prompt)
            self._at_bol = False
            self._reprinted = True
        else:
            self._reprinted = True

    def _unstash(self) -> None:
        """The held message alone, now: something other than its prompt comes next."""
        stash, self._stash = self._stash, None
        if stash is None:
            return
        if self._stash_lead is None and self._editor is not None:
            self._erase_and_send(stash, True)
        else:
            self.wire.send_message(self._stash_lead or "", stash)

    def _erase_and_send(self, message: Message, first: bool, redraw: bool = False) -> bool:
        """Character mode: the prompt and line erased, ``message``, and (``redraw``) the line
        drawn again, in one write. ``first``: no message went above the line since it was
        last drawn, so a line not ended yet is ended before the message. False, with the
        drawing as it was, when the wire dropped the message."""
        editor = self._editor
        assert editor is not None
        saved = editor.geometry()
        editor.suspend()
        screen = editor.screen
        lead = screen.take()
        if not lead and not self._at_bol and first:
            lead = "\n"
        after = ""
        if redraw:
            editor.redraw()
            if editor.stale:
                self._pace()  # as _flush: now, or at the end of the interval
            after = screen.take()
        if not self.wire.send_message(lead, message, after):
            editor.restore(saved)
            return False
        self._at_bol = True
        if after:
            self._at_bol = after.endswith("\n")
            self._reprinted = False
        return True

    def drain(self) -> Deferred[None]:
        """Fires when own output may continue: the client is reading (see ``Context.drain``)."""
        return self.wire.drain()

    def _flush(self) -> None:
        screen = self._screen
        if screen is not None:
            editor = self._editor
            if editor is not None and editor.stale:
                self._pace()
            text = screen.take()
            if text:
                self.wire.send(text)
                self._at_bol = text.endswith("\n")
                self._reprinted = False

    # -- input -------------------------------------------------------------

    def read_line(self, prompt: str = "", hidden: bool = False) -> Deferred[str]:
        """The next line typed, after showing ``prompt``; ``hidden`` turns echo off."""
        if self._reader is not None:
            raise RuntimeError("a line is already being read")
        d: Deferred[str] = Deferred()
        if not self.connected:
            d.errback(Disconnected())
            return d
        if self._stash is not None:
            self._unstash()
        typeahead = self._typeahead
        if typeahead and not hidden:
            self._echo_on()
            self.write(prompt)
            d.callback(typeahead.popleft())
            return d
        if self._input_ended and (hidden or not self._typeahead):
            d.errback(EndOfInput())  # nothing more will come (a hidden read takes no typeahead)
            return d
        self._reader = d
        if hidden:
            self._hidden = True
            if not self._echo_off:
                self._echo_off = True
                self.wire.set_echo(False)
        self._show(prompt)
        return d

    def set_handler(
        self,
        handler: LineHandler | None,
        prompt: Callable[[], str] = str,
        completer: Completer | None = None,
    ) -> None:
        """Lines not asked for by a reader go to ``handler``; show its prompt when idle.

        ``completer`` answers Tab in character mode: given the line up to the
        cursor, where the word being completed starts and its candidates.
        """
        self._handler = handler
        if handler is not None:
            self.wire.session_started()
        self._handler_prompt = prompt
        self._completer = completer
        if handler is not None and self._reader is None and self.state is not RUNNING:
            self._next()

    def line_received(self, line: str) -> None:
        """A whole line: to a pending read, else run by the shell, else typed ahead."""
        if self._redraw_due:
            self.settle()
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
                if self._editor is None:
                    self.wire.send("\n")  # the client echoed nothing, not even the newline
            reader.callback(line)
        elif self.state is RUNNING or self._handler is None:
            typeahead = self._typeahead
            if typeahead is None:
                typeahead = self._typeahead = deque()
            if len(typeahead) < MAX_TYPEAHEAD:
                typeahead.append(line)
            elif not self._noted_drop:
                self._noted_drop = True
                self.write("Too much typed ahead; lines dropped.\n")
        else:
            self._prompt = None
            self._at_bol = True
            self._run(line)

    def text_received(self, text: str) -> None:
        """Keystrokes (character mode): to the editor while a prompt waits, else held."""
        parser = self._parser
        if parser is None or not self._live:  # closing: nothing is drawn after the goodbye
            return
        self.settle()
        editor = self._editor
        assert editor is not None
        for key in parser.feed(text):
            pending = self._pending
            if (
                not pending
                and self._prompt is not None
                and not self._completing
                and not self._throttled
                and ((not editor.stale and editor.work < SEARCH_BUDGET) or self._ready(key))
            ):
                self._key(key)
            elif key == "\x03" and self._prompt is None:
                # ^C while a command runs: forget what was typed ahead.
                self._pending = None
                self._pending_len = 0
                self._typeahead = None
                self.write("^C\n")
            else:
                room = MAX_PENDING - self._pending_len
                if len(key) > room:
                    if self._screen is not None:
                        self._screen.bell()
                    if key[0] < " " or room <= 0:
                        continue
                    key = key[:room]  # the part of a paste that fits
                if pending is None:  # made only when needed: idle sessions stay small
                    pending = self._pending = deque()
                pending.append(key)
                self._pending_len += len(key)
        self._flush()

    def mode_changed(self, character: bool) -> None:
        """The client now sends keys (make the editor) or lines (drop it, and its cost)."""
        self.settle()
        if character and self._editor is None:
            self._screen = Screen()
            self._editor = LineEditor(self._screen, self.width)
            self._editor.defer = True
            self._parser = KeyParser()
            if self._prompt is not None:
                self._editor.start(self._prompt, self._hidden, drawn=True)
        elif not character and self._editor is not None:
            self._editor = self._screen = self._parser = self._pending = None
            self._pending_len = 0
            self._stop_tick()

    def _ready(self, key: str) -> bool:
        """Whether ``key`` may go to the editor now; if not, it and the keys after it wait
        for the next tick. A key that ends the line or lists under it waits for a deferred
        redraw (drawn now if the interval allows); once ^R has searched its budget in this
        interval, every key waits."""
        editor = self._editor
        assert editor is not None
        if editor.work >= SEARCH_BUDGET:
            now = self._redraws.clock.seconds()
            if now - self._paced_at < PACE:
                self._throttle()
                return False
            editor.work = 0
        if editor.stale and key in _FRESH_KEYS:
            self._pace()
            if editor.stale:
                self._throttle()
                return False
        return True

    def _throttle(self) -> None:
        self._throttled = True
        self._schedule_tick()

    def _pace(self) -> None:
        """The editor's deferred drawing: now, if the last was :data:`PACE` ago, else once
        at the end of the interval (one timer, however many ask)."""
        if self._tick is not None:
            return
        editor = self._editor
        assert editor is not None
        now = self._redraws.clock.seconds()
        if now - self._paced_at >= PACE:
            self._paced_at = now
            editor.refresh()
        else:
            self._schedule_tick()

    def _schedule_tick(self) -> None:
        if self._tick is None:
            clock = self._redraws.clock
            wait = max(0.0, self._paced_at + PACE - clock.seconds())
            self._tick = clock.callLater(wait, self._ticked)

    def _ticked(self) -> None:
        self._tick = None
        self._throttled = False
        editor = self._editor
        if editor is None or not self._live:
            return
        self._paced_at = self._redraws.clock.seconds()
        editor.work = 0
        editor.refresh()
        self._flush()
        self._replay()

    def _stop_tick(self) -> None:
        tick, self._tick = self._tick, None
        self._throttled = False
        if tick is not None and tick.active():
            tick.cancel()

    def resized(self) -> None:
        """O(1) however often: the wire stored the size; the line is drawn again at most once
        per :data:`PACE` (:meth:`_pace`), at the size last reported."""
        editor = self._editor
        if editor is not None and self._live:
            self.settle()
            editor.resize(self.width)
            self._flush()

    def eof_received(self) -> None:
        """^D on an empty line: a pending read ends, or the shell logs out."""
        self.settle()
        if self._reader is not None:
            self._fail_reader(EndOfInput())
        elif self.state in TAKES_LINES and self.on_eof is not None:
            # Not while a command runs, nor once closing: "logout" after the goodbye
            # would no longer leave the goodbye last (character mode never did).
            self._prompt = None
            self.on_eof()

    def input_ended(self) -> None:
        """No more input will come, ever (not a typed ^D): finish what was typed, then EOF."""
        self._input_ended = True
        self.eof_received()

    def interrupted(self) -> None:
        """^C: typeahead is forgotten; a read fails, or a fresh prompt is shown."""
        if not self._live:
            return
        self.settle()
        self._typeahead = None
        if self._reader is not None:
            self.write("^C\n")
            self._fail_reader(Interrupted())
        elif self.state is not RUNNING and self._prompt is not None:
            self.write("^C\n")
            self._prompt = None
            self._next()

    def line_too_long(self, limit: int) -> None:
        """Say the line was discarded, and show the prompt again under it."""
        if not self._live:
            return
        self.write(f"\nLine too long (over {limit} bytes); discarded.\n")
        if self._prompt is not None:
            self.write(self._prompt)

    def _life(self) -> LifeInputs:
        """The machine, made now if the terminal has none: in ``ready``, or brought to
        ``running`` when a waiting command took the table's shortcut (``_start``)."""
        machine = self._machine
        if machine is None:
            machine = self._machine = LifeMachine(self)
            if self.state is RUNNING:
                machine.started()
        return machine

    def close(self) -> None:
        """End the connection after pending output; show no prompt meanwhile."""
        self._life().close()

    def _begin_closing(self) -> None:
        self._live = False
        self._typeahead = None
        self._unstash()  # a notice followed at once by close() is the last thing shown
        self.wire.close()

    def connection_lost(self) -> None:
        """The wire's connection ended: fail a pending read, and let go of everything."""
        self._life().lost()

    def _end(self) -> None:
        self._machine = ENDED_MACHINE  # no cycle through our own (see ENDED_MACHINE)
        self.dropped = self._live  # not closing: the client went, the server did not close
        self.connected = False
        self._live = False
        self._stash = None
        self._typeahead = None
        self._stop_tick()
        if self._pending is not None:
            self._pending.clear()
        if self._reader is not None:
            self._fail_reader(Disconnected())
        on_disconnect = self.on_disconnect
        # Let go of the shell and the connection: they point back at us, and a
        # cycle is freed only by a full garbage collection, which at thousands
        # of sessions stalls every session for a tenth of a second or more
        # (docs/performance.md). A command still running keeps what it needs.
        self.on_disconnect = self.on_eof = None
        self._handler = self._completer = None
        self._handler_prompt = str
        if on_disconnect is not None:
            on_disconnect()

    def leftover(self) -> tuple[list[str], str]:
        """The line editor's history and the line being typed (empty in line mode, where the
        client edits, and while a hidden answer is typed): what a resumed session gets back."""
        editor = self._editor
        if editor is None:
            return [], ""
        line = "" if editor.hidden or not editor.active else editor.buf
        return list(editor.history), line

    def resume_input(self, history: list[str], line: str) -> None:
        """A resumed session's history and half-typed line, after its prompt was shown: the
        line comes back as if typed again (line mode has neither: the client edits)."""
        editor = self._editor
        if editor is None:
            return
        for old in history:
            editor.remember(old)
        if line and self._prompt is not None and editor.active and not editor.hidden:
            editor.type_in(line)
            self._flush()

    # -- character mode --------------------------------------------------------

    def _key(self, key: str) -> None:
        editor = self._editor
        assert editor is not None
        result = editor.key(key)
        if result is None:
            return
        kind, text = result
        if kind == LINE:
            if self._reader is None and not self._hidden:
                editor.remember(text)
            self._flush()
            self.line_received(text)
        elif kind == INTERRUPT:
            self._typeahead = None
            editor.finish("^C")
            self._flush()
            if self._reader is not None:
                self._fail_reader(Interrupted())
            elif self.state is not RUNNING:
                self._prompt = None
                self._next()
        elif kind == EOF:
            if self._reader is not None:
                editor.finish()
                self._flush()
                self._fail_reader(EndOfInput())
            elif self.state is not RUNNING and self.on_eof is not None:
                editor.finish(newline=False)
                self._flush()
                self._prompt = None
                self.on_eof()
        elif kind == COMPLETE:
            self._complete(text)

    def _complete(self, before: str) -> None:
        completer = self._completer
        if completer is None or self._reader is not None:
            assert self._screen is not None
            self._screen.bell()
            return
        self._completing = True
        d = completer(before)
        d.addCallback(self._completed, before)
        d.addErrback(self._completion_failed)

    def _completed(self, answer: tuple[int, list[str]], before: str) -> None:
        self._completing = False
        editor = self._editor
        if editor is not None and self._prompt is not None and editor.buf[: editor.pos] == before:
            editor.complete(*answer)
            self._flush()
        self._replay()

    def _completion_failed(self, failure: Any) -> None:
        log.failure("completion failed", failure)
        self._completing = False
        self._replay()

    def _replay(self) -> None:
        """Feed keys typed while no prompt waited, now that one does. Never re-entered."""
        pending = self._pending
        if self._replaying or not pending:
            return
        self._replaying = True
        try:
            while (
                pending
                and self._prompt is not None
                and not self._completing
                and not self._throttled
                and self._ready(pending[0])
            ):
                key = pending.popleft()
                self._pending_len -= len(key)
                self._key(key)
            self._flush()
        finally:
            self._replaying = False

    # -- internals -----------------------------------------------------------

    def _echo_on(self) -> None:
        """Echo back on, unless a hidden line is being read."""
        if self._echo_off and not self._hidden:
            self._echo_off = False
            if self.connected:
                self.wire.set_echo(True)

    def _show(self, prompt: str) -> None:
        if self._stash is not None:
            self._unstash()
        if self._echo_off:
            self._echo_on()
        self._reprinted = False
        self._prompt = prompt
        editor = self._editor
        if editor is not None:
            if not self._at_bol:
                editor.screen.newline()
            editor.start(prompt, self._hidden)
            self._flush()
            self._replay()
        elif prompt:
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
        typeahead = self._typeahead
        if typeahead:  # lines wait for the client to read: this one after them
            typeahead.append(line)
            self._next()
        else:
            self._next(line)

    def _start(self, line: str) -> None:
        assert self._handler is not None
        result = self._handler(line)
        if result is not None:
            if self._machine is None and self.state is READY:
                self.state = STARTED_FROM_READY  # the machine's own transition, looked up
            else:
                self._life().started()
            result.addErrback(self._handler_failed)
            result.addBoth(self._done)

    def _handler_failed(self, failure: Any) -> None:
        log.failure("command failed", failure)
        self.write("shellserver: internal error\n")

    def _done(self, _: object) -> None:
        if self._machine is None and self.state is RUNNING:
            self.state = FINISHED_FROM_RUNNING  # the machine's own transition, looked up
        else:
            self._life().finished()
        if self.state is READY:
            self._machine = None
        self._next()

    def _drained(self, _: object) -> None:
        self._life().drained()
        if self.state is READY:
            self._machine = None
        self._next()

    def _next(self, line: str | None = None) -> None:
        """Run ``line`` (just typed, nothing waiting before it) or typeahead, or show the
        prompt and wait. Never re-entered: a ``line`` that cannot run now waits as typeahead.

        Nothing runs while the client is not reading: the next typed line waits
        until the last command's output was taken: a client that stops reading holds
        its own commands, not the server's memory.
        """
        if self._looping:
            if line is not None:
                self._hold(line)
            return
        self._looping = True
        try:
            while self.state in TAKES_LINES and self._handler is not None:
                if self._reader is not None:
                    return
                if self.wire.backlogged:
                    if self.state is not BACKLOGGED:
                        self._life().stalled()
                        self.wire.drain().addCallback(self._drained)
                    return
                if line is None:
                    typeahead = self._typeahead
                    if not typeahead:
                        if self._input_ended and self.on_eof is not None:
                            self._prompt = None
                            self.on_eof()
                            return
                        self._noted_drop = False
                        self._show(self._handler_prompt())
                        if not self._typeahead:
                            return
                        continue
                    line = typeahead.popleft()
                start, line = line, None
                self._start(start)
        finally:
            self._looping = False
            if line is not None:  # not run yet: it waits, as if typed ahead
                self._hold(line)

    def _hold(self, line: str) -> None:
        typeahead = self._typeahead
        if typeahead is None:
            typeahead = self._typeahead = deque()
        typeahead.append(line)
