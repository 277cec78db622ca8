"""A scheduled shutdown: warnings on systemd's cadence, logins refused at the end, a clean stop.

The schedule lives here; the stop itself is the service's (``stop`` is
``reactor.stop`` in production), so SIGTERM and a countdown reaching zero end
the same way: a final notice to every session, then the connections close.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from shellserver.hub.local import IHub
from shellserver.ops.metrics import Metrics
from shellserver.shell.adminops import admin_action, broadcast_message
from shellserver.text.sanitize import careful

log = Logger()

#: Minutes left at which everyone is warned (systemd's cadence).
CADENCE = (180, 150, 130, 100, 70, 55, 40, 25, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
NOLOGIN_MINUTES = 5


def _stamp(when: float) -> str:
    return time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(when))


#: The one form of the command, in a session and (with ``shellserver`` in front) from the CLI.
USAGE = "shutdown [+MIN|now|HH:MM] [TEXT...] | shutdown -c"
_CLOCK = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def parse_when(text: str, now: float) -> float | None:
    """Minutes from ``now`` until the shutdown ``text`` asks for, or None.

    ``now`` is 0, ``+MIN`` is MIN, ``HH:MM`` is the next such local time
    (today, or tomorrow once it has passed), as shutdown(8) takes them.
    Anything else, a bare ``5`` or ``-5`` included, is None: taken as a text
    it would broadcast "5" and stop the server in a minute.
    """
    if text == "now":
        return 0
    if text.startswith("+"):
        digits = text[1:]
        if digits.isascii() and digits.isdigit() and len(digits) <= 6:
            return int(digits)
        return None
    clock = _CLOCK.fullmatch(text)
    if clock is None:
        return None
    today = datetime.fromtimestamp(now).replace(
        hour=int(clock.group(1)), minute=int(clock.group(2)), second=0, microsecond=0
    )
    target = today if today.timestamp() > now else today + timedelta(days=1)
    return (target.timestamp() - now) / 60


def invalid_time(text: str) -> str:
    """shutdown(8)'s wording for a time it cannot read."""
    return f"invalid time '{careful(text)}'"


