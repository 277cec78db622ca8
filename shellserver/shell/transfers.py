"""This node's live file transfers (SFTP channels), ended by the same actions that end sessions.

A file transfer is not a hub session: it has no terminal to show a message
in, takes no ``write`` or ``wall``, and is not in ``who`` (as OpenSSH's
``sftp`` makes no utmp entry). But a kick, a lock, a deletion, a ban, a
shutdown or the idle timeout must end it as surely as a shell. So each node
keeps its own transfers here, and the code paths that end sessions consult
this registry too:

- ``kick``, ``lock`` and ``userdel`` (``shell/adminops.py``) end the user's
  transfers here and announce :data:`END_TRANSFERS` to the other nodes, whose
  :meth:`Transfers.heard` ends theirs;
- a ban (``shell/bans.py``) ends, on every node that hears of it, the
  transfers it covers: by user, by the peer's address or network, by the key
  the connection logged in with;
- the service's stop ends them all, and its idle scan ends those that took no
  request for ``--idle-timeout``.

Ending one tells the client why on the channel's stderr (OpenSSH's ``sftp``
prints it), closes the channel, and closes the SSH connection when no other
channel of it is open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from attrs import define, field
from twisted.logger import Logger

from shellserver.ops.bans import Ban

log = Logger()

#: The announcement that ends a user's transfers on every other node: ``{"user", "text"}``.
END_TRANSFERS = "end_transfers"


class Transfer(Protocol):
    """One live file-transfer channel, as the registry sees it (``wires/ssh/sftp.py``'s
    ``SFTPLink`` provides it)."""

    @property
    def user(self) -> str:
        """The account it logged in as."""

    @property
    def peer(self) -> str:
        """The client's address, for address and network bans."""

    @property
    def key(self) -> str:
        """The fingerprint of the key it logged in with, "" for a password (key bans)."""

    @property
    def last_active(self) -> float:
        """When it last took a request: the idle timeout counts from it."""

    def end(self, text: str, why: str) -> None:
        """Tell the client ``text``, close the channel (and the connection when it was the
        only channel), log ``why``; it leaves the registry when its channel is gone."""


@define(eq=False)
class Transfers:
    """The live file transfers of this node, by user."""

    _by_user: dict[str, list[Transfer]] = field(init=False, factory=dict)

    def __len__(self) -> int:
        return sum(len(mine) for mine in self._by_user.values())

    def __iter__(self) -> Iterator[Transfer]:
        return iter([t for mine in self._by_user.values() for t in mine])

    def add(self, transfer: Transfer) -> None:
        """A transfer was let in (after the login's refusals)."""
        self._by_user.setdefault(transfer.user, []).append(transfer)

    def discard(self, transfer: Transfer) -> None:
        """Its channel is gone (twice is harmless)."""
        mine = self._by_user.get(transfer.user)
        if mine is None or transfer not in mine:
            return
        mine.remove(transfer)
        if not mine:
            del self._by_user[transfer.user]

    def of(self, user: str) -> list[Transfer]:
        """``user``'s transfers here (a copy)."""
        return list(self._by_user.get(user, ()))

    def end_user(self, user: str, text: str, why: str) -> int:
        """End ``user``'s transfers here (kick, lock, deletion); how many."""
        return self._end(self.of(user), text, why)

    def end_banned(self, ban: Ban, text: str) -> int:
        """End the transfers ``ban`` covers here; how many."""
        covered = [t for t in self if ban.matches(t.user, t.peer, t.key)]
        return self._end(covered, text, f"banned ({ban.target})")

    def end_all(self, text: str, why: str) -> int:
        """The service stops: every transfer here ends."""
        return self._end(list(self), text, why)

    def end_idle(self, now: float, timeout: float, text: Callable[[], str]) -> int:
        """End those that took no request for ``timeout`` seconds (none when it is 0)."""
        if timeout <= 0:
            return 0
        idle = [t for t in self if now - t.last_active >= timeout]
        return self._end(idle, text() if idle else "", "idle")

    def heard(self, kind: str, fields: dict[str, Any]) -> None:
        """Another node's kick, lock or deletion (``IHub.subscribe_announcements``): the user's
        transfers here end too."""
        if kind != END_TRANSFERS:
            return
        user, text = fields.get("user"), fields.get("text")
        if not isinstance(user, str) or not isinstance(text, str):
            log.warn("ignored a malformed {kind} announcement", kind=kind)
            return
        why = fields.get("why")
        self.end_user(user, text, why if isinstance(why, str) else "ended on another node")

    def _end(self, transfers: list[Transfer], text: str, why: str) -> int:
        for transfer in transfers:
            self.discard(transfer)
            transfer.end(text, why)
        return len(transfers)
