"""Keystrokes from a terminal's decoded input: text runs, control keys, escape sequences.

Every wire (telnet in character mode, later SSH and the browser) hands the
editor text; this turns it into key events. An event is a ``str``: a run of
printable text (never containing a control character), a single control
character (``"\\x01"`` for ^A, ``"\\r"`` for Enter), or one of the named keys
below, which all start with ESC. Escape sequences are parsed with a bounded
buffer; an unknown or overlong one becomes :data:`UNKNOWN` (the editor rings
the bell) and is never inserted as text. A lone ESC waits for the next
character: ESC followed by a letter is Alt-letter, ESC followed by anything
else is dropped.
"""

from __future__ import annotations

import re

UP = "\x1b[A"
DOWN = "\x1b[B"
RIGHT = "\x1b[C"
LEFT = "\x1b[D"
HOME = "\x1b[H"
END = "\x1b[F"
DELETE = "\x1b[3~"
WORD_LEFT = "\x1bb"
WORD_RIGHT = "\x1bf"
KILL_WORD = "\x1bd"
KILL_WORD_BACK = "\x1b\x7f"
UNKNOWN = "\x1b"

_CSI = {
    "A": UP,
    "B": DOWN,
    "C": RIGHT,
    "D": LEFT,
    "H": HOME,
    "F": END,
    "1~": HOME,
    "7~": HOME,
    "4~": END,
    "8~": END,
    "3~": DELETE,
    "1;5C": WORD_RIGHT,
    "1;5D": WORD_LEFT,
    "1;3C": WORD_RIGHT,
    "1;3D": WORD_LEFT,
}
_SS3 = {"A": UP, "B": DOWN, "C": RIGHT, "D": LEFT, "H": HOME, "F": END}
_ALT = {"b": WORD_LEFT, "f": WORD_RIGHT, "d": KILL_WORD, "\x7f": KILL_WORD_BACK}
_ALT["\x08"] = KILL_WORD_BACK
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Longest escape sequence kept; anything longer is unknown and skipped to its end.
MAX_SEQUENCE = 16

_TEXT, _ESC, _CSI_ST, _SS3_ST, _SKIP = range(5)


class KeyParser:
    """Text in, key events out; holds at most :data:`MAX_SEQUENCE` characters between calls."""

    __slots__ = ("_seq", "_state")

    def __init__(self) -> None:
        self._state = _TEXT
        self._seq = ""

    def feed(self, text: str) -> list[str]:
        """The keys in ``text``; an escape sequence split between two reads is held, so
        a key never arrives in halves. Plain text is one key: a paste costs one call."""
        if self._state == _TEXT and _CONTROL.search(text) is None:
            return [text] if text else []
        keys: list[str] = []
        i, n = 0, len(text)
        while i < n:
            if self._state == _TEXT:
                m = _CONTROL.search(text, i)
                j = n if m is None else m.start()
                if j > i:
                    keys.append(text[i:j])
                if m is None:
                    break
                ch = text[j]
                i = j + 1
                if ch == "\x1b":
                    self._state = _ESC
                else:
                    keys.append(ch)
                continue
            if self._escape_char(text[i], keys):
                i += 1
        return keys

    def _escape_char(self, ch: str, keys: list[str]) -> bool:
        """One character inside a sequence; False when it ended the sequence unused."""
        state = self._state
        if state == _ESC:
            self._state = _TEXT
            if ch == "[":
                self._state, self._seq = _CSI_ST, ""
            elif ch == "O":
                self._state = _SS3_ST
            elif ch in _ALT:
                keys.append(_ALT[ch])
            elif " " <= ch <= "~":
                keys.append(UNKNOWN)
            else:  # a lone ESC before a control key or other text: dropped
                keys.append(UNKNOWN)
                return False
            return True
        if state == _SS3_ST:
            self._state = _TEXT
            if " " <= ch <= "~":
                keys.append(_SS3.get(ch, UNKNOWN))
                return True
            keys.append(UNKNOWN)
            return False
        # CSI, or skipping the rest of an overlong one
        if " " <= ch <= "?":
            if state == _CSI_ST:
                if len(self._seq) < MAX_SEQUENCE:
                    self._seq += ch
                else:
                    self._state, self._seq = _SKIP, ""
                    keys.append(UNKNOWN)
            return True
        seq, self._seq, self._state = self._seq, "", _TEXT
        if "@" <= ch <= "~":
            if state == _CSI_ST:
                keys.append(_CSI.get(seq + ch, UNKNOWN))
            return True
        if state == _CSI_ST:
            keys.append(UNKNOWN)
        return False
