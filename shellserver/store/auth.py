"""twisted.cred over the account store: a checker for passwords and a realm for accounts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from shellserver.store.accounts import Account, AccountStore, LoginFailed


class IAccount(Interface):
    """The avatar of a shell login: an ``accounts.Account``."""


class Accounts(Protocol):
    """Where the realm looks accounts up (``AccountStore``)."""

    def get(self, name: str) -> Deferred[Account | None]:
        """The account for an avatar id the checker did not just read (a key login)."""
        ...


#: A wire's avatar for an account that may log in, and what ends it (conch's logout).
AvatarFactory = Callable[[Account], tuple[object, Callable[[], None]]]


@implementer(ICredentialsChecker)
class StoreChecker:
    """Passwords checked by the store, so every wire's password login (the login dialogue, and
    SSH's userauth, which wraps this checker) meets the same timing-safe check."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, store: AccountStore, checked: dict[str, Account] | None = None) -> None:
        self.store = store
        #: Accounts just checked, for the realm (see ``AccountRealm.checked``).
        self.checked: dict[str, Account] = {} if checked is None else checked

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        """Names arrive as bytes from any client, so they are decoded losslessly
        (``surrogateescape``); a wrong password becomes cred's ``UnauthorizedLogin``, while a
        locked account and real errors pass through for the dialogue to word."""
        name = credentials.username.decode("utf-8", "surrogateescape")
        password = credentials.password.decode("utf-8", "surrogateescape")
        d: Deferred[Any] = self.store.authenticate(name, password)
        d.addCallbacks(self._checked, _unauthorized)
        return d

    def _checked(self, account: Account) -> bytes:
        self.checked[account.name] = account
        return account.name.encode()


def _unauthorized(failure: Failure) -> Failure:
    if failure.check(LoginFailed):
        return Failure(UnauthorizedLogin())
    return failure  # AccountLocked and real errors pass through


@implementer(IRealm)
class AccountRealm:
    """Accounts for avatar ids.

    ``Portal.login`` calls the realm in the same callback chain in which the
    checker succeeded, so the account the checker has just read from the
    store (``checked``, shared with the checker) is current: taking it saves
    a second store round trip per login. Other avatar ids (another checker,
    a direct call) are looked up in the store.

    A wire that authenticates by itself (SSH) asks for its own avatar
    interface (``IConchUser``); ``avatars`` builds it from the account. A
    locked or deleted account gets none (a key checker does not look at the
    lock), and the avatar's logout is what conch calls when the connection ends.
    """

    def __init__(
        self,
        store: Accounts,
        checked: dict[str, Account] | None = None,
        avatars: Mapping[Any, AvatarFactory] | None = None,
    ) -> None:
        self.store = store
        self.checked: dict[str, Account] = {} if checked is None else checked
        self.avatars: Mapping[Any, AvatarFactory] = avatars or {}

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Deferred[Any]:
        """Takes the checker's fresh account first (and drops it, so none goes stale), then
        the store; a wire's own avatar is refused for a locked or deleted account."""
        name = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        account = self.checked.pop(name, None)  # first: never left behind to go stale
        if IAccount not in interfaces:
            for interface in interfaces:
                make = self.avatars.get(interface)
                if make is not None:
                    d = succeed(account) if account is not None else self.store.get(name)
                    d.addCallback(_wire_avatar, interface, make)
                    return d
            raise NotImplementedError("only shell accounts are served")
        if account is not None:
            return succeed((IAccount, account, _no_logout))
        d = self.store.get(name)
        d.addCallback(lambda account: (IAccount, account, _no_logout))
        return d


def _no_logout() -> None:
    pass


def _wire_avatar(
    account: Account | None, interface: Any, make: AvatarFactory
) -> tuple[Any, object, Callable[[], None]]:
    if account is None or account.locked:
        raise UnauthorizedLogin()
    avatar, logout = make(account)
    return interface, avatar, logout


def make_portal(store: AccountStore) -> Portal:
    """The checker and realm made together, sharing the one table that saves each login its
    second store read."""
    checked: dict[str, Account] = {}
    return Portal(AccountRealm(store, checked), [StoreChecker(store, checked)])
