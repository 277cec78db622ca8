"""Whether two listen endpoints answer on one address: the pages need an origin of their own.

A browser's origin is scheme, host and port. The personal pages must never
share one with the browser terminal (``--web``): a user's page on the
terminal's origin could script the terminal of whoever opens it. So the
option parser compares each ``--pages`` endpoint with each ``--web`` one
before anything is bound: the same TCP port on the same address (or on a
wildcard address, which includes every other), or the same unix socket path,
is refused with a message saying why.

Endpoint strings are read the way Twisted's ``serverFromString`` reads them
(``tcp:8080:interface=127.0.0.1``, ``tcp:port=8080``, ``ssl:8443:…``,
``unix:/path``, wrapped in ``haproxy:``); port 0 (any free port) never
collides. A kind this module does not know (``systemd:``…) is not compared.
"""

from __future__ import annotations

import re

from attrs import frozen

_WILDCARDS = frozenset({"", "0.0.0.0", "::", "::0"})
_TCP_KINDS = frozenset({"tcp", "tcp6", "ssl"})


@frozen
class Address:
    """Where an endpoint listens: (``tcp``, interface, port) or (``unix``, path, 0)."""

    family: str
    where: str
    port: int


def _split(description: str) -> list[str]:
    """``serverFromString``'s fields: ``:`` separates, ``\\:`` is a colon inside a field."""
    return [part.replace("\\:", ":") for part in re.split(r"(?<!\\):", description)]


def address_of(description: str) -> Address | None:
    """Where ``description`` listens, or None for a kind not compared (or not understood)."""
    text = description.strip()
    while text.startswith("haproxy:"):
        text = text[len("haproxy:") :]
    kind, *fields = _split(text)
    args = [f for f in fields if "=" not in f]
    kwargs = dict(f.split("=", 1) for f in fields if "=" in f)
    if kind in _TCP_KINDS:
        port_text = kwargs.get("port", args[0] if args else "")
        try:
            port = int(port_text)
        except ValueError:
            return None
        interface = kwargs.get("interface", args[1] if kind != "ssl" and len(args) > 1 else "")
        return Address("tcp", interface.strip("[]").lower(), port)
    if kind == "unix":
        path = kwargs.get("address", args[0] if args else "")
        return Address("unix", path, 0) if path else None
    return None


def overlap(a: str, b: str) -> bool:
    """Would listeners on ``a`` and ``b`` answer on one address (one browser origin)?"""
    first, second = address_of(a), address_of(b)
    if first is None or second is None or first.family != second.family:
        return False
    if first.family == "unix":
        return first.where == second.where
    if first.port == 0 or first.port != second.port:
        return False
    return first.where == second.where or first.where in _WILDCARDS or second.where in _WILDCARDS


def shared_with_web(pages: tuple[str, ...], web: tuple[str, ...]) -> tuple[str, str] | None:
    """The first (pages, web) pair of endpoints that overlap, or None."""
    for p in pages:
        for w in web:
            if overlap(p, w):
                return p, w
    return None
