"""``--pages ENDPOINT``: each user's ``~/public_html/`` at ``/~USER/``, as static files.

The tilde tradition: a user publishes by putting files in ``public_html``
(with the shell's file commands or over SFTP), and anyone can read them.
Pages are the users' own content, so they are served on an origin of their
own (the operator gives ``--pages`` another port or address than ``--web``;
the option parser refuses the same one), and every answer, the 404s and
redirects included, carries ``Content-Security-Policy: sandbox`` (the page
runs in an opaque origin: no script of it can reach any other page, cookie
or storage) and ``X-Content-Type-Options: nosniff``.

What is served is decided by ``files/public.py``: the path is checked
lexically, then opened one component at a time without following links;
a missing user, a missing file, a link, ``..`` (plain or encoded), and a user
whose account is locked or banned (``hidden``: asked in memory, never the store)
all get the one :data:`NOT_FOUND` answer, so a visitor cannot tell which accounts
exist, nor which are locked.
``/~USER`` is redirected to ``/~USER/`` without looking at the disk, for the
same reason. A directory answers with its ``index.html``; there are no
listings.

The file is sent by ``twisted.web.static.File`` (ranges, ``If-Modified-Since``,
content types from the name) over the descriptor opened above, in 64 KiB
chunks as the client takes them. Opening it (one ``open`` and ``fstat`` per
path component, at most 65 components, no directory read) runs on the reactor
thread: a few microseconds on a local disk, which is why ``--homes`` on a slow
network filesystem is a poor fit for pages.

The ``Host`` header is not checked (unlike the terminal's page): everything
here is public, and a sandboxed page has no origin a rebinding name could
borrow. Connections are bounded by :class:`~shellserver.ops.httpguard.Guard`
like the terminal's page; a response being sent restarts its clock each time
the client takes a chunk, so a download may be long but a client that stops
reading is cut off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO, cast
from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import static
from twisted.web.http import MOVED_PERMANENTLY, NOT_ALLOWED, NOT_FOUND
from twisted.web.resource import Resource
from twisted.web.server import Request

from shellserver.files.public import (
    Directory,
    NotPublished,
    Published,
    components,
    open_published,
)
from shellserver.ops.httpguard import BoundedSite, Counted, Guard
from shellserver.ops.metrics import Metrics
from shellserver.ops.throttle import LogLimit
from shellserver.store.accounts import username_problem

log = Logger()

#: On every answer: a user's page runs sandboxed, and its bytes are never sniffed into a type.
SECURITY_HEADERS = (
    (b"Content-Security-Policy", b"sandbox"),
    (b"X-Content-Type-Options", b"nosniff"),
)
#: The one answer for a user, a file, a link or a path that is not served.
NOT_FOUND_BODY = b"Not found\n"
#: Byte ranges one request may ask for; with more, the whole file is sent once instead (so
#: overlapping ranges cannot make one request send a file many times over).
MAX_RANGES = 16
#: No request here takes a body: more than this ends the connection.
MAX_BODY = 64 * 1024
#: Guard's answer when the listener is full, with the headers every answer has.
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Security-Policy: sandbox\r\nX-Content-Type-Options: nosniff\r\n"
    b"Connection: close\r\nContent-Length: 40\r\n\r\n"
    b"Too many connections; try again later.\r\n"
)


def user_of(segment: str) -> str:
    """The user a first path segment ``~USER`` names; :class:`NotPublished` for anything else, so
    a name no account can have is never looked up on the disk."""
    if not segment.startswith("~"):
        raise NotPublished
    user = segment[1:]
    if username_problem(user) is not None:
        raise NotPublished
    return user


class _Taken:
    """The published file as twisted.web's producers read it.

    A producer reads the next chunk only when the client has taken the last
    one, so each read restarts the connection's response clock: a slow
    download goes on, a client that stops reading meets the deadline.
    """

    def __init__(self, file: BinaryIO, taken: Callable[[], None]) -> None:
        self.file = file
        self.taken = taken

    def read(self, size: int = -1) -> bytes:
        """The next chunk, after telling the guard the client took the previous one."""
        self.taken()
        return self.file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        """For ranges: the producers seek to each range's start."""
        return self.file.seek(offset, whence)

    def close(self) -> None:
        """The producer is done (or the client went): the descriptor is closed."""
        self.file.close()


