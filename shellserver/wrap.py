"""Column wrapping as util-linux wall does it: a hard cut at the column, not a word wrap.

Display widths come from ``wcwidth`` (maintained with each Unicode release), the
same tables the line editor uses.
"""

from __future__ import annotations

from wcwidth import wcwidth


def char_width(ch: str) -> int:
    """Columns taken by ``ch``: 2 for wide, 0 for combining and other zero-width characters."""
    return max(wcwidth(ch), 0)


def display_width(text: str) -> int:
    if text.isascii():
        return len(text)
    return sum(map(char_width, text))


def hard_wrap(text: str, width: int = 79) -> list[str]:
    """Pieces of at most ``width`` columns; a wide character never straddles a cut."""
    pieces: list[str] = []
    for line in text.split("\n"):
        if line.isascii():
            if len(line) <= width:
                pieces.append(line)
            else:
                pieces.extend(line[i : i + width] for i in range(0, len(line), width))
            continue
        start, used = 0, 0
        for i, ch in enumerate(line):
            w = char_width(ch)
            if used + w > width:
                pieces.append(line[start:i])
                start, used = i, 0
            used += w
        pieces.append(line[start:])
    return pieces
