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

    @property
    def empty(self) -> bool:
        """Nothing collected: the editor's kept drawing may go out alone (``redraw_row``)."""
        return not self._parts

    def write(self, text: str) -> None:
        """Text at the cursor; empty text adds nothing, so callers need not check."""
        if text:
            self._parts.append(text)

    def newline(self) -> None:
        """A line break; the wire makes it what the client needs (CR LF for telnet)."""
        self._parts.append("\n")

    def up(self, rows: int) -> None:
        """Back to the first row of a line that wrapped, to draw it again from there."""
        if rows > 0:
            self._parts.append(f"\x1b[{rows}A")

    def column(self, col: int) -> None:
        """To column ``col`` (0-based) of the cursor's row."""
        self._parts.append(f"\r\x1b[{col}C" if col else "\r")

    def back(self, cols: int) -> None:
        """Left by ``cols``: cursor moves cost a few bytes, not a redraw of the line."""
        if cols > 0:
            self._parts.append(f"\x1b[{cols}D")

    def erase_right(self) -> None:
        """Erase to the end of the row, where a shorter line leaves old characters."""
        self._parts.append("\x1b[K")

    def erase_below(self) -> None:
        """From the cursor to the end of the screen."""
        self._parts.append("\x1b[J")

    def clear(self) -> None:
        """The whole screen blank, cursor home (^L), as a local shell does."""
        self._parts.append("\x1b[H\x1b[2J")

    def bell(self) -> None:
        """The terminal's bell: a refused key (no completion, a full line) is heard, not drawn."""
        self._parts.append("\x07")

    def take(self) -> str:
        """Everything collected, as one string, so the wire sends it in one write."""
        parts = self._parts
        if not parts:
            return ""
        text = "".join(parts)
        parts.clear()
        return text
