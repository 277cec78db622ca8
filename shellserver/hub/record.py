"""What the hub tells about a session: plain, serialisable fields, never a live object.

A clustered hub (nodes sharing Redis) learns about another node's sessions as records in
Redis; the in-memory hub hands out its own ``Session`` objects, which carry the
same fields. Commands see both only through :class:`SessionInfo`, so they can
read who is where but cannot reach into another session's terminal: to act on
one they ask the hub, which knows whether it is local.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Protocol

from attrs import frozen


class SessionInfo(Protocol):
    """The fields ``who``, ``write``, ``finger`` and the control socket read."""

    @property
    def node(self) -> str:
        """The node the session lives on ("" unclustered): ``who`` shows it to admins and a
        delivery goes there."""

    @property
    def id(self) -> int:
        """The session's id on its node; with ``node`` it names the session cluster-wide."""

    @property
    def user(self) -> str:
        """The account logged in, for ``who``, ``write USER`` and ``--max-sessions``."""

    @property
    def role(self) -> str:
        """``user`` or ``admin``: ``who`` shows the NODE and FROM columns to admins only, and admin
        commands check it."""

    @property
    def tty(self) -> str:
        """The terminal name (``tel/3``, ``ssh/0``), unique across the cluster, so ``write USER
        TTY`` picks one session."""

    @property
    def peer(self) -> str:
        """The client's address: ``who`` shows it to admins, ``finger`` to admins and the user."""

    @property
    def term(self) -> str:
        """The terminal type the client reported (TTYPE, SSH's TERM), shown in ``who --json``."""

    @property
    def login_time(self) -> float:
        """Wall-clock seconds at login, for ``who``'s LOGIN column and ``finger``."""

    @property
    def last_active(self) -> float:
        """When the session last sent a line: the idle time and the idle logout count from it."""

    @property
    def mesg(self) -> bool:
        """Whether the user accepts ``write`` (``mesg y/n``): checked on delivery, shown in
        ``who``'s MESG column."""

    @property
    def doing(self) -> str:
        """The command now running (sanitised, cut short) for ``w``'s WHAT column."""

    @property
    def detached(self) -> bool:
        """Its connection was lost and it waits to be resumed: ``who`` shows ``(detached)``."""

    def idle(self, now: float) -> float:
        """Seconds since the last line at ``now``: a method, so each caller passes its own clock
        and tests need no real time."""


#: One session in the whole cluster: its node's name and its id there.
Key = tuple[str, int]


def key_of(s: SessionInfo) -> Key:
    """The pair that names one session in the whole cluster (ids repeat across nodes), so ``who
    #room`` can pick a room's members out of everyone online."""
    return (s.node, s.id)


@frozen
class SessionRecord:
    """A session of another node, as that node last published it."""

    node: str
    id: int
    user: str
    role: str
    tty: str
    peer: str
    term: str
    login_time: float
    last_active: float
    mesg: bool
    doing: str
    detached: bool = False

    def idle(self, now: float) -> float:
        """As :meth:`SessionInfo.idle`, from the last activity the node published, which lags by
        ten seconds or so: nodes publish activity in coarse steps, so typing does not flood
        Redis."""
        return max(0.0, now - self.last_active)

    @classmethod
    def of(cls, s: SessionInfo) -> SessionRecord:
        """Copy any session's fields into a record, so a node publishes plain data, never a live
        object."""
        return cls(
            s.node,
            s.id,
            s.user,
            s.role,
            s.tty,
            s.peer,
            s.term,
            s.login_time,
            s.last_active,
            s.mesg,
            s.doing,
            s.detached,
        )

    def to_json(self) -> str:
        """A compact JSON array (positions, not names): the form stored in Redis for every session,
        kept small because every node reads them all."""
        return json.dumps(
            [
                self.node,
                self.id,
                self.user,
                self.role,
                self.tty,
                self.peer,
                self.term,
                self.login_time,
                self.last_active,
                self.mesg,
                self.doing,
                self.detached,
            ],
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SessionRecord:
        """Raises ValueError for anything that is not a record (Redis holds what a node wrote)."""
        try:
            return cls.from_fields(json.loads(text))
        except ValueError as e:
            raise ValueError(f"not a session record: {e}") from None

    @classmethod
    def from_fields(cls, f: Any) -> SessionRecord:
        """From the decoded JSON array; raises ValueError."""
        try:
            return cls(
                str(f[0]),
                int(f[1]),
                str(f[2]),
                str(f[3]),
                str(f[4]),
                str(f[5]),
                str(f[6]),
                float(f[7]),
                float(f[8]),
                bool(f[9]),
                str(f[10]),
                # A node of the version before detached sessions sends eleven fields.
                bool(f[11]) if len(f) > 11 else False,
            )
        except (TypeError, IndexError, KeyError) as e:
            raise ValueError(f"not a session record: {e}") from None


class Delivery(enum.Enum):
    """What became of one message to one session (``IHub.deliver``)."""

    #: Shown, or handed to the session's node (a remote delivery is at most once).
    DELIVERED = "delivered"
    #: The session's output is full (it is not reading); the message is gone.
    DROPPED = "dropped"
    #: The session has ended.
    GONE = "gone"
    #: The recipient refuses messages from this sender (mesg n, or ignore).
    REFUSED = "refused"
    #: The session is on another node and the cluster cannot be reached.
    UNAVAILABLE = "unavailable"