class PageFile(static.File):
    """twisted.web's ``File`` over a descriptor :func:`open_published` opened.

    Its size, time and type come from that descriptor's ``fstat`` and the
    file's name, never from a path looked up again (which could be swapped for
    a link in between), and it never lists or walks a directory.
    """

    isLeaf = True

    def __init__(self, published: Published, taken: Callable[[], None]) -> None:
        super().__init__("/" + published.name, defaultType="application/octet-stream")
        # The type comes from the name alone: ``notes.txt.gz`` is a download of a gzip file,
        # not text the browser is told to unpack. Text is UTF-8, as the shell writes it.
        self.contentEncodings = {}
        kind, _ = static.getTypeAndEncoding(
            published.name, self.contentTypes, {}, "application/octet-stream"
        )
        self.type = f"{kind}; charset=utf-8" if kind.startswith("text/") else kind
        self.encoding = None
        self.published = published
        self.taken = taken

    def render_GET(self, request: Request) -> bytes | int:
        """twisted.web's answer, but a ``Range`` of more than :data:`MAX_RANGES` ranges is
        ignored: the file is sent whole, once."""
        ranges = request.getHeader(b"range")
        if ranges is not None and ranges.count(b",") >= MAX_RANGES:
            request.requestHeaders.removeHeader(b"range")
        result: bytes | int = super().render_GET(request)
        return result

    render_HEAD = render_GET

    def restat(self, reraise: bool = True) -> None:
        """Nothing to look up: the ``fstat`` of the open descriptor is the truth."""

    def exists(self) -> bool:
        """It was opened."""
        return True

    def isdir(self) -> bool:
        """Only regular files are ever opened for serving."""
        return False

    def getsize(self) -> int:
        """The size when it was opened (ranges and ``Content-Length`` agree with it)."""
        return self.published.size

    def getModificationTime(self) -> float:
        """For ``Last-Modified`` and ``If-Modified-Since``."""
        return self.published.mtime

    def openForReading(self) -> Any:
        """The open descriptor, wrapped so each chunk the client takes restarts its clock."""
        return _Taken(self.published.file, self.taken)

    def close(self) -> None:
        """Close the descriptor when no producer took it (a 304, a HEAD, a bad range)."""
        self.published.file.close()


def _security_headers(request: Request) -> None:
    for name, value in SECURITY_HEADERS:
        request.setHeader(name, value)


