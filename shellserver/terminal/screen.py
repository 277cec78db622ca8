"""Screen operations (move, erase, write) as the text a VT100-like terminal understands.

The editor speaks only these operations; the terminal sends what they add up
to through its wire in one piece. ``\\n`` is a newline: the wire turns it into
what the client needs (CR LF for telnet).
"""

from __future__ import annotations


class Screen:
    """Collects operations; :meth:`take` returns them as one string."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> None:
        if text:
            self._parts.append(text)

    def newline(self) -> None:
        self._parts.append("\n")

    def up(self, rows: int) -> None:
        if rows > 0:
            self._parts.append(f"\x1b[{rows}A")

    def column(self, col: int) -> None:
        """To column ``col`` (0-based) of the cursor's row."""
        self._parts.append(f"\r\x1b[{col}C" if col else "\r")

    def back(self, cols: int) -> None:
        if cols > 0:
            self._parts.append(f"\x1b[{cols}D")

    def erase_right(self) -> None:
        self._parts.append("\x1b[K")

    def erase_below(self) -> None:
        """From the cursor to the end of the screen."""
        self._parts.append("\x1b[J")

    def clear(self) -> None:
        self._parts.append("\x1b[H\x1b[2J")

    def bell(self) -> None:
        self._parts.append("\x07")

    def take(self) -> str:
        parts = self._parts
        if not parts:
            return ""
        text = "".join(parts)
        parts.clear()
        return text
