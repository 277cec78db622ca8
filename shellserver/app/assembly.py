"""The assembly: every long-lived part built once, in dependency order, each given exactly
the collaborators it uses.

No part receives the whole: the login dialogue gets a :class:`Login`, commands a
:class:`Services`, the control socket a :class:`Controlled`, and so on down. What
always exists (the homes, the shutdown schedule) is built before anything that
uses it, so no part is optional and none is filled in later. The one cycle is
between the hub and the shutdown schedule: the schedule warns through the hub, and
runs the schedules other nodes announce through it. The hub is built first and given
to the schedule; the schedule then subscribes to the hub's announcements with
``IHub.subscribe_announcements`` (an ordinary observer subscription the hub offers to
anyone, not a slot in the hub waiting for a value), here, before anything starts, so
no announcement can arrive while nobody listens.

:func:`assemble` is what ``service.py`` calls (with the thread pools, the data dir's
files and ``reactor.stop``) and what the tests call (with inline runners and a
``Clock``), so both run the same parts wired the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from attrs import frozen
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from shellserver.app.config import Config
from shellserver.app.control import Controlled
from shellserver.files.homefs import Homes
from shellserver.hub.local import IHub
from shellserver.ops.admission import Admission
from shellserver.ops.metrics import Metrics
from shellserver.ops.pacing import AccountPacing
from shellserver.ops.threads import Runner, inline_runner
from shellserver.ops.throttle import FailedLogins, Registrations
from shellserver.shell import people
from shellserver.shell.adminops import Admin, InitialPassword
from shellserver.shell.bans import Bans
from shellserver.shell.commands import REGISTRY
from shellserver.shell.commands.registry import Registry, Services
from shellserver.shell.connection import Lobby
from shellserver.shell.locks import Locks
from shellserver.shell.login import Login
from shellserver.shell.mutes import Mutes
from shellserver.shell.parking import Restart
from shellserver.shell.secondfactor import SecondFactor
from shellserver.shell.sessionstart import Motd, Seats, SessionStart
from shellserver.shell.shutdown import Shutdown
from shellserver.shell.transfers import Transfers
from shellserver.shell.trouble import Trouble
from shellserver.store.accounts import AccountStore
from shellserver.store.audit import Ledger
from shellserver.store.auth import make_portal
from shellserver.store.bans import BanStore
from shellserver.store.otp import OtpDB, OtpStore
from shellserver.terminal.discipline import IWire, Redraws, Terminal

#: Logins read from the history to know where an account's owner logs in from (pacing.py).
HISTORY_READ = 200


@frozen
class Assembly:
    """What :func:`assemble` built. The service holds it to start, scrape and stop the
    parts; tests hold it to reach them. No part is given this record."""

    config: Config
    clock: IReactorTime
    store: AccountStore
    hub: IHub
    homes: Homes
    metrics: Metrics
    shutdown: Shutdown
    admin: Admin
    bans: Bans
    admission: Admission
    failed_logins: FailedLogins
    account_pacing: AccountPacing
    registrations: Registrations
    portal: Portal
    #: The second factor's records and dialogues (``otp``, the login's code, SSH's).
    second_factor: SecondFactor
    trouble: Trouble
    redraws: Redraws
    #: Every live connection with a terminal.
    seats: Seats
    #: What commands get (``Context.server``).
    services: Services
    login: Login
    #: What every wire calls once the account is known (``sessionstart.begin``).
    start: SessionStart
    #: The in-band login wires' way in (``lobby.new_connection``).
    lobby: Lobby
    control: Controlled
    #: ``restart``, ``drain``, ``SIGHUP``: park every session, then stop.
    restart: Restart
    #: This node's live file transfers (SFTP channels): the stop and the idle scan end them.
    transfers: Transfers
    #: The locked accounts in memory (refreshed by the service; the pages read it).
    locks: Locks

    def new_connection(self, wire: IWire) -> Terminal:
        """A telnet or browser connection arrived (the wires' factories call this)."""
        return self.lobby.new_connection(wire)


def login_peers(store: AccountStore) -> Callable[[str], Deferred[Iterable[str]]]:
    """The addresses an account logged in from lately (its login history): pacing does not
    slow its owner down at a known address."""

    def peers(name: str) -> Deferred[Iterable[str]]:
        d = store.history(name, HISTORY_READ)
        return d.addCallback(lambda records: {r.peer for r in records})

    return peers


def assemble(
    config: Config,
    clock: IReactorTime,
    store: AccountStore,
    hub: IHub,
    homes: Homes,
    stop: Callable[[], None],
    initial_password: str,
    *,
    metrics: Metrics | None = None,
    admission: Admission | None = None,
    registry: Registry = REGISTRY,
    run_io: Runner = inline_runner,
    started: float | None = None,
) -> Assembly:
    """Build every part from the config values, the store, the hub and the homes, each
    before the parts that use it; ``stop`` ends the process when a shutdown is due, and
    ``initial_password`` is the file of the first start's ``admin`` password."""
    cfg = config
    metrics = Metrics() if metrics is None else metrics
    if admission is None:
        admission = Admission(cfg.max_connections, cfg.max_unauth, cfg.max_unauth_per_addr)
    started = clock.seconds() if started is None else started
    trouble = Trouble(clock)
    redraws = Redraws(clock)
    seats = Seats()
    metrics.watch(seats)
    shutdown = Shutdown(clock, hub, metrics, cfg.hostname, stop)
    # Clustered, every node runs the schedule another node announces: subscribed now,
    # before the hub starts, so no announcement can come while nobody listens.
    hub.subscribe_announcements(shutdown.heard)
    # Mutes and deletions made on another node reach this one's table and sessions likewise.
    mutes = Mutes(store, hub, clock)
    hub.subscribe_announcements(mutes.heard)
    # File transfers end with the sessions (kick, lock, userdel, bans) on every node, and
    # the locked accounts every node holds in memory follow each lock and unlock.
    transfers = Transfers()
    hub.subscribe_announcements(transfers.heard)
    locks = Locks(store)
    hub.subscribe_announcements(locks.heard)
    hub.subscribe_announcements(people.deletions(hub))
    # Every admin action is recorded here: the admin operations', the bans'.
    ledger = Ledger(store, cfg.node, clock)
    otp = OtpStore(OtpDB(store.db), store.run_db, store.run_hash, store.hash_cost)
    admin = Admin(
        cfg.hostname,
        clock,
        hub,
        store,
        metrics,
        homes,
        InitialPassword(initial_password, run_io),
        ledger,
        mutes,
        otp,
        transfers,
        locks,
    )
    # Admission refuses banned addresses and the session start banned logins, both from
    # this one in-memory list; other nodes' bans reach it through the hub's announcements.
    bans = Bans(clock, hub, BanStore(store), admission.bans, ledger, transfers)
    hub.subscribe_announcements(bans.heard)
    failed_logins = FailedLogins()
    account_pacing = AccountPacing(clock, history=login_peers(store))
    registrations = Registrations(cfg.max_registrations)
    portal = make_portal(store)
    second_factor = SecondFactor(
        otp,
        clock,
        cfg.hostname,
        cfg.require_otp,
    )
    services = Services(
        hostname=cfg.hostname,
        clustered=cfg.cluster is not None,
        clock=clock,
        hub=hub,
        store=store,
        metrics=metrics,
        homes=homes,
        registry=registry,
        shutdown=shutdown,
        admin=admin,
        bans=bans,
        started=started,
        second_factor=second_factor,
    )
    login = Login(
        hostname=cfg.hostname,
        registration=cfg.registration,
        clock=clock,
        store=store,
        portal=portal,
        failed_logins=failed_logins,
        account_pacing=account_pacing,
        registrations=registrations,
        metrics=metrics,
        trouble=trouble,
        account_created=admin.account_created,
        second_factor=second_factor,
    )
    start = SessionStart(
        services=services,
        max_sessions=cfg.max_sessions,
        on_max=cfg.on_max,
        cmd_rate=cfg.cmd_rate,
        cmd_burst=cfg.cmd_burst,
        motd=Motd(cfg.motd, run_io),
        trouble=trouble,
        redraws=redraws,
        seats=seats,
        second_factor=second_factor,
        linger=cfg.linger,
        max_output=cfg.max_output,
    )
    lobby = Lobby(login, start, admission, clock, cfg.login_timeout)
    restart = Restart(start, hub.node, stop, admin.audit)
    hub.subscribe_announcements(restart.heard)  # another node takes a detached session over
    control = Controlled(cfg, clock, hub, store, shutdown, admin, bans, started, restart)
    return Assembly(
        config=cfg,
        clock=clock,
        store=store,
        hub=hub,
        homes=homes,
        metrics=metrics,
        shutdown=shutdown,
        admin=admin,
        bans=bans,
        admission=admission,
        failed_logins=failed_logins,
        account_pacing=account_pacing,
        registrations=registrations,
        portal=portal,
        second_factor=second_factor,
        trouble=trouble,
        redraws=redraws,
        seats=seats,
        services=services,
        login=login,
        start=start,
        lobby=lobby,
        control=control,
        restart=restart,
        transfers=transfers,
        locks=locks,
    )
