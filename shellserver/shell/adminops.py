"""What an administrator can do, whether from a session or from the control socket.

Each operation logs who did it and from where (an operator must be able to answer
"who did this"), writes one record to the audit ledger (``admin.ledger.record``), and
goes through the hub, so online sessions see the effect: a kicked, locked or deleted
user is told and logged out, a muted one is refused on every node. A kick, a lock and a
deletion also end the user's file transfers (``shell/transfers.py``), here at once and on
the other nodes through the :data:`~shellserver.shell.transfers.END_TRANSFERS`
announcement.
"""

from __future__ import annotations

import os
import time

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from shellserver.files.homefs import Homes
from shellserver.hub.local import IHub, Message
from shellserver.ops.metrics import Metrics
from shellserver.ops.threads import Runner
from shellserver.shell import people
from shellserver.shell.locks import LOCKED, Locks
from shellserver.shell.mutes import Mutes
from shellserver.shell.transfers import END_TRANSFERS, Transfers
from shellserver.store.accounts import INITIAL_ADMIN, Account, AccountStore
from shellserver.store.audit import CLI, Ledger
from shellserver.store.mutes import MuteRecord
from shellserver.store.otp import OtpStore
from shellserver.text.sanitize import careful
from shellserver.text.wrap import hard_wrap

log = Logger()


def origin_of(where: str) -> str:
    """The ledger's "from" for an admin log's ``where``: the session's tty (``tel/3`` of
    ``tel/3 from 192.0.2.1``), or ``cli`` for the control socket (``control socket, pid 42``)."""
    if where.startswith("control"):
        return CLI
    return where.split(" ", 1)[0] or CLI


def admin_action(who: str, where: str, action: str, **details: object) -> None:
    """Every admin action is logged with who did it and from where, whichever side (a
    session, the control socket) it came from, so an operator can answer "who did this".

    Each detail is a field of its own (``twist --log-format json`` carries
    them), named in the format string too so the text log shows them.
    """
    shown = ", ".join(f"{key}={{{key}!r}}" for key in sorted(details))
    log.info(
        "admin {action} by {by} ({where})" + (": " + shown if shown else ""),
        event=action.replace(" ", "_"),
        action=action,
        by=who,
        where=where,
        **details,
    )


@frozen
class InitialPassword:
    """The file holding the first start's ``admin`` password: it must not outlive the
    password, or it would tell a stale secret (or a live one) to whoever reads the data dir."""

    #: ``<data>/initial-admin-password`` (gone already, once its password was changed).
    path: str
    run_io: Runner

    async def spent(self, name: str) -> None:
        """``name``'s password was changed, or the account deleted: if it is the first start's
        ``admin``, the file holding its first password now holds nothing worth keeping."""
        path = self.path
        if name != INITIAL_ADMIN:
            return
        try:
            removed: bool = await self.run_io(remove_if_there, path)
        except OSError as e:
            log.warn("cannot remove {path}: {error}", path=path, error=e)
            return
        if removed:
            log.info(
                "removed {path}: the password in it is no longer {user}'s",
                event="initial_password_removed",
                path=path,
                user=name,
            )


def remove_if_there(path: str) -> bool:
    """Remove ``path``; False if it was not there (another node, or the operator, was first)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


@frozen
class Admin:
    """What the admin operations act on, given by the assembly: the same object serves the
    session commands and the control socket, so both sides act and log alike."""

    hostname: str
    clock: IReactorTime
    hub: IHub
    store: AccountStore
    metrics: Metrics
    homes: Homes
    initial_password: InitialPassword
    #: Where every admin action is recorded (``ledger.record(actor, origin, action, ...)``).
    ledger: Ledger
    #: The mutes in force, in memory, refreshed on change.
    mutes: Mutes
    #: The second factor's records (``otp reset``).
    otp: OtpStore
    #: This node's live file transfers, ended with the user's sessions.
    transfers: Transfers
    #: The locked accounts, in memory (the personal pages withhold theirs).
    locks: Locks

    def end_transfers(self, user: str, notice: Message, why: str) -> int:
        """End ``user``'s file transfers here and tell every other node to end theirs; how many
        ended here (another node's are not counted: the announcement is not answered)."""
        text = notice.text
        self.hub.announce(END_TRANSFERS, {"user": user, "text": text, "why": why})
        return self.transfers.end_user(user, text, why)

    async def audit(
        self,
        by: str,
        where: str,
        action: str,
        target: str | None = None,
        reason: str | None = None,
        expires: float | None = None,
    ) -> None:
        """One record in the ledger for an action logged with :func:`admin_action`'s ``by``
        and ``where`` (the tty, or ``cli``, is read from ``where``). Never raises: the action
        is done by then."""
        await self.ledger.record(by, origin_of(where), action, target, reason, expires)

    async def account_created(self, account: Account, by: str | None, peer: str | None) -> None:
        """A new account gets its home at once (its first command may write a file), is
        counted when self-registered, and is logged with who made it from where."""
        await self.homes.create(account.name)
        if by is None:
            self.metrics.registered()
        log.info(
            "account {user} ({role}) created by {by} from {peer}",
            event="registration" if by is None else "account_created",
            user=account.name,
            role=account.role,
            by=by or "registration",
            peer=peer or "-",
        )


def broadcast_message(sender: str, hostname: str, tty: str, when: float, text: str) -> Message:
    """The util-linux wall layout, wrapped at 79 columns once for every recipient.

    Newlines in ``text`` (a multi-line wall from the CLI, a shutdown warning
    with the admin's reason) stay line breaks; everything else is sanitised.
    """
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(when))
    header = f"Broadcast message from {careful(sender)}@{hostname} ({tty}) ({stamp}):"
    body = [piece for line in text.split("\n") for piece in hard_wrap(careful(line), 79)]
    return Message.of("\n".join([header, "", *body]) + "\n")


