"""Making and lifting bans, from a session or the control socket, on every node.

A ban is written to the store (the truth every node shares), put in this
node's in-memory :class:`~shellserver.ops.bans.BanList` at once, and announced
to the other nodes through the hub; each node then ends its own sessions the
ban covers (by user, by address or network, by the key they logged in with),
telling them who did it and why, as ``kick`` does, and its file transfers
(``shell/transfers.py``) that the ban covers. A node that missed an
announcement (Redis was away) catches up at its next periodic reload.

Every ban and unban goes through :meth:`Bans.audit`, the one place an admin
action of this module is recorded.
"""

from __future__ import annotations

from typing import Any

from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub.local import IHub, Message
from shellserver.ops.bans import (
    USER,
    BadBan,
    Ban,
    BanIndex,
    BanList,
    looks_like_duration,
    make_ban,
    parse_target,
)
from shellserver.shell.adminops import admin_action, origin_of
from shellserver.shell.transfers import Transfers
from shellserver.store.accounts import AccountDB, username_problem
from shellserver.store.audit import Ledger
from shellserver.store.bans import BanStore, load_index
from shellserver.text.sanitize import careful
from shellserver.text.timefmt import format_login_time

log = Logger()

#: The hub announcement kinds other nodes act on.
BANNED, UNBANNED = "ban", "unban"


def read_ban(words: list[str], by: str, now: float) -> Ban:
    """``TARGET [DURATION] [REASON...]`` as typed, made a ban; BadBan says what is wrong.

    The word after the target is the duration when it starts with a digit or is
    ``perm`` (``ban bob 5x spam`` is an error, not a reason "5x spam"); else the
    ban is permanent and the reason starts there.
    """
    if not words:
        raise BadBan("no target given")
    target, rest = words[0], words[1:]
    duration = None
    if rest and looks_like_duration(rest[0]):
        duration, rest = rest[0], rest[1:]
    check_target(target)
    return make_ban(target, duration, careful(" ".join(rest)), by, now)


def check_target(target: str) -> str:
    """The canonical target (``203.0.113.7/24`` is ``203.0.113.0/24``); a user name must be
    one a user could have."""
    kind, canonical = parse_target(target)
    if kind == USER:
        problem = username_problem(canonical)
        if problem is not None:
            raise BadBan(
                f"invalid target '{careful(target)}' (a user name, an address, "
                "a network such as 203.0.113.0/24, or a key fingerprint SHA256:...)"
            )
    return canonical


def kicked_notice(ban: Ban) -> Message:
    """What a session a new ban ends is told: the kick notice, naming the ban."""
    return Message.of(f"You have been logged out by {careful(ban.by)}: {ban.answer()}")


def bans_table(bans: list[Ban]) -> str:
    """``bans``' listing, the same in a session and from the CLI: target, by, when, until,
    reason; ``no bans`` when there are none."""
    if not bans:
        return "no bans\n"
    width = max(6, *(len(ban.target) for ban in bans))
    by_width = max(2, *(len(careful(ban.by)) for ban in bans))
    head = f"{'TARGET':<{width}}  {'BY':<{by_width}}  {'WHEN':<16}  {'UNTIL':<16}  REASON"
    rows = [head.rstrip()]
    for ban in bans:
        until = "perm" if ban.expires is None else format_login_time(ban.expires)
        row = (
            f"{ban.target:<{width}}  {careful(ban.by):<{by_width}}  "
            f"{format_login_time(ban.created):<16}  {until:<16}  {ban.reason}"
        )
        rows.append(row.rstrip())
    return "\n".join(rows) + "\n"


