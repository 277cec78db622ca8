"""Per-address penalties for connections that hold a login slot and make no progress.

OpenSSH's ``PerSourcePenalties`` is the model: each connection of an address
that is closed by the server without having logged in (it timed out at the
login grace, or was closed to make room while it had sent nothing useful)
adds ``stall`` seconds to the address's penalty, up to ``most``. While more
than ``least`` seconds of penalty are left, the address's new connections are
refused at once, before they cost a slot, a timer or a banner. The penalty
runs down in real time, so an address that stops stalling is let in again,
and one that goes on stalling is refused for longer and longer.

A person who leaves one prompt open until it times out gets a few seconds of
penalty, well under ``least``: only an address that keeps several
connections stalled is refused.
"""

from __future__ import annotations

from attrs import define, field

#: Seconds of penalty per connection closed without progress (OpenSSH's grace-exceeded: 20).
STALL = 5.0
#: Penalty left above which new connections are refused (OpenSSH's min: 15).
LEAST = 15.0
#: The most penalty an address can have (OpenSSH's max: 600).
MOST = 600.0
#: Addresses remembered; past that the one penalised first is forgotten (OpenSSH: 65536).
MAX_ADDRESSES = 65_536


@define
class Penalties:
    """A deadline per address, not a count: it runs down by itself with no timer. Admission
    owns it, feeds it when it closes a stalled connection and asks it before counting one."""

    stall: float = STALL
    least: float = LEAST
    most: float = MOST
    max_addresses: int = MAX_ADDRESSES
    #: When each penalised address's penalty ends.
    _until: dict[str, float] = field(factory=dict)

    def __len__(self) -> int:
        return len(self._until)

    def refused(self, peer: str, now: float) -> bool:
        """Is ``peer`` to be refused at once now?"""
        until = self._until.get(peer)
        if until is None:
            return False
        if until <= now:
            del self._until[peer]
            return False
        return until - now > self.least

    def stalled(self, peer: str, now: float) -> bool:
        """A connection of ``peer`` was closed without progress; True when this penalty
        makes the address refused (for a log line)."""
        was = self.refused(peer, now)
        until = min(max(self._until.pop(peer, now), now) + self.stall, now + self.most)
        while self._until and len(self._until) >= self.max_addresses:
            del self._until[next(iter(self._until))]
        self._until[peer] = until
        return not was and until - now > self.least

    def left(self, peer: str, now: float) -> float:
        """Seconds of penalty ``peer`` has left (0 when none)."""
        return max(0.0, self._until.get(peer, now) - now)
