"""How times and durations read on a Unix box: login stamps, who's idle column, uptime."""

from __future__ import annotations

import time


def format_login_time(when: float) -> str:
    """A login stamp as Unix tools print it, in local time ("Mon Dec 07 18:27"): the "Last
    login" line, finger, last and saved messages share it, so every listing reads alike."""
    return time.strftime("%a %b %d %H:%M", time.localtime(when))


def format_idle(seconds: float) -> str:
    """who(1)'s idle column: "." under a minute, H:MM under a day, then "old"."""
    if seconds < 60:
        return "."
    if seconds >= 86400:
        return "old"
    minutes = int(seconds // 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def format_uptime(seconds: float) -> str:
    """procps style: "5 min", " 2:01", "3 days,  2:01"."""
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    clock = f"{hours:2d}:{minutes:02d}" if hours else f"{minutes} min"
    if days:
        return f"{days} day{'s' if days != 1 else ''}, {clock}"
    return clock
