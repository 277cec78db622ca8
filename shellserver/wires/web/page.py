"""``--web ENDPOINT``: the page at ``/``, its assets, and the WebSocket at ``/ws``.

A browser is a terminal anyone has: the same login, editor and shell as
telnet, with nothing to install, and nothing fetched from anywhere but this
server (no CDN that could change the page under its users).

Everything is served from memory, read once at start from the package
(``assets/``: our page, and xterm.js vendored from npm, see docs/admin.md).
The page gets a strict Content-Security-Policy: scripts, styles, fonts and the
socket from this server only, nothing inline except the ``<style>`` elements
xterm.js makes itself, which carry the page's one-time nonce (``page.js``
hands it to them). Every request must name an allowed host (``Host``, see
``hosts.py``: no DNS rebinding), and the WebSocket is accepted only from
the page's own origin or one given with ``--web-origin`` (``Origin``); it then
becomes a :class:`~shellserver.wires.web.socket.WebWire` in front of the same login
and shell as telnet.

The assets never change while the server runs: the page links each with its
content hash in the query (``assets/page.js?v=…``), and an asset asked for
with its current hash is served ``immutable`` for a year, so a browser loads
xterm.js once, not on every visit. An asset asked for without it (or with an
old one) is served with ``no-cache`` and an ETag.

Connections are bounded by :class:`~shellserver.ops.httpguard.Guard` (caps in
total and per address, deadlines for a request and for taking a response,
one response in flight per connection).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from importlib import resources
from typing import Any, cast
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import FORBIDDEN, NOT_ALLOWED
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.websocket import WebSocketResource

from shellserver.ops.httpguard import BoundedSite, Counted, Guard
from shellserver.ops.throttle import LogLimit
from shellserver.terminal.discipline import ILineReceiver, IWire
from shellserver.wires.web.hosts import HostPolicy
from shellserver.wires.web.socket import FrameLimit, Pinger, WebWire

log = Logger()

#: Served files: name in ``assets/`` -> content type.
ASSETS = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "vendor/xterm.js": "text/javascript; charset=utf-8",
    "vendor/xterm.css": "text/css; charset=utf-8",
    "vendor/addon-fit.js": "text/javascript; charset=utf-8",
}
NONCE = "{{NONCE}}"
#: A request body is never needed here: more than this ends the connection.
MAX_BODY = 64 * 1024
_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shellserver</title></head>
<body><h1>The browser terminal's files are missing</h1>
<p>This installation of shellserver has no xterm.js ({missing}).
From a checkout, run <code>make assets</code> (needs npm) and install again;
see docs/admin.md, "The browser terminal". Telnet works meanwhile.</p></body></html>
"""


def csp(nonce: str) -> str:
    """The page's Content-Security-Policy: everything from this server only, inline styles
    only with this response's nonce, so injected text can never run or load anything."""
    return (
        "default-src 'none'; script-src 'self'; "
        f"style-src 'self' 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self'; font-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


#: An asset asked for with its current content hash never changes: cached for a year.
IMMUTABLE = b"public, max-age=31536000, immutable"


def _common_headers(request: Request, cache: bytes = b"no-cache") -> None:
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"Cache-Control", cache)


def content_hash(body: bytes) -> str:
    """An asset's version in its link: a new release changes the link, so a year-long
    cache never serves a stale script."""
    return hashlib.sha256(body).hexdigest()[:16]


