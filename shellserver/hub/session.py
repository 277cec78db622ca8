"""One logged-in connection: who, where from, since when, and where its output goes.

The hub sits below the terminal in the layers, so a :class:`Session` does not hold a
``Terminal``: it holds a :class:`SessionPort`, the little the hub and the commands
need of whatever shows a session's output (the terminal implements it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from attrs import define

from shellserver.ops.throttle import UNLIMITED, TokenBucket

if TYPE_CHECKING:
    from shellserver.text.message import Message


class SessionPort(Protocol):
    """What the hub asks of a session's screen: show a message, show own text, say how
    wide it is and whether it is still there, end it.

    A Protocol here, not an import of the terminal, so the connection table depends
    on nothing above it; ``shellserver.terminal.discipline.Terminal`` provides it.
    """

    @property
    def connected(self) -> bool:
        """False once the client has gone: the hub delivers nothing more to it."""

    @property
    def width(self) -> int:
        """Columns, so text can be wrapped for this window."""

    @property
    def height(self) -> int:
        """Rows, for output that pages."""

    def write(self, text: str) -> None:
        """The session's own output (never dropped)."""

    def notify(self, message: Message) -> bool:
        """Someone else's message, shown without breaking the line being typed;
        False when dropped (the client is not reading)."""

    def close(self) -> None:
        """End the connection after pending output (kick, lock, idle, shutdown)."""


class HoldingPort(SessionPort, Protocol):
    """The port of a detached session (``shellserver.shell.detach.HeldOutput``): it holds what
    is sent, and tells a ``write`` apart, which is saved to the mailbox if the session is never
    resumed."""

    def notify_write(self, message: Message, sender: str) -> bool:
        """A ``write`` line from ``sender``, held; False when dropped (over the limit)."""


@define(eq=False)
class Session:
    """Per-connection state (the seed's "companion object", attached at login).

    Other sessions never hold a reference to this; they reach it through the hub.
    """

    id: int
    user: str
    role: str
    tty: str
    peer: str
    login_time: float
    terminal: SessionPort
    last_active: float
    mesg: bool = True
    cwd: str = ""
    doing: str = "-sh"
    term: str = ""
    login_record: int | None = None
    #: The node this session lives on (``--node``); "" for a server that is not clustered.
    node: str = ""
    #: The fingerprint of the SSH key it logged in with (``SHA256:…``); "" for a password.
    key: str = ""
    #: ``last_active`` at the time of the idle warning, so one idle stretch warns once.
    idle_warned: float = -1.0
    #: Lines this session may send (commands, and the lines of a multi-line ``write``);
    #: unlimited unless the connection sets ``--cmd-burst``/``--cmd-rate``.
    bucket: TokenBucket = UNLIMITED
    #: When its connection was lost, while it waits (``--linger``) to be resumed; None while a
    #: connection shows it. ``terminal`` is then the port that holds what is sent to it.
    detached_at: float | None = None

    @property
    def detached(self) -> bool:
        """No connection shows this session now: ``who`` says ``(detached)``."""
        return self.detached_at is not None

    @property
    def is_admin(self) -> bool:
        """Admin commands check this, so the role's spelling lives in one place."""
        return self.role == "admin"

    def idle(self, now: float) -> float:
        """Seconds since the last command, never negative (a clock stepped back)."""
        return max(0.0, now - self.last_active)

    @property
    def width(self) -> int:
        """The window's columns (NAWS, later SSH and the browser); 80 when unknown."""
        return self.terminal.width

    @property
    def height(self) -> int:
        """The window's rows, for commands that fit their output to it."""
        return self.terminal.height

    def write(self, text: str) -> None:
        """The session's own output, so commands need not reach for the terminal."""
        self.terminal.write(text)

    def deliver(self, message: Message) -> bool:
        """Someone else's message; False when it was dropped.

        One call straight to the port's ``notify``: this runs once per recipient
        of every message, so it adds no layer of its own.
        """
        return self.terminal.notify(message)

    def disconnect(self) -> None:
        """End the session's connection (kick, lock, idle, shutdown)."""
        self.terminal.close()