@define(eq=False)
class Shutdown:
    """The one schedule of the server (a session's ``shutdown``, the CLI's, another node's):
    built by the assembly with the hub it warns through and the stop it ends with, so it
    exists from the start and every login can ask it whether logins are still taken."""

    clock: IReactorTime
    hub: IHub
    metrics: Metrics
    #: The host name in the wall header of each warning.
    hostname: str
    stop: Callable[[], None]
    at: float | None = None
    text: str = ""
    by: str = ""
    tty: str = ""
    final_sent: bool = False
    #: The last schedule was ``shutdown now`` (the stop's log line says so).
    immediate: bool = False
    _timer: IDelayedCall | None = field(default=None)

    def minutes_left(self) -> int:
        """Minutes to the shutdown, rounded as the notices say them."""
        if self.at is None:
            return 0
        return max(0, round((self.at - self.clock.seconds()) / 60))

    def schedule(
        self, minutes: float, text: str, by: str, tty: str, where: str, share: bool = True
    ) -> float:
        """Replace any earlier schedule; warn everyone now. Returns the shutdown time.

        ``minutes`` is whole for ``+MIN``, a fraction for ``HH:MM`` (``parse_when``).
        Clustered, every node runs the same schedule (``share``: tell the others), and
        each warns its own sessions, so everyone is warned once.
        """
        self._cancel_timer()
        now = self.clock.seconds()
        self.at, self.text, self.by, self.tty = now + minutes * 60, text, by, tty
        self.immediate = minutes == 0
        logged = int(minutes) if float(minutes).is_integer() else round(minutes, 1)
        admin_action(by, where, "shutdown", minutes=logged, text=text)
        if share:
            fields = {"minutes": minutes, "text": text, "by": by, "tty": tty}
            self.hub.announce("shutdown", fields)
        if minutes == 0:
            self._zero()
        else:
            self._warn(max(1, math.ceil(minutes - 1e-9)))
            self._arm()
        return self.at

    def cancel(self, by: str, tty: str, where: str, share: bool = True) -> bool:
        """Cancel and tell everyone; False when nothing was scheduled (the caller says so)."""
        if share:
            self.hub.announce("cancel", {"by": by, "tty": tty})
        if self.at is None:
            return False
        self._cancel_timer()
        self.at, self.text, self.by, self.tty = None, "", "", ""
        admin_action(by, where, "shutdown cancel")
        self._broadcast(by, tty, "The system shutdown has been cancelled.")
        return True

    def login_refusal(self) -> str | None:
        """From five minutes before the end, new logins are refused (systemd's nologin)."""
        if self.final_sent or (
            self.at is not None and self.at - self.clock.seconds() <= NOLOGIN_MINUTES * 60
        ):
            return "The system is going down shortly; new logins are refused. Try again later."
        return None

    def login_notice(self) -> str:
        """What each login is told while a shutdown is scheduled."""
        if self.at is None:
            return ""
        left = self.minutes_left()
        extra = f": {careful(self.text)}" if self.text else ""
        return (
            f"The system is going down at {_stamp(self.at)} "
            f"(in {left} minute{'s' if left != 1 else ''}){extra}\n"
        )

    def final_notice(self) -> None:
        """Tell everyone once, whether the countdown ended or SIGTERM came."""
        if self.final_sent:
            return
        self.final_sent = True
        if not self.by:
            why = "signal or service stop"
        elif self.immediate:
            why = f"shutdown now by {self.by}"
        else:
            why = f"the shutdown {self.by} scheduled is due"
        log.info("going down now ({why})", event="stopping", why=why, by=self.by or None)
        text = "The system is going down NOW!"
        if self.text:
            text += "\n" + self.text
        self._broadcast(self.by or "root", self.tty or "console", text)

    # -- internals -------------------------------------------------------------

    def _warn(self, minutes: int) -> None:
        # Short enough (about 72 columns) that wall's hard cut at 79 never splits a word.
        assert self.at is not None
        text = (
            f"The system is going down at {_stamp(self.at)} "
            f"(in {minutes} minute{'s' if minutes != 1 else ''})!"
        )
        if self.text:
            text += "\n" + self.text
        self._broadcast(self.by, self.tty, text)

    def _broadcast(self, by: str, tty: str, text: str) -> None:
        message = broadcast_message(by, self.hostname, tty, self.clock.seconds(), text)
        try:
            counts = self.hub.broadcast_here(message)
        except Exception:
            log.failure("shutdown notice failed")
        else:
            self.metrics.messages("wall", *counts)

    def _arm(self) -> None:
        """Sleep until the next cadence point, or zero."""
        assert self.at is not None
        left = self.at - self.clock.seconds()
        upcoming = [m for m in CADENCE if m * 60 < left - 0.5]
        if upcoming:
            minutes = upcoming[0]
            self._timer = self.clock.callLater(left - minutes * 60, self._tick, minutes)
        else:
            self._timer = self.clock.callLater(max(0.0, left), self._zero)

    def _tick(self, minutes: int) -> None:
        self._timer = None
        self._warn(minutes)
        self._arm()

    def _zero(self) -> None:
        self._timer = None
        self.final_notice()
        self.stop()

    def heard(self, kind: str, fields: dict[str, Any]) -> None:
        """Another node's ``schedule`` or ``cancel`` (``IHub.subscribe_announcements``)."""
        where = f"node {fields.get('origin', '?')}"
        by, tty = str(fields.get("by", "root")), str(fields.get("tty", "console"))
        if kind == "shutdown":
            minutes = float(fields["minutes"])
            self.schedule(minutes, str(fields.get("text", "")), by, tty, where, share=False)
        elif kind == "cancel":
            self.cancel(by, tty, where, share=False)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