class Asset(Resource):
    """One file of the page, from memory: read once at start, so serving costs no disk
    access and the bytes cannot change under a running server."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type.encode("ascii")
        self.version = content_hash(body).encode("ascii")
        self.etag = hashlib.sha256(body).hexdigest()[:32].encode("ascii")

    def render_GET(self, request: Request) -> bytes:
        """Cached for a year when asked for by its current hash (the page's own links),
        revalidated by ETag otherwise, so a browser loads xterm.js once, not per visit."""
        current = (request.args or {}).get(b"v") == [self.version]
        _common_headers(request, IMMUTABLE if current else b"no-cache")
        request.setHeader(b"Content-Type", self.content_type)
        if request.setETag(self.etag):  # the browser has it: 304, no body
            return b""
        return self.body


def versioned(template: str, files: dict[str, bytes | None]) -> str:
    """The page with each asset's link carrying its content hash (``assets/x.js?v=…``)."""
    for name, body in files.items():
        if body is not None:
            template = template.replace(
                f'"assets/{name}"', f'"assets/{name}?v={content_hash(body)}"'
            )
    return template


class Page(Resource):
    """The page, with a new CSP nonce each time it is served."""

    isLeaf = True

    def __init__(self, template: str) -> None:
        super().__init__()
        self.template = template

    def render_GET(self, request: Request) -> bytes:
        """A fresh nonce per response: one an attacker saw on an earlier page is worthless."""
        _common_headers(request)
        nonce = secrets.token_urlsafe(18)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", csp(nonce).encode("ascii"))
        return self.template.replace(NONCE, nonce).encode("utf-8")


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """The socket is for the page's own host only (no cross-site WebSocket hijacking).

    ``Origin`` (which every browser sends) must name the host the request was
    made to (``Host``), port included; its scheme is not compared, so a TLS
    reverse proxy in front of a plain listener works. A client that sends no
    ``Origin`` is not a browser and could send any value: it is let in.
    (:class:`HostPolicy` checks besides that ``Host`` is a name of ours.)
    """
    if origin is None:
        return True
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def _local(request: Request) -> str:
    """The address the request arrived at (the listener's own, any interface of a wildcard)."""
    return getattr(request.getHost(), "host", None) or ""


class Socket(WebSocketResource):
    """``/ws``: Origin checked, then Twisted's handshake, then a byte limit on frames.

    Refusals are logged once a minute at most, with how many there were.
    """

    isLeaf = True
    factory: WireFactory

    def __init__(self, factory: WireFactory, hosts: HostPolicy) -> None:
        super().__init__(factory)
        self.hosts = hosts
        self._refusals = LogLimit()

    def render_GET(self, request: Request) -> bytes | int:
        """Refuse other sites' pages before the handshake (no cross-site hijacking), hand
        the connection to admission once it is a socket, and cap frames from the start."""
        origin = request.getHeader("origin")
        if not self.hosts.origin_allowed(origin, request.getHeader("host"), _local(request)):
            count = self._refusals.due(self.factory.clock.seconds())
            if count:
                log.info(
                    "refused {count} WebSocket(s) from another site; latest from {peer}, "
                    "origin {origin!r}",
                    event="web_origin_refused",
                    count=count,
                    peer=_peer(request),
                    origin=origin,
                )
            request.setResponseCode(FORBIDDEN)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"WebSocket refused: wrong origin\n"
        counted = request.channel.transport
        if isinstance(counted, Counted):
            counted.bound(False)  # a WebSocket's Output holds up to --max-output, paused at 64 KiB
        result = super().render_GET(request)
        wire = getattr(request, "wire", None)
        if isinstance(counted, Counted):
            if isinstance(wire, WebWire):
                counted.handed_on()  # admission counts it from here on, as a login waiting
            else:
                counted.bound(True)
        if isinstance(wire, WebWire):
            _limit_frames(request, wire)
        return result


def _limit_frames(request: Request, wire: WebWire) -> None:
    """Count every byte the browser sends against :class:`FrameLimit` before Twisted sees it.

    The upgrade points the HTTP channel's ``dataReceived`` at the WebSocket
    parser; we put the limit in front of that parser.
    """
    channel = request.channel
    parse = channel.dataReceived
    limit = FrameLimit()

    def received(data: bytes) -> None:
        if wire.closing:
            return
        if limit.feed(data):
            parse(data)
        else:
            wire.too_big()

    channel.dataReceived = received  # type: ignore[method-assign]


def _asks_to_resume(request: Request) -> bool:
    """``/ws?resume``: the client takes resume tokens and sends its own first. Read from the
    query itself: Twisted's ``args`` leave out a name without ``=``."""
    query = request.uri.partition(b"?")[2]
    return any(part.partition(b"=")[0] == b"resume" for part in query.split(b"&"))


def _peer(request: Request) -> str:
    return getattr(request.getClientAddress(), "host", None) or "local"


class WireFactory:
    """Twisted's ``WebSocketServerFactory``: a :class:`WebWire` per accepted socket."""

    def __init__(
        self, attach: Callable[[IWire], ILineReceiver], clock: IReactorTime, max_output: int
    ) -> None:
        self.attach = attach
        self.clock = clock
        self.max_output = max_output
        self.pinger = Pinger(clock)

    def buildProtocol(self, request: Request) -> WebWire:
        """A wire for this socket, left on the request so :class:`Socket` can put the frame
        limit in front of it and tell admission about it."""
        resume = _asks_to_resume(request)  # the page that reconnects by itself
        wire = WebWire(
            self.attach, self.clock, _peer(request), self.max_output, self.pinger, resume
        )
        request.wire = wire  # type: ignore[attr-defined]
        return wire


class _Request(Request):
    """No page here takes a body: a client sending a big one is cut off, not buffered.

    A request whose ``Host`` is not one of ours (DNS rebinding) is refused
    with 403 before anything is served.
    """

    _body = 0

    def handleContentChunk(self, data: bytes) -> None:
        """Count the body as it comes, so a large one is cut off before it is held."""
        self._body += len(data)
        if self._body > MAX_BODY:
            if self.channel is not None and self.channel.transport is not None:
                self.channel.transport.abortConnection()  # type: ignore[attr-defined]
            return
        super().handleContentChunk(data)

    def render(self, resrc: Any) -> None:
        """The ``Host`` check before any resource answers: DNS rebinding gets 403, not a page."""
        site = cast(WebSite, self.site)
        if not site.hosts.host_allowed(self.getHeader("host"), _local(self)):
            site.host_refused(self)
            self.setResponseCode(FORBIDDEN)
            self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            self.setHeader(b"Cache-Control", b"no-store")
            self.write(HOST_REFUSED)
            self.finish()
            return
        if self.method not in (b"GET", b"HEAD"):
            self.setResponseCode(NOT_ALLOWED)
            self.setHeader(b"Allow", b"GET, HEAD")
            self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            self.write(b"Method not allowed\n")
            self.finish()
            return
        super().render(resrc)


HOST_REFUSED = b"Unknown host name for this server. Its operator can allow it with --web-origin.\n"


class WebSite(BoundedSite):
    """No access-log line per request: the login events say who came in."""

    requestFactory = _Request

    def __init__(self, resource: Resource, hosts: HostPolicy, clock: IReactorTime) -> None:
        super().__init__(resource)
        self.hosts = hosts
        self.clock = clock
        self._refusals = LogLimit()

    def host_refused(self, request: Request) -> None:
        """Logged once a minute at most, with how many there were."""
        count = self._refusals.due(self.clock.seconds())
        if count:
            log.info(
                "refused {count} web request(s) for an unknown host name; latest from "
                "{peer}, Host {host!r}",
                event="web_host_refused",
                count=count,
                peer=_peer(request),
                host=request.getHeader("host"),
            )


def _read(name: str) -> bytes | None:
    try:
        return resources.files("shellserver.wires.web").joinpath("assets", name).read_bytes()
    except OSError:
        return None


def web_site(
    attach: Callable[[IWire], ILineReceiver],
    clock: IReactorTime,
    max_output: int,
    max_http: int = 200,
    max_http_per_address: int = 20,
    hosts: HostPolicy | None = None,
) -> Guard:
    """The whole site: ``/``, ``/assets/…``, ``/ws``, behind the connection counts."""
    hosts = hosts or HostPolicy.from_options(())
    root = Resource()
    files = {name: _read(name) for name in ASSETS}
    missing = [name for name, body in files.items() if body is None]
    page = _read("index.html")
    if missing or page is None:
        text = _MISSING.format(missing=", ".join(missing) or "index.html")
        log.warn(
            "the browser terminal's files are missing ({missing}): /  says how to add them",
            missing=", ".join(missing),
        )
        root.putChild(b"", Page(text))
    else:
        root.putChild(b"", Page(versioned(page.decode("utf-8"), files)))
    assets = Resource()
    root.putChild(b"assets", assets)
    for name, body in files.items():
        if body is not None:
            node = assets
            *folders, leaf = name.split("/")
            for folder in folders:
                child = node.children.get(folder.encode())
                if child is None:
                    child = Resource()
                    node.putChild(folder.encode(), child)
                node = child
            node.putChild(leaf.encode(), Asset(body, ASSETS[name]))
    root.putChild(b"ws", Socket(WireFactory(attach, clock, max_output), hosts))
    site = WebSite(root, hosts, clock)
    site.displayTracebacks = False
    return Guard(site, clock, max_http, max_http_per_address)
