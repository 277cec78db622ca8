"""The twistd service: data dir, store, thread pools, listeners, and a clean stop.

Everything that can fail at start-up (data dir, lock, store version, binding
a port) is done in :meth:`ShellService.prepare`, called from ``makeService``
before the reactor runs, so a failure is one line on stderr and exit status 1
under both ``twistd`` and ``twist`` (a failing ``startService`` is only logged
by them, and the process would keep running without its listener). Threads
are started in ``startService``, after twistd has daemonised.

``prepare`` builds every part before it binds a port, and binds each port once,
with its real factory; what lives in the data dir (the store, the SSH host keys,
the default control socket) is opened only after every port is bound, so a port
in use stops the start having created nothing.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from shellserver.app.assembly import Assembly, assemble
from shellserver.app.config import Config
from shellserver.app.control import ControlFactory
from shellserver.files.homefs import Homes
from shellserver.hub.cluster.hub import RedisHub, cluster_hub
from shellserver.hub.idle import IdleWatch
from shellserver.hub.local import Hub, IHub
from shellserver.ops.admission import (
    FD_HEADROOM,
    Admission,
    Shares,
    connection_limit,
    raise_fd_limit,
    split_connections,
)
from shellserver.ops.datadir import DataDir, DataDirLocked
from shellserver.ops.gcpolicy import GCPolicy
from shellserver.ops.httpguard import Guard
from shellserver.ops.lagprobe import LagProbe
from shellserver.ops.metrics import Metrics
from shellserver.ops.metricspage import MAX_CONNECTIONS as METRICS_CONNECTIONS
from shellserver.ops.metricspage import metrics_endpoint, metrics_site
from shellserver.ops.proxyheader import PREFIX, is_proxied, listen_endpoint
from shellserver.ops.threads import WorkerPool, make_pool, pool_runner
from shellserver.shell import parking
from shellserver.shell.locks import pages_hidden
from shellserver.shell.mutes import REFRESH
from shellserver.store.accounts import AccountDB, AccountStore, StoreError, ensure_initial_admin
from shellserver.store.health import StoreProbe
from shellserver.wires.pages.site import pages_site
from shellserver.wires.ssh import session as ssh_session
from shellserver.wires.ssh import setup as ssh_setup
from shellserver.wires.ssh import sftp as ssh_sftp
from shellserver.wires.telnet.protocol import TelnetFactory
from shellserver.wires.web.hosts import HostPolicy
from shellserver.wires.web.page import web_site

log = Logger()
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
#: The page's HTTP connections when ``--max-unauth`` is 0 (unlimited): they still need a cap.
DEFAULT_WEB_HTTP = 200
#: Seconds between two reloads of the bans from the store: a clustered node that missed
#: another node's announcement (Redis was away) holds its ban within this time.
BAN_RELOAD = 60.0
#: What an SFTP channel is told when the server stops (a session gets the final notice).
STOPPING_TEXT = "The system is going down NOW!\n"
#: Seconds between two sweeps of parked sessions no one resumed in time.
PARKED_SWEEP = 60.0
#: The personal pages' HTTP connections (at most a quarter of ``--max-connections``).
PAGES_HTTP = 500


def with_backlog(description: str) -> str:
    """Listen with a deep accept queue: a burst of logins must not meet SYN drops (also
    under the PROXY header's ``haproxy:``)."""
    if is_proxied(description):
        return PREFIX + with_backlog(description[len(PREFIX) :])
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "unix", "ssl") and "backlog=" not in description:
        return description + ":backlog=1024"
    return description


def default_max_connections(default: int, hard_fd_limit: int) -> int:
    """The default ``--max-connections``, lowered to what the descriptor hard limit allows."""
    if hard_fd_limit == resource.RLIM_INFINITY:
        return default
    return max(1, min(default, hard_fd_limit - FD_HEADROOM))


