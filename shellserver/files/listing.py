"""ls's output: names in columns to the terminal width, or one long line each."""

from __future__ import annotations

import os
import stat
import time

from shellserver.text.wrap import display_width

SIX_MONTHS = 182 * 86400


def columns(names: list[str], width: int) -> str:
    """Fill columns top to bottom, as ``ls -C`` does: the most columns that fit the width.

    Like GNU ls, each candidate column count is tried from the most that
    could fit, and a candidate is dropped as soon as its columns so far are
    too wide, so a big directory costs little more than one pass.
    """
    if not names:
        return ""
    n = len(names)
    widths = [display_width(name) for name in names]
    rows, col_widths = n, [max(widths)]
    for cols in range(max(1, min(n, (width + 2) // 3)), 1, -1):
        r = -(-n // cols)
        if -(-n // r) != cols:
            continue  # the same layout as a smaller column count
        total, found = -2, []
        for c in range(cols):
            w = max(widths[c * r : (c + 1) * r])
            total += w + 2
            if total > width:
                break
            found.append(w)
        else:
            rows, col_widths = r, found
            break
    cols = len(col_widths)
    lines = []
    for r in range(rows):
        cells = []
        for c in range(cols):
            i = c * rows + r
            if i < n:
                last = (c + 1) * rows + r >= n
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
