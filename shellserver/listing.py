"""ls's output: names in columns to the terminal width, or one long line each."""

from __future__ import annotations

import os
import stat
import time

from shellserver.wrap import display_width

SIX_MONTHS = 182 * 86400


def columns(names: list[str], width: int) -> str:
    """Fill columns top to bottom, as ``ls -C`` does, using as few rows as fit."""
    if not names:
        return ""
    widths = [display_width(n) for n in names]
    for rows in range(1, len(names) + 1):
        cols = -(-len(names) // rows)
        col_widths = [max(widths[c * rows : (c + 1) * rows]) for c in range(cols)]
        if sum(col_widths) + 2 * (cols - 1) <= width or rows == len(names):
            break
    lines = []
    for r in range(rows):
        cells = []
        for c in range(cols):
            i = c * rows + r
            if i < len(names):
                last = (c + 1) * rows + r >= len(names)
                pad = "" if last else " " * (col_widths[c] - widths[i] + 2)
                cells.append(names[i] + pad)
        lines.append("".join(cells))
    return "\n".join(lines) + "\n"


def long_line(name: str, st: os.stat_result, now: float) -> str:
    """``-rw------- 1234 Nov 25 00:31 name``: mode, size, modification time, name."""
    mtime = st.st_mtime
    fmt = "%b %d %H:%M" if abs(now - mtime) < SIX_MONTHS else "%b %d  %Y"
    kind = stat.filemode(st.st_mode)
    return f"{kind} {st.st_size:>9} {time.strftime(fmt, time.localtime(mtime))} {name}"
