"""Column wrapping as util-linux wall does it: a hard cut at the column, not a word wrap.

Display widths come from ``wcwidth`` (maintained with each Unicode release), the
same tables the line editor uses.
"""

from __future__ import annotations

import re

from wcwidth import wcwidth

#: What the sanitiser writes for one character (``^[``, ``\\377``, ``\\u202e``): a cut
#: inside one would show half a notation on each line, so each is wrapped as a unit.
_NOTATION = re.compile(r"\\u[0-9a-f]{4}|\\[0-7]{3}|\^[@-_?]")


def char_width(ch: str) -> int:
    """Columns taken by ``ch``: 2 for wide, 0 for combining and other zero-width characters."""
    return max(wcwidth(ch), 0)


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal, not its length: ``ls`` columns, ``help``'s list and
    the mailbox align CJK and emoji with it; ASCII, the usual case, costs no per-character call."""
    if text.isascii():
        return len(text)
    return sum(map(char_width, text))


def hard_wrap(text: str, width: int = 79) -> list[str]:
    """Pieces of at most ``width`` columns; no wide character or notation straddles a cut."""
    pieces: list[str] = []
    for line in text.split("\n"):
        marked = "\\" in line or "^" in line
        if line.isascii() and (len(line) <= width or not marked):
            if len(line) <= width:
                pieces.append(line)
            else:
                pieces.extend(line[i : i + width] for i in range(0, len(line), width))
            continue
        units = {m.start(): m.end() for m in _NOTATION.finditer(line)} if marked else {}
        start, used, i, end = 0, 0, 0, len(line)
        while i < end:
            after = units.get(i, i + 1)
            w = after - i if after - i > 1 else char_width(line[i])
            if used + w > width and i > start:
                pieces.append(line[start:i])
                start, used = i, 0
            used += w
            i = after
        pieces.append(line[start:])
    return pieces
