"""Resume tokens: how a browser page that lost its socket gets its session back by itself.

A page cannot answer ``Resume it? [Y/n]`` for its user after a login it never saw again,
so the server hands a wire whose client takes tokens (:class:`ResumeChannel`, the
browser's) a random token once its session runs. The page keeps it in its tab's
``sessionStorage`` and, when its socket drops, sends it first thing on the new
socket: a token that names a session of this node which still lives resumes it
without a login or a question, and is spent (the resumed session gets a new one).

The tokens are 128 random bits (``secrets.token_urlsafe(16)``), one per session at
most, forgotten when their session ends, worthless once a detached session has
waited ``--linger`` seconds. Only their SHA-256 is kept, as the key of the table, and
the presented token's digest is compared with :func:`hmac.compare_digest`: neither the
table nor the time a look-up takes says anything about a live token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from shellserver.ops.throttle import LogLimit

if TYPE_CHECKING:
    from shellserver.hub.session import Session

log = Logger()

#: Random bytes in a token: 128 bits, 22 characters of URL-safe base64.
TOKEN_BYTES = 16
#: A presented token longer than this is not one of ours (and is not hashed).
MAX_TOKEN = 64


@runtime_checkable
class ResumeChannel(Protocol):
    """A wire whose client may take resume tokens and present one before its login (the
    browser page, which reconnects by itself). The session start and the connection
    check for it with ``isinstance``; telnet and SSH wires are not one."""

    @property
    def takes_tokens(self) -> bool:
        """True when this client said it takes tokens: only then is one made for it."""

    def first_token(self) -> Deferred[str | None]:
        """Fires with the token the client presents before its login ("" when it has none),
        or None at once when the client does not speak of tokens; fails with
        ``Disconnected`` if the connection ends first."""

    def send_token(self, token: str) -> None:
        """Hand the client its new token (after a login, after each resume)."""

    def coming_back(self) -> None:
        """The next close is a restart's, not a goodbye: the client is told to reconnect
        (the browser's close code 1012) and resume with its token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@define
class ResumeTokens:
    """The live tokens of this node's sessions: at most one per session, so the table is
    bounded by the sessions that exist; a session's token goes when it ends or resumes."""

    #: ``--linger``: a detached session's token is worthless once it has waited this long.
    linger: float
    #: SHA-256 of a token -> its session.
    _by_digest: dict[bytes, Session] = field(factory=dict)
    #: Session id -> the digest of its live token.
    _by_session: dict[int, bytes] = field(factory=dict)
    #: Refusals are logged at most once a minute, with how many there were.
    _refused_log: LogLimit = field(factory=LogLimit)

    def __len__(self) -> int:
        return len(self._by_digest)

    def issue(self, session: Session) -> str:
        """A new token for ``session``; the one it had before is worthless from now on."""
        self.forget(session)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        digest = _digest(token)
        self._by_digest[digest] = session
        self._by_session[session.id] = digest
        return token

    def take(self, token: str, now: float) -> Session | None:
        """The session ``token`` names, spent (a token works once); None when it is not a
        live token: unknown, used, rotated, of a session that ended, or of a detached
        session that waited longer than the linger."""
        if not token or len(token) > MAX_TOKEN:
            return None
        digest = _digest(token)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        mine = self._by_session.get(session.id, b"")
        if not hmac.compare_digest(mine, digest):
            return None
        self.forget(session)
        detached = session.detached_at
        if detached is not None and now >= detached + self.linger:
            return None
        return session

    def parked(self, session: Session) -> str:
        """``session``'s live token as a restart parks it: its SHA-256 in hex ("" without one),
        never the token itself, so the store holds nothing a page could present."""
        digest = self._by_session.get(session.id)
        return "" if digest is None else digest.hex()

    def unparked(self, session: Session, digest_hex: str) -> None:
        """The next start takes a parked session back with the token its page still holds:
        the page reconnects and presents it as after any dropped socket."""
        try:
            digest = bytes.fromhex(digest_hex)
        except ValueError:
            return
        if len(digest) != hashlib.sha256().digest_size or digest in self._by_digest:
            return
        self.forget(session)
        self._by_digest[digest] = session
        self._by_session[session.id] = digest

    def forget(self, session: Session) -> None:
        """``session`` ended or resumed: its token, if it had one, names nothing now."""
        digest = self._by_session.pop(session.id, None)
        if digest is not None:
            self._by_digest.pop(digest, None)

    def refused(self, peer: str, now: float) -> None:
        """Log a refused token, at most once a minute, with the count; never the token."""
        count = self._refused_log.due(now)
        if count:
            log.info(
                "refused {count} resume token(s); latest from {peer}",
                event="resume_refused",
                count=count,
                peer=peer,
            )
