"""Which host names the page is served under, and which origins may open the WebSocket.

A page on another name that resolves to this server (DNS rebinding: the
attacker's ``evil.test`` pointed at our address) makes the browser send
``Host: evil.test`` and ``Origin: http://evil.test``; comparing the two only
says they agree. So, as Django's ``ALLOWED_HOSTS`` and Jupyter's
``allow_origin`` do, the ``Host`` of every request (page, assets, socket)
must be one of the names the operator serves the page under:

- ``--web-origin URL`` (repeatable): ``https://shell.example.org`` (an
  origin: its host name is allowed, and the origin may open the socket) or
  ``shell.example.org`` (a host name, port optional);
- without it: the address the request arrived at (the listener's own
  address, any interface of a wildcard listener) and this machine's host
  name, short and as given;
- for a request that arrived on a loopback address, always ``localhost``,
  ``127.0.0.1`` and ``[::1]``: a rebinding page cannot make the browser send
  those names.

The WebSocket's ``Origin`` must be an origin given with ``--web-origin``, or
name the request's own (allowed) ``Host``: the page's own origin. A client
that sends no ``Origin`` is not a browser (it could send any value): only
its ``Host`` is checked.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from attrs import frozen

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")


def _valid_name(name: str) -> bool:
    if ":" in name:
        try:
            ipaddress.IPv6Address(name.split("%")[0])
        except ValueError:
            return False
        return True
    return bool(_NAME.fullmatch(name))


def _split_host(text: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]`` to (lower-cased name without brackets, port)."""
    try:
        parts = urlsplit("//" + text.strip())
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or parts.path or parts.query or parts.fragment or parts.username:
        return None
    name = name.rstrip(".").lower()
    return (name, port) if _valid_name(name) else None


def parse_web_origin(text: str) -> tuple[str, str | None]:
    """One ``--web-origin`` value: (the host name it allows, the origin it allows or None).

    Raises ValueError saying what is expected.
    """
    want = (
        f"not an origin or host name: {text!r} "
        "(e.g. https://shell.example.org, http://10.0.0.5:8080 or shell.example.org)"
    )
    if "://" in text:
        try:
            parts = urlsplit(text.strip())
            name, port = parts.hostname, parts.port
        except ValueError:
            raise ValueError(want) from None
        if (
            parts.scheme not in _DEFAULT_PORTS
            or not name
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username
            or not _valid_name(name.rstrip(".").lower())
        ):
            raise ValueError(want)
        name = name.rstrip(".").lower()
        shown = f"[{name}]" if ":" in name else name
        if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
            shown += f":{port}"
        return name, f"{parts.scheme}://{shown}"
    split = _split_host(text)
    if split is None:
        raise ValueError(want)
    return split[0], None


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def machine_names() -> frozenset[str]:
    """This machine's host name as ``hostname`` prints it, and its short form."""
    name = socket.gethostname().rstrip(".").lower()
    return frozenset(n for n in (name, name.split(".")[0]) if n)


@frozen
class HostPolicy:
    """The names and origins allowed (see the module's docstring)."""

    #: Host names allowed on any listener address (from ``--web-origin``, or this machine's).
    names: frozenset[str]
    #: Origins allowed to open the socket besides the page's own (from ``--web-origin``).
    origins: frozenset[str] = frozenset()
    #: True without ``--web-origin``: the address a request arrived at is allowed as a name too.
    own_address: bool = True

    @classmethod
    def from_options(cls, values: tuple[str, ...]) -> HostPolicy:
        """From ``--web-origin`` values; none means this machine's own names and addresses,
        so the page works out of the box and a rebinding name is still refused."""
        if not values:
            return cls(machine_names())
        parsed = [parse_web_origin(v) for v in values]
        return cls(
            frozenset(name for name, _ in parsed),
            frozenset(origin for _, origin in parsed if origin is not None),
            own_address=False,
        )

    def host_allowed(self, host: str | None, local: str) -> bool:
        """May a request with this ``Host`` header, arriving at address ``local``, be served?"""
        if host is None:
            return False
        split = _split_host(host)
        if split is None:
            return False
        name = split[0]
        if name in self.names:
            return True
        if self.own_address and name == local.split("%")[0].lower():
            return True
        return name in LOOPBACK_NAMES and _is_loopback(local)

    def origin_allowed(self, origin: str | None, host: str | None, local: str) -> bool:
        """May a browser from ``origin`` open the socket (``Host`` already allowed)?"""
        if origin is None:
            return True  # not a browser: nothing to rebind
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
            return False
        if f"{parts.scheme}://{parts.netloc.lower()}" in self.origins:
            return True
        if host is None or parts.netloc.lower() != host.strip().lower():
            return False
        return self.host_allowed(host, local)
