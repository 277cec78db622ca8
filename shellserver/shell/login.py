"""The login dialogue: ``login:``, ``Password:``, ``new`` registration (telnet, the browser)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from attrs import frozen
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from shellserver.ops.metrics import Metrics
from shellserver.ops.pacing import AccountPacing
from shellserver.ops.throttle import FailedLogins, Registrations, TokenBucket
from shellserver.shell.secondfactor import CODE_PROMPT, SecondFactor
from shellserver.shell.trouble import Trouble
from shellserver.store.accounts import (
    UNAVAILABLE,
    Account,
    AccountLocked,
    AccountStore,
    StoreUnavailable,
    UserExists,
    password_problem,
    username_problem,
)
from shellserver.store.auth import IAccount
from shellserver.store.otp import Verdict
from shellserver.terminal.discipline import Interrupted, Terminal
from shellserver.text.sanitize import careful

log = Logger()


@frozen
class Login:
    """What the login dialogue uses, given by the assembly: the values it reads
    (``--registration``, the host name of the banner) and the parts it calls. An account made
    here is handed to ``account_created`` (its home, its count, its log line)."""

    hostname: str
    registration: bool
    clock: IReactorTime
    store: AccountStore
    portal: Portal
    failed_logins: FailedLogins
    account_pacing: AccountPacing
    registrations: Registrations
    metrics: Metrics
    trouble: Trouble
    account_created: Callable[[Account, str | None, str | None], Awaitable[None]]
    #: The second factor: a password login of an account that has one asks for a code.
    second_factor: SecondFactor

    def banner(self) -> str:
        """The first thing a connection sees: where it is and, when open, how to sign up."""
        text = f"shellserver on {self.hostname}\n"
        if self.registration:
            text += "Type 'new' at the login prompt to create an account.\n"
        return text + "\n"


MAX_TRIES = 3
#: Characters of a typed login name kept in the log of a failed login.
LOGGED_NAME = 64
#: Seconds from a wrong password's arrival to ``Login incorrect``, by failure on the connection.
FAILURE_DELAYS = (1.0, 2.0, 4.0)
TOO_MANY = "Too many failed logins; try again later\n"
UNAVAILABLE_TEXT = "Service temporarily unavailable\n"
#: The store cannot be reached (PostgreSQL down): said, then the connection closes, as
#: nothing can be done until it is back.
STORE_DOWN_TEXT = "Service temporarily unavailable; please try again later.\n"
TOO_MANY_REGISTRATIONS = "Too many accounts created from your address; try again later.\n"


def said_unavailable(login: Login, term: Terminal, error: Exception, what: str) -> bool:
    """A store or disk failure during a login or a registration, said to the user and logged
    once a minute: True when the connection closes (the store cannot be reached), False when
    it stays at ``login:`` (a full disk, a moment's trouble)."""
    if isinstance(error, StoreUnavailable):
        login.trouble.unavailable(error, what, "store down")
        term.write(STORE_DOWN_TEXT)
        return True
    login.trouble.unavailable(error, what)
    term.write(UNAVAILABLE_TEXT)
    return False


async def login_dialogue(
    login: Login,
    term: Terminal,
    peer: str,
    banner: bool = True,
    progressed: Callable[[], None] = lambda: None,
) -> Account | None:
    """The account that logged in, or None when the connection should close.

    EndOfInput and Disconnected from the terminal propagate to the caller.
    A store or disk failure (disk full) is told as ``Service temporarily
    unavailable`` and the dialogue goes on: the connection stays. A store that
    cannot be reached (PostgreSQL down) is told so and the connection closes.
    ``progressed`` is called when a login name arrives (admission's stalled list).
    """
    if banner:
        term.write(login.banner())
    failures = 0
    while True:
        if login.failed_logins.blocked(peer, login.clock.seconds()):
            term.write(TOO_MANY)
            return None
        try:
            name = (await term.read_line("login: ")).strip()
            if not name:
                continue
            progressed()
            if name == "new":
                if not login.registration:
                    term.write("Registration is closed; ask an administrator for an account.\n")
                    continue
                if login.registrations.full(peer, login.clock.seconds()):
                    term.write(TOO_MANY_REGISTRATIONS)
                    continue
                try:
                    account = await register(login, term, peer)
                except UNAVAILABLE as e:
                    if said_unavailable(login, term, e, "registration"):
                        return None
                    continue
                if account is not None:
                    return account
                continue
            password = await term.read_line("Password: ", hidden=True)
        except Interrupted:
            continue
        if not await login.failed_logins.attempt(peer, login.clock.seconds()):
            term.write(TOO_MANY)
            return None
        # An account under distributed guessing is checked one password at a time, slowly.
        if not await login.account_pacing.turn(name, peer, lambda: term.connected):
            login.failed_logins.finished(peer, login.clock.seconds(), failed=False)
            return None
        arrived = login.clock.seconds()
        wrong = False
        found: Account | None = None
        try:
            found = await authenticate(login, name, password)
        except UnauthorizedLogin:
            wrong = True
            failed(login, name, peer, "incorrect")
        except AccountLocked:
            failed(login, name, peer, "locked")
            term.write("Your account is locked; contact an administrator.\n")
            return None
        except UNAVAILABLE as e:
            if said_unavailable(login, term, e, "login"):
                return None
            continue
        finally:
            login.failed_logins.finished(peer, login.clock.seconds(), failed=wrong)
            login.account_pacing.finished(name, failed=wrong)
        if found is not None:
            try:
                outcome = await second_factor(login, term, found, peer)
            except Interrupted:
                continue
            except UNAVAILABLE as e:
                if said_unavailable(login, term, e, "login"):
                    return None
                continue
            if outcome is None:
                term.write(TOO_MANY)
                return None
            passed, arrived = outcome
            if passed:
                login.metrics.login(True)
                login.account_pacing.succeeded(found.name, peer)
                return found
        failures += 1
        # The answer comes at a moment fixed by when the password arrived, not by how long
        # its hash took: a hash at another cost, or none, cannot be told apart by timing.
        wait = arrived + FAILURE_DELAYS[failures - 1] - login.clock.seconds()
        if wait > 0:
            await deferLater(login.clock, wait)
        term.write("Login incorrect\n")
        if failures >= MAX_TRIES:
            return None


async def second_factor(
    login: Login, term: Terminal, account: Account, peer: str
) -> tuple[bool, float] | None:
    """After the right password: whether the login may go on (no code needed, or the right
    one typed) and when the code arrived; None when the address is blocked meanwhile.

    The code is checked as a password is: in a failed-login slot of the address and
    in the account's turn, and a wrong one counts as a failed login for both.
    """
    factor = login.second_factor
    needed = account.otp  # read with the password's hash, in the same trip to the store
    if needed is None:
        needed = await factor.otp.enabled(account.name)
    if not needed:
        return True, login.clock.seconds()
    typed = await term.read_line(CODE_PROMPT, hidden=True)
    name = account.name
    if not await login.failed_logins.attempt(peer, login.clock.seconds()):
        return None
    if not await login.account_pacing.turn(name, peer, lambda: term.connected):
        login.failed_logins.finished(peer, login.clock.seconds(), failed=False)
        return None
    arrived = login.clock.seconds()
    wrong = False
    try:
        verdict = await factor.otp.verify(name, typed, arrived)
        wrong = not verdict.accepted and verdict is not Verdict.NOT_ENABLED
    finally:
        login.failed_logins.finished(peer, login.clock.seconds(), failed=wrong)
        login.account_pacing.finished(name, failed=wrong)
    if wrong:
        failed(login, name, peer, f"verification code {verdict.value}")
        return False, arrived
    if verdict is Verdict.RECOVERY:
        log.info("{user} used a recovery code", event="otp_recovery_used", user=name)
    return True, arrived


def failed(login: Login, name: str, peer: str, reason: str) -> None:
    """Counted and logged; the name is what was typed, so it is cut short and made careful."""
    login.metrics.login(False)
    log.info(
        "failed login for {user} from {peer}: {reason}",
        event="login_failed",
        user=careful(name[:LOGGED_NAME]),
        peer=peer,
        reason=reason,
    )


async def authenticate(login: Login, name: str, password: str) -> Account:
    """Through ``twisted.cred``, so telnet, the browser and SSH check passwords the one same
    way."""
    creds = UsernamePassword(
        name.encode("utf-8", "surrogateescape"), password.encode("utf-8", "surrogateescape")
    )
    _, account, _ = await login.portal.login(creds, None, IAccount)
    assert isinstance(account, Account)
    return account


#: Names a registration may check at once, then per second (see :func:`register`).
NAME_CHECKS, NAME_CHECK_RATE = 5, 1.0


async def register(login: Login, term: Terminal, peer: str) -> Account | None:
    """Ask for a name and a password twice; None (back to ``login:``) on an empty name.

    Asking whether a name is taken is a trip to the store's one thread, so a
    connection gets :data:`NAME_CHECKS` at once and then one a second, however
    fast it types names: before login there is no command bucket to pace it.
    """
    store = login.store
    pace = TokenBucket(NAME_CHECK_RATE, NAME_CHECKS)
    while True:
        name = (await term.read_line("Username: ")).strip()
        if not name:
            return None
        problem = username_problem(name, registering=True)
        if problem is None:
            delay = pace.wait(login.clock.seconds())
            if delay:
                await deferLater(login.clock, delay)
            pace.take(login.clock.seconds())
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
    taken = login.clock.seconds()
    if not login.registrations.take(peer, taken):
        term.write(TOO_MANY_REGISTRATIONS)
        return None
    try:
        account = await store.create_user(name, password)
    except UserExists:
        login.registrations.give_back(peer, taken)
        term.write("That name was taken a moment ago; choose another.\n")
        return None
    except BaseException:
        login.registrations.give_back(peer, taken)
        raise
    try:
        await login.account_created(account, None, peer)
    except UNAVAILABLE:
        # No home for it (disk full): take the account back so the name can be tried again.
        login.registrations.give_back(peer, taken)
        d = store.delete(name)
        d.addErrback(lambda f: log.failure("removing half-made account {user}", f, user=name))
        raise
    term.write(f"Welcome, {name}! Your account is ready.\n")
    return account