def _plain(request: Request, code: int, body: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-cache")
    return body


def _peer(request: Request) -> str:
    return getattr(request.getClientAddress(), "host", None) or "local"


class Pages(Resource):
    """The whole site: ``/~USER`` and everything below it, from ``homes``, the folder of homes."""

    isLeaf = True

    def __init__(
        self, homes: str, clock: IReactorTime, hidden: Callable[[str], bool] = lambda _: False
    ) -> None:
        super().__init__()
        self.homes = homes
        self.clock = clock
        #: Whose pages are withheld (locked or banned accounts): asked in memory, per request.
        self.hidden = hidden
        self._refusals = LogLimit()

    def render(self, request: Request) -> bytes | int:
        """One of three answers: the file (or a directory's ``index.html``), a redirect to the
        directory's ``/`` form, or :data:`NOT_FOUND_BODY`, whatever the reason."""
        try:
            segments = [s.decode("utf-8") for s in request.postpath or []]
        except UnicodeDecodeError:
            return self.not_found(request)
        if not segments:
            return self.not_found(request)
        first, rest = segments[0], segments[1:]
        try:
            user = user_of(first)
            if not rest:  # /~user: the same redirect for every name, nothing looked up
                return self.redirect(request, [first])
            names = components(rest)
            if self.hidden(user):
                raise NotPublished
            found = open_published(self.homes, user, names, slash=rest[-1] == "")
        except NotPublished:
            self._note_escape(request, rest)
            return self.not_found(request)
        if isinstance(found, Directory):
            return self.redirect(request, [first, *names])
        page = PageFile(found, _taken(request))
        result: bytes | int = page.render(request)
        if isinstance(result, bytes):  # answered without a producer: nothing reads the file
            page.close()
        return result

    def not_found(self, request: Request) -> bytes:
        """The same status, headers and body for every reason (no user enumeration)."""
        return _plain(request, NOT_FOUND, NOT_FOUND_BODY)

    def redirect(self, request: Request, segments: list[str]) -> bytes:
        """To the ``/`` form of a directory, built from the checked segments (never an
        open redirect: it always starts with ``/~``)."""
        location = "/" + "/".join(quote(s, safe="~") for s in segments) + "/"
        request.setHeader(b"Location", location.encode("ascii"))
        return _plain(request, MOVED_PERMANENTLY, b"Moved to " + location.encode("ascii") + b"\n")

    def _note_escape(self, request: Request, rest: list[str]) -> None:
        """A path with ``..`` (or an encoded ``/``) is logged once a minute at most, with how
        many there were: someone is probing for files outside the homes."""
        if not any(s == ".." or "/" in s for s in rest):
            return
        count = self._refusals.due(self.clock.seconds())
        if count:
            log.info(
                "refused {count} page request(s) for a path leaving public_html; latest from "
                "{peer}: {path!r}",
                event="pages_path_refused",
                count=count,
                peer=_peer(request),
                path=request.path.decode("ascii", "replace")[:200],
            )


def _taken(request: Request) -> Callable[[], None]:
    """What restarts this connection's response clock (nothing in a test without a guard)."""
    counted = request.channel.transport if request.channel is not None else None
    if isinstance(counted, Counted):
        return counted.draining
    return lambda: None


class _Request(Request):
    """A pages request: the security headers first, GET and HEAD only, no body kept, and the
    status and bytes counted."""

    _body = 0

    def process(self) -> None:
        """The security headers before anything can answer, so every answer has them (a 405,
        an error page too)."""
        _security_headers(self)
        super().process()

    def handleContentChunk(self, data: bytes) -> None:
        """Count the body as it comes, so a large one is cut off before it is held."""
        self._body += len(data)
        if self._body > MAX_BODY:
            if self.channel is not None and self.channel.transport is not None:
                self.channel.transport.abortConnection()  # type: ignore[attr-defined]
            return
        super().handleContentChunk(data)

    def render(self, resrc: Any) -> None:
        """Static files are read, never posted to."""
        if self.method not in (b"GET", b"HEAD"):
            self.setHeader(b"Allow", b"GET, HEAD")
            body = _plain(self, NOT_ALLOWED, b"Method not allowed\n")
            self.setHeader(b"Content-Length", b"%d" % len(body))
            self.write(body)
            self.finish()
            return
        super().render(resrc)

    def write(self, data: bytes) -> None:
        """Body bytes counted as they are handed to the connection."""
        if data:
            cast(PagesSite, self.site).metrics.page_bytes(len(data))
        super().write(data)

    def finish(self) -> None:
        """One answer counted by its status."""
        if not self.finished and not self._disconnected:
            cast(PagesSite, self.site).metrics.page_answered(self.code)
        super().finish()


class PagesSite(BoundedSite):
    """The pages' ``Site``: no access log (the metrics count the answers)."""

    requestFactory = _Request

    def __init__(self, resource: Resource, metrics: Metrics) -> None:
        super().__init__(resource)
        self.metrics = metrics
        self.displayTracebacks = False


def pages_site(
    homes: str,
    clock: IReactorTime,
    metrics: Metrics,
    max_http: int,
    max_http_per_address: int,
    hidden: Callable[[str], bool] = lambda _: False,
) -> Guard:
    """The listener's factory: the pages of the homes under ``homes``, behind the connection
    counts; ``hidden`` users' pages (locked, banned) answer as a missing user's."""
    site = PagesSite(Pages(homes, clock, hidden), metrics)
    return Guard(site, clock, max_http, max_http_per_address, busy=BUSY)
