"""``--cluster URL``: where the nodes of a cluster meet, in the forms operators have them.

- ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``: plain TCP; a password alone is
  ``AUTH PASSWORD`` (``requirepass``), a user and password ``AUTH USER PASSWORD`` (an ACL user);
- ``rediss://…`` the same over TLS, the server's certificate checked against the system's
  trusted authorities or ``?ca=FILE``, and its name against the host;
- ``unix://[[USER]:PASSWORD@]/PATH[?db=N]`` a unix socket (``?password=`` and ``?user=`` as
  other Redis clients take them are accepted too).

User and password may be percent-encoded (``%40`` for ``@``). The password is a secret:
``str()`` and ``repr()`` show it as ``***``, and so does every error message about a URL
(:func:`redact`), so it never reaches a log line, ``status`` or a usage error. Anything
else (an unknown query key, ``?ca`` without TLS) is refused at start with a line saying
what was expected rather than being half-understood.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import parse_qsl, quote, unquote

from attrs import field, frozen

DEFAULT_PORT = 6379
EXPECTED = (
    "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://… (TLS, ?ca=FILE) "
    "or unix:///PATH?db=N, e.g. redis://127.0.0.1:6379/0"
)
SCHEMES = ("redis", "rediss", "unix")
#: What the password is shown as, everywhere.
HIDDEN = "***"

_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_DIGITS = re.compile(r"[0-9]{1,9}")
#: A user name as Redis ACL takes it, after percent-decoding: no spaces or controls.
_USER = re.compile(r"[!-~]{1,128}")
_MAX_PASSWORD = 512
_MAX_PATH = 4096


@frozen
class RedisURL:
    """A Redis server, how to reach it (TCP, TLS, unix socket), who to be there and which
    database; ``str()`` gives the canonical URL back with the password hidden."""

    host: str = ""
    port: int = DEFAULT_PORT
    db: int = 0
    #: "redis" (TCP), "rediss" (TLS) or "unix".
    scheme: str = "redis"
    #: The unix socket's path (scheme "unix").
    path: str = ""
    #: The ACL user (``AUTH USER PASSWORD``); None: the default user.
    user: str | None = None
    #: ``AUTH``'s password; None: no AUTH. Never shown (see :func:`redact`).
    password: str | None = field(default=None, repr=False)
    #: The CA certificate file a ``rediss://`` server's certificate is checked against;
    #: None: the system's trusted authorities.
    ca: str | None = None

    def __str__(self) -> str:
        """The canonical form with the password as ``***``, as log lines and ``status`` show
        where the cluster meets."""
        return self.show(hidden=True)

    def __repr__(self) -> str:
        """As ``str()``: a config dumped in a traceback or a debug line keeps the secret."""
        return f"RedisURL({self.show(hidden=True)!r})"

    @property
    def tls(self) -> bool:
        """Whether the connection is TLS (``rediss://``)."""
        return self.scheme == "rediss"

    def auth(self) -> tuple[str, ...]:
        """``AUTH``'s arguments (``()`` when there is no password): ``(PASSWORD,)`` or
        ``(USER, PASSWORD)``."""
        if self.password is None:
            return ()
        if self.user is None:
            return (self.password,)
        return (self.user, self.password)

    def show(self, hidden: bool = True) -> str:
        """The URL; with ``hidden=False`` the real password, for a test reading it back."""
        userinfo = ""
        if self.password is not None or self.user is not None:
            user = quote(self.user, safe="") if self.user is not None else ""
            secret = HIDDEN if hidden else quote(self.password or "", safe="")
            userinfo = f"{user}:{secret}@" if self.password is not None else f"{user}@"
        if self.scheme == "unix":
            return f"unix://{userinfo}{quote(self.path)}?db={self.db}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        tail = f"?ca={quote(self.ca)}" if self.ca is not None else ""
        return f"{self.scheme}://{userinfo}{host}:{self.port}/{self.db}{tail}"


def redact(text: str) -> str:
    """``text`` (a URL as given, perhaps malformed) with any password replaced by ``***``: the
    user information up to the last ``@`` (``redis://user:SECRET@…``; all of it when it has
    no ``:``), and a ``password=`` query. It may hide more than the password, never less."""
    scheme, sep, rest = text.partition("://")
    if sep:
        userinfo, at, after = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            rest = (f"{user}:{HIDDEN}" if colon and "/" not in user else HIDDEN) + "@" + after
        text = f"{scheme}{sep}{rest}"
    return re.sub(r"(?i)([?&]password=)[^&#]*", rf"\g<1>{HIDDEN}", text)


def parse_redis_url(text: str) -> RedisURL:
    """One of the forms in this module's docstring (port 6379, db 0 by default; IPv6 as
    ``[::1]``).

    Raises ValueError with one line naming what is wrong and what is expected; the
    line never holds the password.
    """
    shown = redact(text)
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        what = f"{scheme}://" if sep else repr(shown)
        raise ValueError(f"not a Redis URL: {what} ({EXPECTED})")
    if "#" in rest:
        raise ValueError(f"a fragment is not supported in {shown!r} ({EXPECTED})")
    # the user information ends at the last @ before the path or query (percent-encode an
    # @, /, ? or # in a password)
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i != -1], default=len(rest))
    userinfo, at, authority_ = rest[:cut].rpartition("@")
    user, password = _userinfo(shown, userinfo) if at else (None, None)
    rest = authority_ + rest[cut:]
    rest, _, query_text = rest.partition("?")
    query = _query(shown, query_text)
    if scheme == "unix":
        if authority_:
            raise ValueError(f"a unix socket URL has no host in {shown!r} ({EXPECTED})")
        return _unix(shown, rest, query, user, password)
    authority, slash, path = rest.partition("/")
    host, port = _authority(shown, authority)
    db = 0
    if slash and path != "":
        db = _db(shown, path)
    ca = query.pop("ca", None)
    if ca is not None and scheme != "rediss":
        raise ValueError(f"?ca= is for TLS (rediss://), in {shown!r} ({EXPECTED})")
    if ca == "":
        raise ValueError(f"?ca= names no file in {shown!r} ({EXPECTED})")
    if query:
        raise ValueError(f"unknown option ?{sorted(query)[0]}= in {shown!r} ({EXPECTED})")
    return RedisURL(host, port, db, scheme, "", user, password, ca)


