"""One logged-in connection: who, where from, since when, and where its output goes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define

from shellserver.ops.throttle import UNLIMITED, TokenBucket
from shellserver.terminal.discipline import Terminal

if TYPE_CHECKING:
    from shellserver.text.message import Message


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
    terminal: Terminal
    last_active: float
    mesg: bool = True
    cwd: str = ""
    doing: str = "-sh"
    term: str = ""
    login_record: int | None = None
    #: The node this session lives on (``--node``); "" for a server that is not clustered.
    node: str = ""
    #: ``last_active`` at the time of the idle warning, so one idle stretch warns once.
    idle_warned: float = -1.0
    #: Lines this session may send (commands, and the lines of a multi-line ``write``);
    #: unlimited unless the connection sets ``--cmd-burst``/``--cmd-rate``.
    bucket: TokenBucket = UNLIMITED

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def idle(self, now: float) -> float:
        return max(0.0, now - self.last_active)

    @property
    def width(self) -> int:
        """The window's columns (NAWS, later SSH and the browser); 80 when unknown."""
        return self.terminal.width

    @property
    def height(self) -> int:
        return self.terminal.height

    def write(self, text: str) -> None:
        self.terminal.write(text)

    def deliver(self, message: Message) -> bool:
        """Someone else's message; False when it was dropped."""
        return self.terminal.notify(message)

    def disconnect(self) -> None:
        self.terminal.close()
