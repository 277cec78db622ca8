"""``--web ENDPOINT``: the page at ``/``, its assets, and the WebSocket at ``/ws`` (SPEC §10).

Everything is served from memory, read once at start from the package
(``webassets/``: our page, and xterm.js vendored from npm, see docs/admin.md).
The page gets a strict Content-Security-Policy: scripts, styles, fonts and the
socket from this server only, nothing inline except the ``<style>`` elements
xterm.js makes itself, which carry the page's one-time nonce (``page.js``
hands it to them). The WebSocket is accepted only from the page's own host
(``Origin``), then becomes a :class:`~shellserver.wires.web.WebWire` in front
of the same login and shell as telnet.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.http import FORBIDDEN, NOT_ALLOWED
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.websocket import WebSocketResource

from shellserver.terminal import ILineReceiver, IWire
from shellserver.throttle import LogLimit
from shellserver.wires.web import FrameLimit, Pinger, WebWire

log = Logger()

#: Served files: name in ``webassets/`` -> content type.
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
    return (
        "default-src 'none'; script-src 'self'; "
        f"style-src 'self' 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self'; font-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _common_headers(request: Request) -> None:
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"Cache-Control", b"no-cache")


class Asset(Resource):
    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type.encode("ascii")
        self.etag = hashlib.sha256(body).hexdigest()[:32].encode("ascii")

    def render_GET(self, request: Request) -> bytes:
        _common_headers(request)
        request.setHeader(b"Content-Type", self.content_type)
        if request.setETag(self.etag):  # the browser has it: 304, no body
            return b""
        return self.body


class Page(Resource):
    """The page, with a new CSP nonce each time it is served."""

    isLeaf = True

    def __init__(self, template: str) -> None:
        super().__init__()
        self.template = template

    def render_GET(self, request: Request) -> bytes:
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


class Socket(WebSocketResource):
    """``/ws``: Origin checked, then Twisted's handshake, then a byte limit on frames.

    Refusals are logged once a minute at most, with how many there were.
    """

    isLeaf = True
    factory: WireFactory

    def __init__(self, factory: WireFactory) -> None:
        super().__init__(factory)
        self._refusals = LogLimit()

    def render_GET(self, request: Request) -> bytes | int:
        origin = request.getHeader("origin")
        if not origin_allowed(origin, request.getHeader("host")):
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
        result = super().render_GET(request)
        wire = getattr(request, "wire", None)
        if isinstance(wire, WebWire):
            _limit_frames(request, wire)
            counted = request.channel.transport
            if isinstance(counted, _Counted):
                counted.upgraded()  # admission counts it from here on, as a login waiting
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
        wire = WebWire(self.attach, self.clock, _peer(request), self.max_output, self.pinger)
        request.wire = wire  # type: ignore[attr-defined]
        return wire


class _Request(Request):
    """No page here takes a body: a client sending a big one is cut off, not buffered."""

    _body = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._body += len(data)
        if self._body > MAX_BODY:
            if self.channel is not None and self.channel.transport is not None:
                self.channel.transport.abortConnection()  # type: ignore[attr-defined]
            return
        super().handleContentChunk(data)

    def render(self, resrc: Any) -> None:
        if self.method not in (b"GET", b"HEAD"):
            self.setResponseCode(NOT_ALLOWED)
            self.setHeader(b"Allow", b"GET, HEAD")
            self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            self.write(b"Method not allowed\n")
            self.finish()
            return
        super().render(resrc)


class WebSite(Site):
    """No access-log line per request: the login events say who came in."""

    noisy = False
    requestFactory = _Request

    def log(self, request: Any) -> None:
        pass


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nContent-Length: 42\r\n\r\n"
    b"Too many connections; try again later.\r\n\r\n"
)


class _Counted(ProtocolWrapper):
    """One HTTP connection, counted until it closes or becomes a WebSocket."""

    factory: Guard
    peer = ""
    counted = False

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        self.peer = getattr(transport.getPeer(), "host", None) or "local"
        self.counted = self.factory.enter(self.peer)
        if not self.counted:
            transport.write(_BUSY)
            transport.loseConnection()

    def upgraded(self) -> None:
        if self.counted:
            self.counted = False
            self.factory.leave(self.peer)

    def connectionLost(self, reason: Any = None) -> None:
        self.upgraded()
        super().connectionLost(reason)


class Guard(WrappingFactory):
    """HTTP connections that are not (yet) a WebSocket: at most so many, and per address.

    A page load is a few short requests and then one WebSocket, which the
    login's own admission counts (``--max-unauth``, ``--max-unauth-per-addr``,
    shared with telnet). Before the upgrade, the same limits bound plain HTTP
    connections on their own, so idle ones (closed by twisted.web after 60 s)
    cannot use up the server's descriptors.
    """

    protocol = _Counted
    noisy = False

    def __init__(self, site: Site, total: int, per_address: int) -> None:
        super().__init__(site)
        self.total = total
        self.per_address = per_address
        self.open = 0
        self.by_address: dict[str, int] = {}

    def enter(self, peer: str) -> bool:
        mine = self.by_address.get(peer, 0)
        if (self.total and self.open >= self.total) or (
            self.per_address and mine >= self.per_address
        ):
            return False
        self.open += 1
        self.by_address[peer] = mine + 1
        return True

    def leave(self, peer: str) -> None:
        self.open -= 1
        mine = self.by_address[peer] - 1
        if mine:
            self.by_address[peer] = mine
        else:
            del self.by_address[peer]


def _read(name: str) -> bytes | None:
    try:
        return resources.files("shellserver.wires").joinpath("webassets", name).read_bytes()
    except OSError:
        return None


def web_site(
    attach: Callable[[IWire], ILineReceiver],
    clock: IReactorTime,
    max_output: int,
    max_http: int = 200,
    max_http_per_address: int = 20,
) -> Guard:
    """The whole site: ``/``, ``/assets/…``, ``/ws``, behind the connection counts."""
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
        root.putChild(b"", Page(page.decode("utf-8")))
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
    root.putChild(b"ws", Socket(WireFactory(attach, clock, max_output)))
    site = WebSite(root)
    site.displayTracebacks = False
    return Guard(site, max_http, max_http_per_address)