def _query(shown: str, text: str) -> dict[str, str]:
    if not text:
        return {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError(f"not a query: {shown!r} ({EXPECTED})") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key in query:
            raise ValueError(f"?{key}= is given twice in {shown!r} ({EXPECTED})")
        query[key] = value
    return query


def _unix(
    shown: str, path: str, query: dict[str, str], user: str | None, password: str | None
) -> RedisURL:
    path = unquote(path)
    if not path.startswith("/") or len(path) > _MAX_PATH or "\x00" in path:
        raise ValueError(f"a unix socket needs an absolute path in {shown!r} ({EXPECTED})")
    db = _db(shown, query.pop("db")) if "db" in query else 0
    if "password" in query:
        if password is not None:
            raise ValueError(f"two passwords in {shown!r} ({EXPECTED})")
        password = _password(shown, query.pop("password"))
    if "user" in query:
        if user is not None:
            raise ValueError(f"two user names in {shown!r} ({EXPECTED})")
        user = _user(shown, query.pop("user"))
    if user is not None and password is None:
        raise ValueError(f"a user needs a password in {shown!r} ({EXPECTED})")
    if query:
        raise ValueError(f"unknown option ?{sorted(query)[0]}= in {shown!r} ({EXPECTED})")
    return RedisURL("", DEFAULT_PORT, db, "unix", path, user, password, None)


def _userinfo(shown: str, userinfo: str) -> tuple[str | None, str | None]:
    user_text, colon, password_text = userinfo.partition(":")
    if not colon:
        raise ValueError(
            f"a user needs a password (USER:PASSWORD@, or :PASSWORD@ alone) in {shown!r} "
            f"({EXPECTED})"
        )
    user = _user(shown, unquote(user_text)) if user_text else None
    return user, _password(shown, unquote(password_text))


def _user(shown: str, user: str) -> str:
    if not _USER.fullmatch(user):
        raise ValueError(f"not a user name in {shown!r} ({EXPECTED})")
    return user


def _password(shown: str, password: str) -> str:
    if not password:
        raise ValueError(f"an empty password in {shown!r} ({EXPECTED})")
    if len(password) > _MAX_PASSWORD or any(c in password for c in "\r\n\x00"):
        raise ValueError(f"the password in {shown!r} is too long or holds a line break")
    return password


def _db(shown: str, text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"the database in {shown!r} is not a number ({EXPECTED})")
    return int(text)


def _authority(text: str, authority: str) -> tuple[str, int]:
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or not _is_ipv6(host):
            raise ValueError(f"not an IPv6 address in {text!r} ({EXPECTED})")
        if after and not after.startswith(":"):
            raise ValueError(f"unexpected {after!r} after the address in {text!r} ({EXPECTED})")
        port_text = after[1:] if after else None
    else:
        if authority.count(":") > 1:
            raise ValueError(
                f"an IPv6 address goes in brackets, as redis://[::1]:6379/0, in {text!r}"
            )
        host, colon, port_text_ = authority.partition(":")
        port_text = port_text_ if colon else None
        if not host:
            raise ValueError(f"no host in {text!r} ({EXPECTED})")
        if not _HOST.fullmatch(host):
            raise ValueError(f"not a host name: {host!r} in {text!r} ({EXPECTED})")
    if port_text is None:
        return host, DEFAULT_PORT
    port = int(port_text) if _DIGITS.fullmatch(port_text) else 0
    if not 1 <= port <= 65535:
        raise ValueError(f"the port in {text!r} is not 1 to 65535 ({EXPECTED})")
    return host, port


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