class ShellService(Service):
    """The twistd service: start-up failures are found in ``prepare`` (exit 1), threads start after
    daemonising, and the stop is clean."""

    name = "shellserver"

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.ports: list[IListeningPort] = []
        #: The HTTP listeners' connection guards (page, metrics), whose sweep timers stop with us.
        self.guards: list[Guard] = []
        self.pools: list[WorkerPool] = []
        self._idle: task.LoopingCall | None = None
        self._sweep: task.LoopingCall | None = None
        self._mutes: task.LoopingCall | None = None
        self._ban_reload: task.LoopingCall | None = None
        #: The clustered hub (``--cluster``), started and stopped with the service.
        self.cluster: RedisHub | None = None
        self.metrics = Metrics()
        self._probe = LagProbe(reactor, self.metrics.reactor_lag.observe)
        self._gc = GCPolicy(reactor)
        #: ``shellserver_store_up``'s check (made with the store, in ``prepare``).
        self._store_probe: StoreProbe | None = None

    def prepare(self) -> None:
        """Build every part, bind every listener with its own factory, then claim the data dir
        and open what lives in it, or exit 1 saying why.

        Each step is done once, in this order:

        1. A data dir that exists is locked first ("another shellserver is running"
           beats "port in use").
        2. Every part is built (app/assembly.py), and each listener's factory from
           them. Nothing touches the filesystem: the store and the SSH host keys are
           named, not opened.
        3. Every listener is bound (but the default control socket, which lives in the
           data dir), so a start that fails on a port in use has created nothing: no
           data dir, no ``admin`` account, no password file.
        4. The data dir is created and locked, the store opened (and migrated), the
           first ``admin`` made, the host keys loaded (or made), and the default control
           socket bound.

        The reactor has not run yet, so no connection meets the store before it is open.
        """
        cfg = self.config
        # Clustered, the lock and the control socket are this node's (datadir.py says how).
        node = cfg.node if cfg.cluster is not None else None
        homes = FilePath(os.path.abspath(cfg.homes)) if cfg.homes else None
        self.datadir = datadir = DataDir(FilePath(os.path.abspath(cfg.data)), node, homes)
        control = self._control_endpoint()
        locked = False
        try:
            if datadir.path.isdir():
                datadir.lock()  # "another shellserver is running" beats "port in use"
                locked = True
        except (OSError, DataDirLocked) as e:
            raise SystemExit(f"shellserver: {e}") from None
        shares = self._shares()
        parts = self.parts = self._assemble(shares)
        io = parts.homes.run_io
        # The listeners' factories, from the parts; the host keys are read in step 4.
        telnet = TelnetFactory(
            parts.lobby.new_connection, self.reactor, cfg.max_line, cfg.max_output
        )
        # With a shared store the keys live in it, so every node presents the same ones.
        shared = self.db if cfg.store is not None else None
        keys = ssh_setup.host_keys(datadir.path, shared) if cfg.ssh else None
        control_factory = ControlFactory(
            parts.control, ssh_setup.SSHControl(keys, ssh_setup.key_adder(datadir.home_root, io))
        )
        for description in cfg.telnet:
            self.ports.append(self._listen(description, telnet, "telnet"))
        if keys is not None:
            ssh = ssh_setup.ssh_factory(
                keys,
                parts.store,
                datadir.home_root,
                io,
                self.reactor,
                cfg.login_timeout,
                parts.admission,
                parts.failed_logins,
                ssh_session.session_starter(
                    parts.start, self.reactor, cfg.max_line, cfg.max_output
                ),
                parts.account_pacing,
                parts.metrics,
                parts.second_factor.otp,
                ssh_sftp.sftp_starter(
                    parts.homes,
                    parts.metrics,
                    self.reactor,
                    ssh_sftp.login_gate(parts.start, parts.locks),
                    parts.transfers,
                ),
            )
            for description in cfg.ssh:
                self.ports.append(self._listen(description, ssh, "ssh"))
        if cfg.web:
            site = web_site(
                parts.lobby.new_connection,
                self.reactor,
                cfg.max_output,
                shares.web_http,
                cfg.max_unauth_per_addr,
                HostPolicy.from_options(cfg.web_origins),
            )
            self.guards.append(site)
            for description in cfg.web:
                self.ports.append(self._listen(description, site, "web"))
        if cfg.pages:
            pages = pages_site(
                parts.homes.root.path,
                self.reactor,
                parts.metrics,
                shares.pages,
                cfg.max_unauth_per_addr,
                pages_hidden(parts.locks, parts.admission.bans, self.reactor),
            )
            self.guards.append(pages)
            for description in cfg.pages:
                self.ports.append(self._listen(description, pages, "pages"))
        if cfg.metrics is not None:
            scrapes = metrics_site(
                self.metrics.registry, self.reactor, shares.metrics, self.metrics.renders.inc
            )
            self.guards.append(scrapes)
            self.ports.append(self._listen(metrics_endpoint(cfg.metrics), scrapes, "metrics"))
        if cfg.control is not None:
            self.ports.append(self._listen(control, control_factory, "control"))
        # Every port is ours: only now is anything created.
        try:
            datadir.create()
            if not locked:
                datadir.lock()
            datadir.remember_homes()
            self.db.connect()
        except (OSError, DataDirLocked, StoreError) as e:
            raise SystemExit(f"shellserver: {e}") from None
        log.info("store: {where}", where=self.db.where)
        # Else the open records may be other nodes' live sessions (on this data dir, or on
        # other machines sharing the PostgreSQL store).
        if datadir.alone and cfg.store is None:
            self.db.close_open_logins(time.time())
        created = ensure_initial_admin(self.db, datadir, cfg.hash_cost)
        parts.bans.load_now(self.db)  # the first connection already meets them
        parts.locks.load_now(self.db)  # and the first page request, the locks
        datadir.end_startup()
        if created is not None:
            log.warn("Created account 'admin'; its password is in {path}", path=created.path)
        if keys is not None:
            ssh_setup.load_host_keys(keys)
        if cfg.control is None:  # in the data dir, which exists only now
            try:
                self.ports.append(self._listen(control, control_factory, "control"))
            except SystemExit as e:
                if created is None:
                    raise
                raise SystemExit(
                    f"{e} (this start created {datadir.path.path} and the account "
                    f"'admin', whose password is in {created.path})"
                ) from None

    def _assemble(self, shares: Shares) -> Assembly:
        """The thread pools (started in :meth:`startService`, after twistd daemonises), the
        store over them (named, opened in :meth:`prepare`'s step 4), the hub, then every
        part in dependency order (app/assembly.py)."""
        cfg = self.config
        # SQLite: one connection, one thread; PostgreSQL: a pool, a thread per connection
        # (its driver is loaded only when it is used).
        if cfg.store is None:
            self.db = AccountDB(self.datadir.db_path.path)
            db_threads = 1
        else:
            from shellserver.store.postgres import POOL_SIZE, PostgresAccountDB

            self.db = PostgresAccountDB(cfg.store, wait=cfg.store_wait)
            db_threads = POOL_SIZE
        db_pool = make_pool("shellserver-db", db_threads)
        hash_pool = make_pool("shellserver-hash", max(1, (os.cpu_count() or 2) - 1))
        io_pool = make_pool("shellserver-io", 4)
        self.pools = [db_pool, hash_pool, io_pool]
        store = AccountStore(
            self.db,
            self.metrics.timed(pool_runner(self.reactor, db_pool)),
            self.metrics.queued(pool_runner(self.reactor, hash_pool)),
            cfg.hash_cost,
        )
        self._store_probe = StoreProbe(
            self.db,
            pool_runner(self.reactor, db_pool),
            self.reactor,
            lambda up: self.metrics.store_up.set(1 if up else 0),
            period=cfg.store_wait,
        )
        hub: IHub = Hub(node=cfg.node, clock=self.reactor)
        if cfg.cluster is not None:
            cluster = self.cluster = cluster_hub(cfg.cluster, cfg.node, self.reactor)
            hub = cluster
            self.metrics.watch_cluster(lambda: cluster.live_nodes)
        io = pool_runner(self.reactor, io_pool)
        return assemble(
            cfg,
            self.reactor,
            store,
            hub,
            Homes(
                self.datadir.home_root,
                cfg.quota,
                io,
                # Another node may work in them: clustered, or on a filesystem others share.
                shared=cfg.cluster is not None or cfg.homes is not None,
                inside=cfg.homes is not None,
            ),
            self.reactor.stop,
            self.datadir.admin_password_path.path,
            metrics=self.metrics,
            admission=Admission(shares.logins, cfg.max_unauth, cfg.max_unauth_per_addr),
            run_io=io,
        )

    def _shares(self) -> Shares:
        """The connection limit split between the listeners (``admission.split_connections``):
        the page's HTTP connections (at most ``--max-unauth``), the metrics listener
        (at most 16) and the personal pages (at most 500) have caps of their own, so none
        can take the descriptors logins need."""
        cfg = self.config
        web_http = (cfg.max_unauth or DEFAULT_WEB_HTTP) if cfg.web else 0
        metrics = METRICS_CONNECTIONS if cfg.metrics is not None else 0
        pages = PAGES_HTTP if cfg.pages else 0
        return split_connections(self._connection_limit(), web_http, metrics, pages)

    def _connection_limit(self) -> int:
        """``--max-connections``, with the descriptor limit raised to fit.

        The default (20,000) is lowered quietly to what the hard limit allows; a
        limit the operator gave that does not fit is warned about.
        """
        cfg = self.config
        wanted = cfg.max_connections
        if not cfg.max_connections_given:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            fitting = default_max_connections(wanted, hard)
            if fitting < wanted:
                log.info(
                    "accepting at most {limit} connections, as the file descriptor hard "
                    "limit ({hard}) allows; raise it (ulimit -Hn, LimitNOFILE=) for the "
                    "default {default}, or set --max-connections",
                    limit=fitting,
                    hard=hard,
                    default=wanted,
                )
            wanted = fitting
        soft, fds = raise_fd_limit(wanted)
        limit = connection_limit(wanted, soft)
        if wanted and limit < wanted:
            log.warn(
                "the file descriptor limit is {soft} ({fds} wanted): accepting at most "
                "{limit} connections; raise the hard limit (ulimit -Hn, LimitNOFILE=) "
                "or lower --max-connections",
                soft=soft,
                fds=fds,
                limit=limit,
            )
        return limit

    def _control_endpoint(self) -> str:
        if self.config.control is not None:
            return self.config.control
        sock = self.datadir.control_socket
        if len(os.fsencode(sock.path)) > UNIX_PATH_MAX:
            raise SystemExit(
                f"shellserver: the control socket path {sock.path} is longer than "
                f"{UNIX_PATH_MAX} bytes, the limit for unix sockets; use a shorter --data "
                "or give --control"
            )
        return f"unix:{sock.path}:mode=600:lockfile=0"

    def _listen(self, description: str, factory: Any, what: str) -> IListeningPort:
        if what == "control" and self.config.control is None:
            sock = self.datadir.control_socket
            if sock.exists() or sock.islink():
                sock.remove()  # left by a server that died: we hold the lock, so it is not in use
        results: list[Any] = []
        try:
            endpoint = listen_endpoint(self.reactor, with_backlog(description))
            endpoint.listen(factory).addBoth(results.append)
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"shellserver: bad listen endpoint {description!r}: {e}") from None
        if not results:
            raise SystemExit(f"shellserver: listening on {description} did not complete")
        if isinstance(results[0], Failure):
            raise SystemExit(
                f"shellserver: cannot listen on {description}: {results[0].getErrorMessage()}"
            )
        port: IListeningPort = results[0]
        log.info("{what} listening on {address}", what=what, address=port.getHost())
        return port

    def startService(self) -> None:
        """Start what must not run before twistd daemonises: threads, timers, the cluster link."""
        super().startService()
        self.datadir.write_pid()
        for pool in self.pools:
            pool.start()
        watch = IdleWatch(self.parts.hub, self.config.idle_timeout)
        if self.config.idle_timeout > 0:
            self._idle = task.LoopingCall(self._idle_scan, watch)
            self._idle.clock = self.reactor
            self._idle.start(watch.period, now=False)
        self._probe.start()
        if self._store_probe is not None:
            self._store_probe.start()
        self._gc.start()
        # The mutes and locks in force, read now and again every minute (what an
        # announcement missed).
        self._mutes = task.LoopingCall(self._refresh)
        self._mutes.clock = self.reactor
        self._mutes.start(REFRESH, now=True)
        self._ban_reload = task.LoopingCall(self.parts.bans.reload)
        self._ban_reload.clock = self.reactor
        self._ban_reload.start(BAN_RELOAD, now=False)
        if self.cluster is not None:
            self.cluster.start()
        self._sweep = task.LoopingCall(self._sweep_parked)
        self._sweep.clock = self.reactor
        self._sweep.start(PARKED_SWEEP, now=False)
        d = defer.Deferred.fromCoroutine(self._unpark())
        d.addErrback(lambda f: log.failure("taking back the parked sessions failed", f))
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._sighup)

    def _idle_scan(self, watch: IdleWatch) -> None:
        """Idle sessions are warned, then logged out; an SFTP channel that took no request for
        the whole timeout is closed, told the same logout notice (it has no screen to warn)."""
        now = self.reactor.seconds()
        watch.scan(now)
        notice = watch.logout_notice.text
        self.parts.transfers.end_idle(now, watch.timeout, lambda: notice)

    def _refresh(self) -> None:
        """The mutes and the locked accounts, read again from the store."""
        self.parts.admin.mutes.refresh()
        self.parts.locks.refresh()

    def _sighup(self, signum: int, frame: Any) -> None:
        """``kill -HUP``: a restart (every session parked, then the stop), from the reactor."""
        self.reactor.callFromThread(self._restart_now)

    def _restart_now(self) -> None:
        d = defer.Deferred.fromCoroutine(self.parts.restart.restart("SIGHUP", "signal", "restart"))
        d.addErrback(lambda f: log.failure("restart failed", f))

    async def _unpark(self) -> None:
        """This node's sessions parked by its last restart, detached again (a server alone
        takes every node's: it is the only one)."""
        await self.parts.hub.ready()
        node = self.config.node if self.config.cluster is not None else None
        await parking.restore_node(self.parts.start, node)

    def _sweep_parked(self) -> None:
        d = defer.Deferred.fromCoroutine(parking.sweep(self.parts.start))
        d.addErrback(lambda f: log.failure("sweeping parked sessions failed", f))

    def stopService(self) -> defer.Deferred[None]:
        """The final notice, then close every connection (aborting the stuck) before the store
        closes."""
        super().stopService()
        if self._idle is not None and self._idle.running:
            self._idle.stop()
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        if self._mutes is not None and self._mutes.running:
            self._mutes.stop()
        if self._ban_reload is not None and self._ban_reload.running:
            self._ban_reload.stop()
        self._probe.stop()
        if self._store_probe is not None:
            self._store_probe.stop()
        self._gc.stop()
        for guard in self.guards:
            guard.stop()
        stopped = [defer.maybeDeferred(port.stopListening) for port in self.ports]
        self.parts.shutdown.final_notice()
        for connection in list(self.parts.seats):
            connection.terminal.close()
        self.parts.transfers.end_all(STOPPING_TEXT, "the server stops")
        for session in self.parts.hub.local_sessions():
            if session.detached:  # ended as attached ones are: held writes saved as mail
                session.disconnect()
        d: defer.Deferred[Any] = defer.gatherResults(stopped, consumeErrors=True)
        d.addBoth(lambda _: self._wait_for_connections(3.0))
        if self.cluster is not None:
            cluster = self.cluster
            d.addBoth(lambda _: cluster.stop())  # our records leave the cluster at once
        d.addBoth(self._release)
        return d

    def _wait_for_connections(self, timeout: float) -> defer.Deferred[None]:
        deadline = self.reactor.seconds() + timeout
        done: defer.Deferred[None] = defer.Deferred()

        def poll() -> None:
            if not self.parts.seats or self.reactor.seconds() >= deadline:
                for connection in list(self.parts.seats):
                    connection.wire.abort()
                done.callback(None)
            else:
                self.reactor.callLater(0.05, poll)

        poll()
        return done

    def _release(self, _: object) -> None:
        for pool in self.pools:
            if pool.started:
                pool.stop()
        self.db.close()
        if self.config.control is None and self.datadir.control_socket.exists():
            self.datadir.control_socket.remove()
        self.datadir.unlock()
