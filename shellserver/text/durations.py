"""Durations as operators type them (``90s``, ``30m``, ``12h``, ``7d``) and the end of one as
a user reads it (``14:32``, or ``Thu Dec 10 14:02`` when it is not today)."""

from __future__ import annotations

import re
import time

_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest duration taken: a typo such as ``7000000d`` is refused, not kept for ever.
MAX_DURATION = 3650 * 86400
#: What a duration argument may look like, for usage and error lines.
DURATION_FORMS = "90s, 30m, 12h or 7d"


def parse_duration(text: str) -> float | None:
    """Seconds from ``90s``/``30m``/``12h``/``7d``; None for anything else (a bare number too:
    ``mute bob 10`` could mean seconds or minutes, so it is asked again rather than guessed)."""
    m = _DURATION.fullmatch(text)
    if m is None:
        return None
    seconds = int(m.group(1)) * _UNIT[m.group(2)]
    return float(seconds) if seconds <= MAX_DURATION else None


def format_until(when: float, now: float) -> str:
    """``14:32`` when ``when`` is later today (all the reader needs), else the day as well
    (``Thu Dec 10 14:02``), so a mute that ends tomorrow is never read as ending today."""
    end, today = time.localtime(when), time.localtime(now)
    if end[:3] == today[:3]:
        return time.strftime("%H:%M", end)
    return time.strftime("%a %b %d %H:%M", end)
