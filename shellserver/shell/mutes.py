"""The mutes in force, in memory on every node: checking one on the ``write`` path is a dict
lookup, never a store round trip.

The table is loaded from the store at start and changed at once by a mute, an unmute or a
deletion made on this node; the other nodes hear of the change through the hub's
announcements. An announcement lost while the cluster link is down is made good by reading
the store again every :data:`REFRESH` seconds (the service's timer calls :meth:`refresh`).
A mute ends by itself: an expired entry is dropped when it is next looked at.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from shellserver.hub.local import IHub
from shellserver.shell.people import USER_DELETED
from shellserver.store.accounts import AccountStore
from shellserver.store.mutes import MuteRecord, active_mutes, clear_mute, set_mute
from shellserver.text.durations import format_until
from shellserver.text.sanitize import careful

log = Logger()

#: Seconds after which the table is read again from the store (announcements are at most once).
REFRESH = 60.0

# The announcements between nodes.
MUTED = "mute"
UNMUTED = "unmute"


def muted_text(mute: MuteRecord, now: float) -> str:
    """``you are muted until 14:32 (spam)``: what a muted sender is told, after the command's
    name (``write: ``, ``say: ``, ``topic: ``)."""
    reason = f" ({careful(mute.reason)})" if mute.reason else ""
    return f"you are muted until {format_until(mute.until, now)}{reason}"


@define(eq=False)
class Mutes:
    """Every mute in force in the cluster, as this node knows it."""

    store: AccountStore
    hub: IHub
    clock: IReactorTime
    _table: dict[str, MuteRecord] = field(init=False, factory=dict)
    _loading: bool = field(init=False, default=False)
    #: Changes made while a read of the store is under way, put back on top of what it
    #: returns (the read may have been taken before them).
    _pending: dict[str, MuteRecord | None] = field(init=False, factory=dict)

    def of(self, user: str, now: float) -> MuteRecord | None:
        """``user``'s mute if one is in force: the check every message-sending command makes."""
        mute = self._table.get(user)
        if mute is None:
            return None
        if mute.until <= now:
            self._table.pop(user, None)
            return None
        return mute

    def refresh(self) -> None:
        """Read the store's mutes in the background (at start, then every :data:`REFRESH`
        seconds); a read still under way is not doubled."""
        if self._loading:
            return
        self._loading = True
        now = self.clock.seconds()
        d = self.store.run_db(active_mutes, self.store.db, now)
        d.addCallbacks(self._loaded_from_store, self._load_failed)

    def _loaded_from_store(self, found: list[MuteRecord]) -> None:
        self._loading = False
        table = {m.name: m for m in found}
        for user, change in self._pending.items():
            if change is None:
                table.pop(user, None)
            else:
                table[user] = change
        self._pending.clear()
        self._table = table

    def _load_failed(self, failure: Any) -> None:
        """The table stays as it was; the next refresh tries again."""
        self._loading = False
        self._pending.clear()
        log.warn("cannot read the mutes from the store: {error}", error=failure.value)

    async def mute(self, user: str, until: float, reason: str | None, by: str) -> MuteRecord:
        """Kept in the store (NoSuchUser for a name with no account), then in force here at
        once and on the other nodes as soon as they hear of it."""
        now = self.clock.seconds()
        record: MuteRecord = await self.store.run_db(
            set_mute, self.store.db, user, until, reason, by, now
        )
        self._set(user, record)
        fields = {"user": user, "until": until, "reason": reason, "by": by}
        self.hub.announce(MUTED, fields)
        return record

    async def unmute(self, user: str) -> bool:
        """False when no mute was in force (in the store, which every node shares)."""
        ended: bool = await self.store.run_db(
            clear_mute, self.store.db, user, self.clock.seconds()
        )
        self.forget(user)
        self.hub.announce(UNMUTED, {"user": user})
        return ended

    def forget(self, user: str) -> None:
        """``user`` is no longer muted here (unmuted, or the account deleted)."""
        self._set(user, None)

    def _set(self, user: str, mute: MuteRecord | None) -> None:
        if mute is None:
            self._table.pop(user, None)
        else:
            self._table[user] = mute
        if self._loading:
            self._pending[user] = mute

    def heard(self, kind: str, fields: dict[str, Any]) -> None:
        """Another node muted, unmuted or deleted someone (``IHub.subscribe_announcements``)."""
        if kind == MUTED:
            reason = fields.get("reason")
            user = str(fields["user"])
            by = str(fields.get("by", ""))
            text = None if reason is None else str(reason)
            self._set(user, MuteRecord(user, float(fields["until"]), text, by))
        elif kind in (UNMUTED, USER_DELETED):
            self.forget(str(fields["user"]))
