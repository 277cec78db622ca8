"""twisted.cred over the account store: a checker for passwords and a realm for accounts."""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from shellserver.accounts import AccountStore, LoginFailed


class IAccount(Interface):
    """The avatar of a shell login: an ``accounts.Account``."""


@implementer(ICredentialsChecker)
class StoreChecker:
    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, store: AccountStore) -> None:
        self.store = store

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        name = credentials.username.decode("utf-8", "surrogateescape")
        password = credentials.password.decode("utf-8", "surrogateescape")
        d: Deferred[Any] = self.store.authenticate(name, password)
        d.addCallbacks(lambda account: account.name.encode(), _unauthorized)
        return d


def _unauthorized(failure: Failure) -> Failure:
    if failure.check(LoginFailed):
        return Failure(UnauthorizedLogin())
    return failure  # AccountLocked and real errors pass through


@implementer(IRealm)
class AccountRealm:
    def __init__(self, store: AccountStore) -> None:
        self.store = store

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Deferred[Any]:
        if IAccount not in interfaces:
            raise NotImplementedError("only shell accounts are served")
        name = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        d = self.store.get(name)
        d.addCallback(lambda account: (IAccount, account, lambda: None))
        return d


def make_portal(store: AccountStore) -> Portal:
    return Portal(AccountRealm(store), [StoreChecker(store)])
