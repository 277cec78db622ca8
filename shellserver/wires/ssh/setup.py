"""Assembling the SSH wire for the service: host keys, checkers, factory, the addkey hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from shellserver.ops.admission import Admission
from shellserver.ops.metrics import Metrics
from shellserver.ops.pacing import AccountPacing
from shellserver.ops.threads import Runner
from shellserver.ops.throttle import FailedLogins
from shellserver.store.accounts import Account, AccountStore, IAccountDB
from shellserver.store.auth import StoreChecker
from shellserver.store.otp import OtpStore
from shellserver.store.sql import StoreError
from shellserver.wires.ssh import authkeys, hostkeys
from shellserver.wires.ssh.server import (
    PasswordChecker,
    SessionStart,
    ShellRealm,
    ShellSSHFactory,
    SubsystemStart,
    make_factory,
)

log = Logger()


@frozen
class SSHControl:
    """What the control socket offers about SSH: fingerprints for status, and addkey."""

    #: The listener's host keys (None without ``--ssh``): read when ``status`` asks, as
    #: they are loaded only once the data dir is claimed.
    keys: hostkeys.HostKeyFiles | None
    add_key: Callable[[str, bytes], Deferred[Any]]

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """``status``'s ``ssh_keys``: none when there is no SSH listener."""
        return () if self.keys is None else tuple(self.keys.fingerprints())


def key_adder(home_root: FilePath[str], run_io: Runner) -> Callable[[str, bytes], Deferred[Any]]:
    """``addkey`` for the control socket: the file is written on the I/O pool, never the
    reactor, with the same checks as the key parser's."""

    def add(user: str, text: bytes) -> Deferred[Any]:
        """Append ``text``'s keys to ``user``'s ``authorized_keys``."""
        return run_io(authkeys.add_key, home_root, user, text)

    return add


def host_keys(data: FilePath[str], store: IAccountDB | None = None) -> hostkeys.HostKeyFiles:
    """The data dir's host key files (or, given a shared ``store``, the keys kept in it), for
    the listener built before they are read."""
    return hostkeys.HostKeyFiles(data.child("ssh"), store)


def load_host_keys(files: hostkeys.HostKeyFiles) -> None:
    """Load (or, at first start, generate) the host keys and log their fingerprints, or exit 1
    saying why."""
    try:
        created = files.load()
    except (hostkeys.HostKeyError, OSError, StoreError) as e:
        raise SystemExit(f"shellserver: {e}") from None
    if created:
        log.info("generated SSH host keys in {path}", path=files.where)
    for line in files.fingerprints():
        log.info("SSH host key {fingerprint}", fingerprint=line)


def ssh_factory(
    keys: hostkeys.HostKeys | hostkeys.HostKeyFiles,
    store: AccountStore,
    home_root: FilePath[str],
    run_io: Runner,
    clock: Any,
    login_timeout: float,
    admission: Admission,
    failed_logins: FailedLogins,
    start: SessionStart,
    account_pacing: AccountPacing,
    metrics: Metrics,
    otp: OtpStore,
    sftp: SubsystemStart,
) -> ShellSSHFactory:
    """The SSH listener's factory: passwords checked against the store (the account read once,
    taken by the realm), keys against each home's ``authorized_keys`` on the I/O pool, under
    the same admission, failed-login slots, pacing and counters as telnet's logins; ``sftp``
    serves the subsystem of that name."""
    checked: dict[str, Account] = {}  # the password checker's account, taken by the realm
    return make_factory(
        keys,
        [
            PasswordChecker(StoreChecker(store, checked)),
            authkeys.AuthorizedKeysChecker(authkeys.home_reader(home_root, run_io), run_io),
        ],
        ShellRealm(store, start, checked, sftp),
        clock,
        login_timeout,
        admission,
        failed_logins,
        account_pacing,
        metrics,
        otp,
    )