async def wall(admin: Admin, by: str, tty: str, where: str, text: str) -> int:
    """Tell every session on every node; the number reached is what ``wall`` reports."""
    message = broadcast_message(by, admin.hostname, tty, admin.clock.seconds(), text)
    reached, dropped = await admin.hub.broadcast(message)
    admin.metrics.messages("wall", reached, dropped)
    admin_action(by, where, "wall", text=text, reached=reached)
    await admin.audit(by, where, "wall", reason=text)
    return reached


async def kick(admin: Admin, by: str, where: str, user: str, reason: str) -> int:
    """Log ``user`` out everywhere, telling them who did it and why; the sessions ended."""
    notice = Message.of(f"You have been logged out by {careful(by)}: {careful(reason)}")
    count = await admin.hub.logout_user(user, notice)
    count += admin.end_transfers(user, notice, f"kicked by {by}")
    admin_action(by, where, "kick", user=user, reason=reason, sessions=count)
    if count:  # the ledger keeps what was done: a kick of no one ended nothing
        await admin.audit(by, where, "kick", user, reason)
    return count


async def add_user(
    admin: Admin, by: str, where: str, name: str, password: str, role: str
) -> Account:
    """Raises UserExists."""
    account = await admin.store.create_user(name, password, role)
    await admin.account_created(account, by=by, peer=where)
    admin_action(by, where, "useradd", user=name, role=role)
    await admin.audit(by, where, "useradd", name, "role admin" if role == "admin" else None)
    return account


async def set_password(admin: Admin, by: str, where: str, name: str, password: str) -> None:
    """Raises NoSuchUser."""
    await admin.store.set_password(name, password)
    admin_action(by, where, "passwd", user=name)
    await admin.audit(by, where, "passwd", name)
    await admin.initial_password.spent(name)


async def delete_user(admin: Admin, by: str, where: str, name: str) -> None:
    """Raises NoSuchUser, or LastAdmin for the last administrator who can log in (the store
    decides, in the same transaction as the delete). The user's sessions are told and ended.

    All or nothing (docs/files.md): the home is moved aside first, put back if
    the account cannot be deleted, and removed off the reactor afterwards.
    """
    homes = admin.homes
    aside = await homes.set_aside(name)
    try:
        await admin.store.delete(name)
    except BaseException:
        await homes.restore(name, aside)
        raise
    admin_action(by, where, "userdel", user=name)
    await admin.audit(by, where, "userdel", name)
    await admin.initial_password.spent(name)
    deleted = Message.of(f"Your account has been deleted by {careful(by)}.")
    await admin.hub.logout_user(name, deleted)
    admin.end_transfers(name, deleted, f"account deleted by {by}")
    admin.locks.set(name, False)
    # The store forgot the name (ignore lists, mute, unread messages it sent) in the
    # deletion; the running sessions here and on every other node forget it now.
    people.forget_user(admin.hub, name)
    admin.mutes.forget(name)
    admin.hub.announce(people.USER_DELETED, {"user": name})
    await homes.purge(aside)


async def set_locked(admin: Admin, by: str, where: str, name: str, locked: bool) -> None:
    """Raises NoSuchUser, or LastAdmin when locking the last administrator who can log in.
    Locking also ends the user's sessions."""
    await admin.store.set_locked(name, locked)
    admin.locks.set(name, locked)
    admin.hub.announce(LOCKED, {"user": name, "locked": locked})
    if locked:
        notice = Message.of(f"Your account has been locked by {careful(by)}.")
        await admin.hub.logout_user(name, notice)
        admin.end_transfers(name, notice, f"account locked by {by}")
    action = "lock" if locked else "unlock"
    admin_action(by, where, action, user=name)
    await admin.audit(by, where, action, name)


async def mute(
    admin: Admin, by: str, where: str, user: str, seconds: float, reason: str | None
) -> MuteRecord:
    """Raises NoSuchUser. The user keeps reading; what they send is refused until the mute
    ends, on every node (``Mutes``)."""
    until = admin.clock.seconds() + seconds
    record = await admin.mutes.mute(user, until, reason, by)
    admin_action(by, where, "mute", user=user, reason=reason or "", until=until)
    await admin.audit(by, where, "mute", user, reason, until)
    return record


async def unmute(admin: Admin, by: str, where: str, user: str) -> bool:
    """False when ``user`` was not muted (nothing is recorded then: nothing was done)."""
    ended = await admin.mutes.unmute(user)
    if ended:
        admin_action(by, where, "unmute", user=user)
        await admin.audit(by, where, "unmute", user)
    return ended


async def reset_otp(admin: Admin, by: str, where: str, name: str) -> bool:
    """``otp reset USER``: remove a user's second factor (a lost phone and lost recovery
    codes); False when there was none. Logged through :func:`admin_action` and recorded in
    the audit ledger, as every admin action is."""
    removed = await admin.otp.disable(name)
    if removed:
        admin_action(by, where, "otp reset", user=name)
        await admin.audit(by, where, "otp reset", name)
    return removed
