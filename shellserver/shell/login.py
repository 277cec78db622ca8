"""The login dialogue (SPEC §3): ``login:``, ``Password:``, ``new`` registration."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import deferLater
from twisted.logger import Logger

from shellserver.ops.throttle import TokenBucket
from shellserver.store.accounts import (
    UNAVAILABLE,
    Account,
    AccountLocked,
    UserExists,
    password_problem,
    username_problem,
)
from shellserver.store.auth import IAccount
from shellserver.terminal.discipline import Interrupted, Terminal
from shellserver.text.sanitize import careful

log = Logger()

if TYPE_CHECKING:
    from twisted.cred.portal import Portal
    from twisted.internet.interfaces import IReactorTime

    from shellserver.app.config import Config
    from shellserver.ops.metrics import Metrics
    from shellserver.ops.pacing import AccountPacing
    from shellserver.ops.throttle import FailedLogins, Registrations
    from shellserver.store.accounts import AccountStore


class LoginServices(Protocol):
    """What the login dialogue uses of the running server (``Server`` provides it)."""

    config: Config
    clock: IReactorTime
    store: AccountStore
    portal: Portal
    failed_logins: FailedLogins
    account_pacing: AccountPacing
    registrations: Registrations
    metrics: Metrics

    def banner(self) -> str: ...

    def unavailable(
        self, error: BaseException, doing: str, outcome: str = "service unavailable"
    ) -> None: ...

    async def account_created(
        self, account: Account, by: str | None, peer: str | None
    ) -> None: ...


MAX_TRIES = 3
#: Characters of a typed login name kept in the log of a failed login.
LOGGED_NAME = 64
#: Seconds from a wrong password's arrival to ``Login incorrect``, by failure on the connection.
FAILURE_DELAYS = (1.0, 2.0, 4.0)
TOO_MANY = "Too many failed logins; try again later\n"
UNAVAILABLE_TEXT = "Service temporarily unavailable\n"
TOO_MANY_REGISTRATIONS = "Too many accounts created from your address; try again later.\n"


async def login_dialogue(
    server: LoginServices,
    term: Terminal,
    peer: str,
    banner: bool = True,
    progressed: Callable[[], None] = lambda: None,
) -> Account | None:
    """The account that logged in, or None when the connection should close.

    EndOfInput and Disconnected from the terminal propagate to the caller.
    A store or disk failure (disk full) is told as ``Service temporarily
    unavailable`` and the dialogue goes on: the connection stays.
    ``progressed`` is called when a login name arrives (admission's stalled list).
    """
    if banner:
        term.write(server.banner())
    failures = 0
    while True:
        if server.failed_logins.blocked(peer, server.clock.seconds()):
            term.write(TOO_MANY)
            return None
        try:
            name = (await term.read_line("login: ")).strip()
            if not name:
                continue
            progressed()
            if name == "new":
                if not server.config.registration:
                    term.write("Registration is closed; ask an administrator for an account.\n")
                    continue
                if server.registrations.full(peer, server.clock.seconds()):
                    term.write(TOO_MANY_REGISTRATIONS)
                    continue
                try:
                    account = await register(server, term, peer)
                except UNAVAILABLE as e:
                    server.unavailable(e, "registration")
                    term.write(UNAVAILABLE_TEXT)
                    continue
                if account is not None:
                    return account
                continue
            password = await term.read_line("Password: ", hidden=True)
        except Interrupted:
            continue
        if not await server.failed_logins.attempt(peer, server.clock.seconds()):
            term.write(TOO_MANY)
            return None
        # An account under distributed guessing is checked one password at a time, slowly.
        if not await server.account_pacing.turn(name, peer, lambda: term.connected):
            server.failed_logins.finished(peer, server.clock.seconds(), failed=False)
            return None
        arrived = server.clock.seconds()
        wrong = False
        try:
            account = await authenticate(server, name, password)
        except UnauthorizedLogin:
            wrong = True
            failed(server, name, peer, "incorrect")
        except AccountLocked:
            failed(server, name, peer, "locked")
            term.write("Your account is locked; contact an administrator.\n")
            return None
        except UNAVAILABLE as e:
            server.unavailable(e, "login")
            term.write(UNAVAILABLE_TEXT)
            continue
        else:
            server.metrics.login(True)
            server.account_pacing.succeeded(account.name, peer)
            return account
        finally:
            server.failed_logins.finished(peer, server.clock.seconds(), failed=wrong)
            server.account_pacing.finished(name, failed=wrong)
        failures += 1
        # The answer comes at a moment fixed by when the password arrived, not by how long
        # its hash took: a hash at another cost, or none, cannot be told apart by timing.
        wait = arrived + FAILURE_DELAYS[failures - 1] - server.clock.seconds()
        if wait > 0:
            await deferLater(server.clock, wait)
        term.write("Login incorrect\n")
        if failures >= MAX_TRIES:
            return None


def failed(server: LoginServices, name: str, peer: str, reason: str) -> None:
    """Counted and logged; the name is what was typed, so it is cut short and made careful."""
    server.metrics.login(False)
    log.info(
        "failed login for {user} from {peer}: {reason}",
        event="login_failed",
        user=careful(name[:LOGGED_NAME]),
        peer=peer,
        reason=reason,
    )


async def authenticate(server: LoginServices, name: str, password: str) -> Account:
    creds = UsernamePassword(
        name.encode("utf-8", "surrogateescape"), password.encode("utf-8", "surrogateescape")
    )
    _, account, _ = await server.portal.login(creds, None, IAccount)
    assert isinstance(account, Account)
    return account


#: Names a registration may check at once, then per second (see :func:`register`).
NAME_CHECKS, NAME_CHECK_RATE = 5, 1.0


async def register(server: LoginServices, term: Terminal, peer: str) -> Account | None:
    """Ask for a name and a password twice; None (back to ``login:``) on an empty name.

    Asking whether a name is taken is a trip to the store's one thread, so a
    connection gets :data:`NAME_CHECKS` at once and then one a second, however
    fast it types names: before login there is no command bucket to pace it.
    """
    store = server.store
    pace = TokenBucket(NAME_CHECK_RATE, NAME_CHECKS)
    while True:
        name = (await term.read_line("Username: ")).strip()
        if not name:
            return None
        problem = username_problem(name, registering=True)
        if problem is None:
            delay = pace.wait(server.clock.seconds())
            if delay:
                await deferLater(server.clock, delay)
            pace.take(server.clock.seconds())
        if problem is None and await store.get(name) is not None:
            problem = "That name is taken; choose another."
        if problem is None:
            break
        term.write(problem + "\n")
    while True:
        password = await term.read_line("Password: ", hidden=True)
        problem = password_problem(password)
        if problem is not None:
            term.write(problem + "\n")
            continue
        if await term.read_line("Password again: ", hidden=True) == password:
            break
        term.write("Passwords do not match; try again.\n")
    taken = server.clock.seconds()
    if not server.registrations.take(peer, taken):
        term.write(TOO_MANY_REGISTRATIONS)
        return None
    try:
        account = await store.create_user(name, password)
    except UserExists:
        server.registrations.give_back(peer, taken)
        term.write("That name was taken a moment ago; choose another.\n")
        return None
    except BaseException:
        server.registrations.give_back(peer, taken)
        raise
    try:
        await server.account_created(account, by=None, peer=peer)
    except UNAVAILABLE:
        # No home for it (disk full): take the account back so the name can be tried again.
        server.registrations.give_back(peer, taken)
        d = store.delete(name)
        d.addErrback(lambda f: log.failure("removing half-made account {user}", f, user=name))
        raise
    term.write(f"Welcome, {name}! Your account is ready.\n")
    return account
