"""What an administrator can do, whether from a session or from the control socket.

Each operation logs who did it and from where (SPEC §6) and goes through the
hub, so online sessions see the effect: a kicked, locked or deleted user is
told and logged out.
"""

from __future__ import annotations

import time
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from shellserver.app.config import Config
from shellserver.files.homefs import Homes
from shellserver.hub.local import IHub, Message
from shellserver.ops.metrics import Metrics
from shellserver.store.accounts import Account, AccountStore
from shellserver.text.sanitize import careful
from shellserver.text.wrap import hard_wrap


class AdminServices(Protocol):
    """What the admin operations use of the running server (``Server`` provides it)."""

    config: Config
    clock: IReactorTime
    hub: IHub
    store: AccountStore
    metrics: Metrics
    homes: Homes | None

    def admin_action(self, who: str, where: str, action: str, **details: object) -> None: ...

    async def account_created(
        self, account: Account, by: str | None, peer: str | None
    ) -> None: ...

    async def initial_password_spent(self, name: str) -> None: ...


def broadcast_message(sender: str, hostname: str, tty: str, when: float, text: str) -> Message:
    """The util-linux wall layout, wrapped at 79 columns once for every recipient.

    Newlines in ``text`` (a multi-line wall from the CLI, a shutdown warning
    with the admin's reason) stay line breaks; everything else is sanitised.
    """
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(when))
    header = f"Broadcast message from {careful(sender)}@{hostname} ({tty}) ({stamp}):"
    body = [piece for line in text.split("\n") for piece in hard_wrap(careful(line), 79)]
    return Message.of("\n".join([header, "", *body]) + "\n")


async def wall(server: AdminServices, by: str, tty: str, where: str, text: str) -> int:
    message = broadcast_message(by, server.config.hostname, tty, server.clock.seconds(), text)
    reached, dropped = await server.hub.broadcast(message)
    server.metrics.messages("wall", reached, dropped)
    server.admin_action(by, where, "wall", text=text, reached=reached)
    return reached


async def kick(server: AdminServices, by: str, where: str, user: str, reason: str) -> int:
    notice = Message.of(f"You have been logged out by {careful(by)}: {careful(reason)}")
    count = await server.hub.logout_user(user, notice)
    server.admin_action(by, where, "kick", user=user, reason=reason, sessions=count)
    return count


async def add_user(
    server: AdminServices, by: str, where: str, name: str, password: str, role: str
) -> Account:
    """Raises UserExists."""
    account = await server.store.create_user(name, password, role)
    await server.account_created(account, by=by, peer=where)
    server.admin_action(by, where, "useradd", user=name, role=role)
    return account


async def set_password(
    server: AdminServices, by: str, where: str, name: str, password: str
) -> None:
    """Raises NoSuchUser."""
    await server.store.set_password(name, password)
    server.admin_action(by, where, "passwd", user=name)
    await server.initial_password_spent(name)


async def delete_user(server: AdminServices, by: str, where: str, name: str) -> None:
    """Raises NoSuchUser, or LastAdmin for the last administrator who can log in (the store
    decides, in the same transaction as the delete). The user's sessions are told and ended.

    All or nothing (docs/files.md): the home is moved aside first, put back if
    the account cannot be deleted, and removed off the reactor afterwards.
    """
    homes = server.homes
    aside = await homes.set_aside(name) if homes is not None else None
    try:
        await server.store.delete(name)
    except BaseException:
        if homes is not None:
            await homes.restore(name, aside)
        raise
    server.admin_action(by, where, "userdel", user=name)
    await server.initial_password_spent(name)
    await server.hub.logout_user(
        name, Message.of(f"Your account has been deleted by {careful(by)}.")
    )
    if homes is not None:
        await homes.purge(aside)


async def set_locked(server: AdminServices, by: str, where: str, name: str, locked: bool) -> None:
    """Raises NoSuchUser, or LastAdmin when locking the last administrator who can log in.
    Locking also ends the user's sessions."""
    await server.store.set_locked(name, locked)
    if locked:
        await server.hub.logout_user(
            name, Message.of(f"Your account has been locked by {careful(by)}.")
        )
    server.admin_action(by, where, "lock" if locked else "unlock", user=name)
