"""The running server's shared state, handed to every connection and command.

It holds the long-lived pieces (config, clock, hub, store, portal, command
registry) and the few hooks other features fill in (home directories,
shutdown). Nothing here touches bytes or sockets.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

from attrs import define, field
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from shellserver.app.config import Config
from shellserver.files.homefs import Homes
from shellserver.hub.local import Hub, IHub
from shellserver.ops.admission import Admission
from shellserver.ops.metrics import Metrics
from shellserver.ops.pacing import AccountPacing
from shellserver.ops.threads import Runner, inline_runner
from shellserver.ops.throttle import FailedLogins, LogLimit, Registrations
from shellserver.shell.commands.registry import Registry
from shellserver.shell.connection import Connection
from shellserver.shell.sessionstart import Seat
from shellserver.shell.shutdown import Shutdown
from shellserver.store.accounts import INITIAL_ADMIN, Account, AccountStore
from shellserver.store.auth import make_portal
from shellserver.terminal.discipline import IWire, Redraws, Terminal
from shellserver.text.sanitize import careful_lines

log = Logger()
MOTD_LIMIT = 16 * 1024
#: Logins read from the history to know where an account's owner logs in from (pacing.py).
HISTORY_READ = 200


@define(eq=False)
class Server:
    config: Config
    clock: IReactorTime
    store: AccountStore
    registry: Registry
    #: The in-memory hub named after ``--node``; a clustered service passes its RedisHub.
    hub: IHub = field()
    started: float = 0.0
    failed_logins: FailedLogins = field(factory=FailedLogins)
    #: Per-account pacing of password checks (distributed guessing).
    account_pacing: AccountPacing = field()
    portal: Portal = field()
    #: Every live connection with a terminal (telnet's from connect, SSH's per session channel).
    connections: set[Seat] = field(factory=set)
    #: Connections waiting to log in, oldest first, with their deadline (login grace).
    waiting: dict[Connection, float] = field(factory=dict)
    admission: Admission = field()
    registrations: Registrations = field()
    #: Users' home directories, when the service provides them.
    homes: Homes | None = None
    #: The scheduled shutdown, when the service provides one.
    shutdown: Shutdown | None = None
    #: Prometheus counters (SPEC §12); its own registry, served when ``--metrics`` is given.
    metrics: Metrics = field(factory=Metrics)
    #: Where the motd is read: the I/O pool in the service (never the reactor thread).
    run_io: Runner = inline_runner
    #: ``<data>/initial-admin-password``, removed once ``admin``'s password is changed.
    initial_password: str | None = None
    _ids: itertools.count[int] = field(factory=lambda: itertools.count(1))
    #: Store and disk failures, one log limit per outcome (:meth:`unavailable`).
    _trouble: dict[str, LogLimit] = field(factory=dict)
    #: Prompts drawn again after messages, once per reactor turn (terminal.py).
    redraws: Redraws = field()

    @hub.default
    def _hub(self) -> IHub:
        return Hub(node=self.config.node, clock=self.clock)

    @redraws.default
    def _redraws(self) -> Redraws:
        return Redraws(self.clock)

    @portal.default
    def _portal(self) -> Portal:
        return make_portal(self.store)

    @admission.default
    def _admission(self) -> Admission:
        cfg = self.config
        return Admission(cfg.max_connections, cfg.max_unauth, cfg.max_unauth_per_addr)

    @account_pacing.default
    def _account_pacing(self) -> AccountPacing:
        return AccountPacing(self.clock, history=self._login_peers)

    def _login_peers(self, name: str) -> Deferred[Iterable[str]]:
        """The addresses ``name`` logged in from lately (the store's login history)."""
        d = self.store.history(name, HISTORY_READ)
        return d.addCallback(lambda records: {r.peer for r in records})

    @registrations.default
    def _registrations(self) -> Registrations:
        return Registrations(self.config.max_registrations)

    def __attrs_post_init__(self) -> None:
        if not self.started:
            self.started = self.clock.seconds()

    def new_connection(self, wire: IWire) -> Terminal:
        connection = Connection(self, wire)
        connection.start()
        return connection.terminal

    def session_counts(self) -> dict[tuple[str, str], int]:
        """Logged-in sessions by (tty kind, role), for the metrics scrape."""
        counts: dict[tuple[str, str], int] = {}
        for connection in self.connections:
            session = connection.session
            if session is not None:
                key = (session.tty.partition("/")[0], session.role)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def output_held_bytes(self) -> int:
        """Output held for clients that are not reading, over every connection (a scrape)."""
        return sum(getattr(c.wire, "held_bytes", 0) for c in self.connections)

    def next_id(self) -> int:
        return next(self._ids)

    def banner(self) -> str:
        text = f"shellserver on {self.config.hostname}\n"
        if self.config.registration:
            text += "Type 'new' at the login prompt to create an account.\n"
        return text + "\n"

    async def motd(self) -> str:
        """The message of the day, read at each login (so an edit shows at once) off the
        reactor thread, sanitised."""
        path = self.config.motd
        if not path:
            return ""
        try:
            data: bytes = await self.run_io(_read_motd, path)
            text = data.decode("utf-8", "surrogateescape")
        except OSError as e:
            log.warn(
                "cannot read motd {path}: {error}", path=path, error=os.strerror(e.errno or 0)
            )
            return ""
        text = careful_lines(text)
        return text if text.endswith("\n") else text + "\n"

    def login_refusal(self, account: Account) -> str | None:
        """Why ``account`` may not log in now (a shutdown about to happen), or None."""
        if self.shutdown is None or account.is_admin:  # admins may still come in to cancel
            return None
        return self.shutdown.login_refusal()

    def login_notice(self) -> str:
        """Text every new login is told (a scheduled shutdown)."""
        return "" if self.shutdown is None else self.shutdown.login_notice()

    async def account_created(self, account: Account, by: str | None, peer: str | None) -> None:
        if self.homes is not None:
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

    async def initial_password_spent(self, name: str) -> None:
        """``name``'s password was changed, or the account deleted: if it is the first start's
        ``admin``, the file holding its first password now holds nothing worth keeping."""
        path = self.initial_password
        if name != INITIAL_ADMIN or path is None:
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

    async def plan_of(self, name: str) -> str | None:
        """The finger text for ``name``'s ``~/.plan``."""
        if self.homes is None:
            return None
        return await self.homes.plan(name)

    def unavailable(
        self, error: BaseException, doing: str, outcome: str = "service unavailable"
    ) -> None:
        """The store or the disk failed (full, I/O error): one critical line a minute at most
        for each ``outcome`` (what the user got instead), so one kind never hides another."""
        trouble = self._trouble.get(outcome)
        if trouble is None:
            trouble = self._trouble[outcome] = LogLimit()
        count = trouble.due(self.clock.seconds())
        if count:
            log.critical(
                "{doing} failed, {outcome} ({count} time(s) since the last report): {error}",
                doing=doing,
                outcome=outcome,
                count=count,
                error=f"{type(error).__name__}: {error}",
            )

    def uptime(self) -> float:
        return self.clock.seconds() - self.started

    def admin_action(self, who: str, where: str, action: str, **details: object) -> None:
        """Every admin action is logged with who did it and from where (SPEC §6).

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


def remove_if_there(path: str) -> bool:
    """Remove ``path``; False if it was not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _read_motd(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(MOTD_LIMIT)
