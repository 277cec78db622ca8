"""What the telnet parser makes of the client's bytes: plain events, no transport.

The parser (:mod:`.core`) returns these from ``receive(data)`` and the Twisted
protocol acts on them, in order. Keeping them plain data is what lets the
parser be tested with bytes alone, at any split of the input, and lets the
protocol stay a few lines of dispatch.

Cost matters here, because a typed line or a keystroke is nearly every event:

- A line is its text, a plain ``str`` (:data:`Line` is ``str``): an object
  around it cost ~0.15 µs, a third of all the parser does for a line.
- A single ASCII keystroke comes as one shared :class:`Keys` per character,
  made once (:data:`ONE_KEY`), so typing allocates nothing per key.
- The others are slotted attrs classes, not frozen ones: a frozen attrs
  class's ``__init__`` costs ~4x as much. Nobody changes an event after it is
  made, and the shared keystrokes rely on that.
"""

from __future__ import annotations

from attrs import define

#: A complete line typed in line mode (the client edits, we get whole lines): its text,
#: decoded with ``surrogateescape``, so invalid bytes reach the sanitiser above as lone
#: surrogates instead of being lost here. ``Line("who")`` is just ``"who"``.
Line = str


@define(slots=True, weakref_slot=False)
class Keys:
    """Keystroke text in character mode, for the line editor.

    Enter arrives as ``"\\r"`` whatever line end the client sent, and a
    UTF-8 character split across reads is held until it is whole.
    """

    text: str


@define(slots=True, weakref_slot=False)
class LineTooLong:
    """A line passed ``limit`` bytes: it is discarded up to its end, without
    being buffered, so the user is told once and memory stays bounded."""

    limit: int


@define(slots=True, weakref_slot=False)
class Interrupt:
    """^C in line mode (the byte, or telnet's IP, ABORT or BRK): the line typed so
    far is dropped, as a tty's ``VINTR`` does."""


@define(slots=True, weakref_slot=False)
class Eof:
    """^D on an empty line in line mode (the byte or telnet's EOF), as a tty in
    canonical mode reads it: end of input. Mid-line it is ignored."""


@define(slots=True, weakref_slot=False)
class ModeChanged:
    """The client entered (``character=True``) or left character mode.

    Character mode is when the client lets us echo and suppress go-ahead: the
    terminal then edits the line itself. Text typed before the switch follows
    as :class:`Keys`, so nothing typed is lost at the change.
    """

    character: bool


@define(slots=True, weakref_slot=False)
class WindowSize:
    """The client's window changed size (NAWS), clamped to what the terminal can lay out.

    Only a change is reported, and several in one read come as one, so a
    client that repeats its size (or a resize storm) costs the terminal at
    most one redraw per read.
    """

    cols: int
    rows: int


@define(slots=True, weakref_slot=False)
class TerminalType:
    """The client's terminal type (TTYPE IS), lower-cased and reduced to
    ``[a-z0-9._+-]``, at most 40 characters: it ends up in ``TERM``-like
    places and logs, so it must be harmless text. Reported on change only."""

    name: str


@define(slots=True, weakref_slot=False)
class Send:
    """Bytes to write back to the client now: negotiation answers and the
    answer to "are you there". The parser never writes; whoever owns the
    transport does, in the order of the events."""

    data: bytes


#: The event of each single-byte ASCII keystroke but NUL, CR and LF (which the parser
#: reads itself), keyed by the byte as read: one shared object per key, made once.
ONE_KEY: dict[bytes, tuple[Keys]] = {
    bytes([b]): (Keys(chr(b)),) for b in range(128) if b not in (0, 10, 13)
}

#: Every event ``TelnetParser.receive`` can return.
Event = (
    Line | Keys | LineTooLong | Interrupt | Eof | ModeChanged | WindowSize | TerminalType | Send
)