@define(eq=False)
class Bans:
    """The bans of this node: the store's, the in-memory list that admission and the login
    check read, and the other nodes told of each change."""

    clock: IReactorTime
    hub: IHub
    store: BanStore
    memory: BanList
    #: Where each ban and unban is recorded.
    ledger: Ledger
    #: This node's live file transfers: a ban ends those it covers, as it ends sessions.
    transfers: Transfers

    # -- admin actions -------------------------------------------------------------------

    async def ban(self, by: str, where: str, words: list[str]) -> Ban:
        """Store the ban, apply it here at once, tell the other nodes, end the sessions it
        covers. BadBan for bad words; TooManyBans when the store is full."""
        ban = read_ban(words, by, self.clock.seconds())
        await self.store.add(ban)
        self.memory.add(ban)
        self.hub.announce(BANNED, ban.to_fields())
        ended = self.end_here(ban)
        await self.audit(by, where, "ban", ban, sessions=ended)
        return ban

    async def unban(self, by: str, where: str, target: str) -> Ban | None:
        """Lift the ban of ``target``; the ban lifted, or None if there was none. BadBan for a
        target that cannot be one."""
        canonical = check_target(target)
        ban = await self.store.remove(canonical)
        self.memory.remove(canonical)
        if ban is None:
            return None
        self.hub.announce(UNBANNED, {"target": canonical})
        await self.audit(by, where, "unban", ban)
        return ban

    async def listing(self) -> list[Ban]:
        """The bans in force, oldest first (expired ones are pruned on the way)."""
        return await self.store.active(self.clock.seconds())

    async def audit(self, by: str, where: str, action: str, ban: Ban, **details: object) -> None:
        """The one call point of every ban and unban (who, from where, what, until when, why):
        the admin log, and one record in the audit ledger (an unban records what it lifted,
        without its end: nothing ends any more)."""
        admin_action(
            by,
            where,
            action,
            target=ban.target,
            kind=ban.kind,
            expires=ban.expires,
            reason=ban.reason,
            **details,
        )
        expires = ban.expires if action == "ban" else None
        reason = (ban.reason or None) if action == "ban" else None
        await self.ledger.record(by, origin_of(where), action, ban.target, reason, expires)

    # -- this node -----------------------------------------------------------------------

    def end_here(self, ban: Ban) -> int:
        """End this node's sessions and file transfers that ``ban`` covers, each told why;
        how many."""
        now = self.clock.seconds()
        if not ban.active(now):
            return 0
        notice: Message | None = None
        ended = 0
        for session in self.hub.local_sessions():
            if ban.matches(session.user, session.peer, session.key):
                notice = notice or kicked_notice(ban)
                self.hub.end_session(session, notice)
                ended += 1
        if len(self.transfers):
            ended += self.transfers.end_banned(ban, kicked_notice(ban).text)
        if ended:
            log.info(
                "ended {count} session(s) covered by the ban of {target}",
                event="ban_ended_sessions",
                count=ended,
                target=ban.target,
            )
        return ended

    def heard(self, kind: str, fields: dict[str, Any]) -> None:
        """Another node's ban or unban (``IHub.subscribe_announcements``): in effect here at
        once, then the list is read again from the store to be exact."""
        try:
            if kind == BANNED:
                ban = Ban.from_fields(fields)
                self.memory.add(ban)
                self.end_here(ban)
            elif kind == UNBANNED:
                self.memory.remove(str(fields["target"]))
            else:
                return
        except (ValueError, KeyError) as e:
            log.warn("ignored a malformed {kind} announcement: {error}", kind=kind, error=e)
            return
        self.reload()

    def reload(self) -> Deferred[None]:
        """Read the bans again from the store (another node's change, a missed announcement,
        the periodic refresh); built on the store's thread, swapped in here."""
        d: Deferred[Any] = self.store.index(self.clock.seconds())
        d.addCallback(self._loaded)
        d.addErrback(self._reload_failed)
        return d

    def _loaded(self, index: BanIndex) -> None:
        """Swap the loaded bans in; a ban this node did not know (made while it was cut off
        from the other nodes) ends the sessions it covers here too."""
        known = self.memory.index
        self.memory.replace(index)
        for ban in index.bans():
            if known.get(ban.target) != ban:
                self.end_here(ban)
        if index.skipped:
            log.warn("{count} malformed ban(s) in the store ignored", count=index.skipped)

    def _reload_failed(self, failure: Failure) -> None:
        log.warn(
            "cannot read the bans from the store, keeping those in memory: {error}",
            error=failure.getErrorMessage(),
        )

    def load_now(self, db: AccountDB) -> None:
        """At start-up, before the reactor runs: the bans in force, read directly."""
        self._loaded(load_index(db, self.clock.seconds()))

    def login_refusal(self, user: str, peer: str, key: str) -> str | None:
        """Why this login is refused by a ban, or None: the address (a ban made while the
        connection waited to log in), the user, or the key it logged in with."""
        now = self.clock.seconds()
        ban = self.memory.address(peer, now)
        if ban is not None:
            return ban.address_refusal()
        ban = self.memory.login(user, key, now)
        return None if ban is None else ban.login_refusal()
