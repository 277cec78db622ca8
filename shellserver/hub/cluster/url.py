"""``--cluster redis://HOST[:PORT][/DB]``: where the nodes of a cluster meet.

Only the plain form is taken: no password, user, query or TLS, so that what
the operator wrote is all the connection there is, and anything else is
refused at start with a line saying what was expected rather than being
half-understood.
"""

from __future__ import annotations

import ipaddress
import re

from attrs import frozen

DEFAULT_PORT = 6379
EXPECTED = "expected redis://HOST[:PORT][/DB], e.g. redis://127.0.0.1:6379/0"

_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_DIGITS = re.compile(r"[0-9]{1,9}")


@frozen
class RedisURL:
    """A Redis server and database number; ``str()`` gives the canonical URL back."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0

    def __str__(self) -> str:
        """The canonical form, as the log lines and ``status`` show where the cluster meets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parse_redis_url(text: str) -> RedisURL:
    """``redis://HOST[:PORT][/DB]`` (port 6379, db 0 by default; IPv6 as ``[::1]``).

    Raises ValueError with one line naming what is wrong and what is expected.
    """
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() != "redis":
        shown = f"{scheme}://" if sep else repr(text)
        raise ValueError(f"not a Redis URL: {shown} ({EXPECTED})")
    if "?" in rest or "#" in rest:
        raise ValueError(f"a query or fragment is not supported in {text!r} ({EXPECTED})")
    if "@" in rest:
        raise ValueError(f"a user or password is not supported in {text!r} ({EXPECTED})")
    authority, slash, path = rest.partition("/")
    host, port = _authority(text, authority)
    db = 0
    if slash and path != "":
        if not _DIGITS.fullmatch(path):
            raise ValueError(f"the database in {text!r} is not a number ({EXPECTED})")
        db = int(path)
    return RedisURL(host, port, db)


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
