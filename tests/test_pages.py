"""Personal pages (``--pages``): paths resolved inside ``public_html`` only, and the real listener
as curl and a plain HTTP client meet it."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from realserver import TWISTD, RealServer, register
from test_ssh_integration import cli
from twisted.python import usage

from shellserver.app.tap import Options
from shellserver.files.public import (
    MAX_COMPONENTS,
    Directory,
    NotPublished,
    Published,
    components,
    open_published,
)
from shellserver.ops.admission import split_connections
from shellserver.wires.pages.endpoints import address_of, overlap, shared_with_web
from shellserver.wires.pages.site import MAX_RANGES, NOT_FOUND_BODY, user_of

# -- the path, lexically ------------------------------------------------------------------


def test_components_keep_plain_names_and_note_a_trailing_slash() -> None:
    assert components(["a", "b.html"]) == ["a", "b.html"]
    assert components(["docs", ""]) == ["docs"]
    assert components([""]) == []
    assert components(["été", "x y"]) == ["été", "x y"]


@pytest.mark.parametrize(
    "segments",
    [
        [".."],
        ["a", "..", "b"],
        ["."],
        ["a", "", "b"],
        ["..", "..", "etc", "passwd"],
        ["a/../../x"],  # an encoded %2F arrives inside one segment
        ["/etc/passwd"],
        ["a\x00b"],
        ["a\x1b[2Jb"],
        ["x" * 256],
        ["d"] * (MAX_COMPONENTS + 1),
        ["y" * 200] * 21,  # over 4096 bytes
    ],
)
def test_components_refuse_what_could_leave_or_hurt(segments: list[str]) -> None:
    with pytest.raises(NotPublished):
        components(segments)


def test_user_of_takes_only_a_tilde_and_a_possible_user_name() -> None:
    assert user_of("~alice") == "alice"
    for bad in ("alice", "~", "~..", "~.", "~Alice", "~a/b", "~" + "a" * 40, "~-x", "~~a"):
        with pytest.raises(NotPublished):
            user_of(bad)


# -- the path on disk ------------------------------------------------------------------------


@pytest.fixture
def homes(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    public = root / "alice" / "public_html"
    (public / "docs").mkdir(parents=True)
    (public / "index.html").write_text("<h1>alice</h1>")
    (public / "docs" / "a.txt").write_text("hello")
    (root / "bob").mkdir()
    (root / "bob" / "secret").write_text("bob's")
    return root


def _read(found: Published | Directory) -> bytes:
    assert isinstance(found, Published)
    with found.file:
        return found.file.read()


def test_a_file_an_index_and_a_directory_without_its_slash(homes: Path) -> None:
    found = open_published(str(homes), "alice", ["docs", "a.txt"], slash=False)
    assert isinstance(found, Published) and found.size == 5 and found.name == "a.txt"
    assert _read(found) == b"hello"
    assert _read(open_published(str(homes), "alice", [], slash=True)) == b"<h1>alice</h1>"
    assert isinstance(open_published(str(homes), "alice", [], slash=False), Directory)
    assert isinstance(open_published(str(homes), "alice", ["docs"], slash=False), Directory)


@pytest.mark.parametrize(
    ("user", "names", "slash"),
    [
        ("nobody", [], True),  # no such user
        ("bob", [], True),  # a user without public_html
        ("alice", ["missing.html"], False),
        ("alice", ["docs"], True),  # a directory without index.html: no listing
        ("alice", ["docs", "a.txt"], True),  # a file asked for as a directory
    ],
)
def test_what_is_not_there_is_not_published(
    homes: Path, user: str, names: list[str], slash: bool
) -> None:
    with pytest.raises(NotPublished):
        open_published(str(homes), user, names, slash)


def test_a_symlink_anywhere_in_the_path_is_not_followed(homes: Path, tmp_path: Path) -> None:
    public = homes / "alice" / "public_html"
    (public / "passwd").symlink_to("/etc/passwd")
    (public / "bobs").symlink_to(homes / "bob")
    (public / "same.txt").symlink_to(public / "docs" / "a.txt")  # even inside the folder
    for names in (["passwd"], ["bobs", "secret"], ["same.txt"]):
        with pytest.raises(NotPublished):
            open_published(str(homes), "alice", names, slash=False)
    (public / "docs" / "index.html").symlink_to("/etc/passwd")  # an index that is a link
    with pytest.raises(NotPublished):
        open_published(str(homes), "alice", ["docs"], slash=True)
    # public_html itself, or the whole home, a link to somewhere else
    (homes / "carol").mkdir()
    (homes / "carol" / "public_html").symlink_to(public)
    (homes / "dave").symlink_to(homes / "alice")
    for user in ("carol", "dave"):
        with pytest.raises(NotPublished):
            open_published(str(homes), user, [], slash=True)


def test_a_fifo_is_not_served_and_never_blocks(homes: Path) -> None:
    fifo = homes / "alice" / "public_html" / "pipe.html"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(NotPublished):
        open_published(str(homes), "alice", ["pipe.html"], slash=False)
    assert time.monotonic() - started < 1.0


def test_no_descriptor_is_left_open(homes: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        _read(open_published(str(homes), "alice", ["docs", "a.txt"], slash=False))
        open_published(str(homes), "alice", ["docs"], slash=False)
        with pytest.raises(NotPublished):
            open_published(str(homes), "alice", ["docs", "nope"], slash=False)
        with pytest.raises(NotPublished):
            open_published(str(homes), "alice", ["docs", "a.txt"], slash=True)
    assert len(os.listdir("/proc/self/fd")) == before


# -- the origin of its own -------------------------------------------------------------------


def test_endpoints_that_share_an_address() -> None:
    assert address_of("tcp:8080:interface=127.0.0.1") == address_of(
        "tcp:port=8080:interface=127.0.0.1"
    )
    assert overlap("tcp:8080", "tcp:8080")
    assert overlap("tcp:8080", "tcp:8080:interface=127.0.0.1")  # the wildcard holds every address
    assert overlap("haproxy:tcp:8080", "tcp6:8080:interface=\\:\\:")
    assert overlap("unix:/tmp/a.sock", "unix:address=/tmp/a.sock")
    assert not overlap("tcp:8080", "tcp:8081")
    assert not overlap("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.2")
    assert not overlap("tcp:0", "tcp:0")  # any free port: never the same
    assert not overlap("unix:/tmp/a.sock", "tcp:8080")
    assert shared_with_web(("tcp:8081", "tcp:8080"), ("tcp:8080",)) == ("tcp:8080", "tcp:8080")
    assert shared_with_web(("tcp:8081",), ("tcp:8080",)) is None


def test_the_options_refuse_pages_on_the_web_endpoint() -> None:
    with pytest.raises(usage.UsageError, match="share an address; personal pages need"):
        Options().parseOptions(["--web", "tcp:8080", "--pages", "tcp:8080:interface=0.0.0.0"])
    options = Options()
    options.parseOptions(["--web", "tcp:8080", "--pages", "tcp:8081"])
    assert options.config.pages == ("tcp:8081",)


def test_the_pages_have_their_own_share_of_connections() -> None:
    shares = split_connections(20000, 200, 16, 500)
    assert (shares.web_http, shares.metrics, shares.pages) == (200, 16, 500)
    assert shares.logins == 20000 - 200 - 16 - 500
    assert split_connections(40, 0, 0, 500).pages == 10  # at most a quarter
    assert split_connections(100, 0, 0).pages == 0


# -- the real listener ------------------------------------------------------------------------

pages_integration = pytest.mark.integration
_PAGES = re.compile(r"pages listening on .*port=(\d+)")


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """One server for the module's tests: each publishes as a user of its own, and what one
    counts (metrics, logged refusals) no other test adds to."""
    srv = RealServer(
        tmp_path_factory.mktemp("pages"),
        "--pages", "tcp:0:interface=127.0.0.1",
        "--metrics", "tcp:0:interface=127.0.0.1",
        "--max-registrations", "0",  # each test registers its own user from 127.0.0.1
        runner="twist-json",
    ).start()  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _PAGES.search(srv.log_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.pages_port = int(_PAGES.search(srv.log_text()).group(1))
        yield srv
    finally:
        srv.stop()


def _get(
    server: RealServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP client: the path is sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", server.pages_port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def _curl(server: RealServer, path: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    url = f"http://127.0.0.1:{server.pages_port}{path}"
    return subprocess.run(
        ["curl", "-s", "-i", "--path-as-is", "--max-time", "10", *args, url],
        capture_output=True,
        check=True,
    )


def _status(result: subprocess.CompletedProcess[bytes]) -> int:
    return int(result.stdout.split(b" ", 2)[1])


def _without_date(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "date"}


def _publish(server: RealServer, user: str) -> Path:
    """alice publishes the way a user does: mkdir and cat > in her shell."""
    c = register(server.port, user)
    prompt = f"{user}@testhost:~$ "
    c.send_line("mkdir public_html public_html/docs")
    c.expect(prompt)
    c.send_line("cat > public_html/index.html")
    c.send_line("<h1>Hello from alice</h1>")
    c.send_line(".")
    c.expect(prompt)
    c.send_line("cat > public_html/docs/notes.txt")
    c.send_line("0123456789")
    c.send_line(".")
    c.expect(prompt)
    c.close()
    return server.data / "home" / user / "public_html"


@pages_integration
def test_a_page_published_from_the_shell_is_served(pages: RealServer) -> None:
    _publish(pages, "ann")
    status, headers, body = _get(pages, "/~ann/")
    assert (status, body) == (200, b"<h1>Hello from alice</h1>\n")
    assert headers["content-type"] == "text/html; charset=utf-8"
    status, _, body = _get(pages, "/~ann/", headers={"Host": "evil.test"})
    assert (status, body) == (200, b"<h1>Hello from alice</h1>\n")  # no Host check: all public
    status, headers, body = _get(pages, "/~ann/docs/notes.txt")
    assert (status, body, headers["content-type"]) == (
        200,
        b"0123456789\n",
        "text/plain; charset=utf-8",
    )
    result = _curl(pages, "/~ann")
    assert _status(result) == 301 and b"\r\nLocation: /~ann/\r\n" in result.stdout
    result = _curl(pages, "/~ann/docs")
    assert _status(result) == 301 and b"\r\nLocation: /~ann/docs/\r\n" in result.stdout
    followed = _curl(pages, "/~ann", "-L")
    assert followed.stdout.endswith(b"<h1>Hello from alice</h1>\n")


@pages_integration
def test_a_missing_user_a_missing_file_a_link_and_dotdot_answer_alike(pages: RealServer) -> None:
    public = _publish(pages, "dot")
    (public / "passwd").symlink_to("/etc/passwd")
    (public / "up").symlink_to(public.parent)
    os.mkfifo(public / "fifo")
    answers = {
        path: _get(pages, path)
        for path in (
            "/~nobody/",
            "/~nobody/index.html",
            "/~dot/missing.html",
            "/~dot/passwd",
            "/~dot/up/public_html/index.html",
            "/~dot/fifo",
            "/~dot/docs/",  # a directory without index.html: no listing
            "/~dot/../dot/public_html/index.html",
            "/~dot/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/~dot/..%2f..%2f..%2fetc%2fpasswd",
            "/~dot//etc/passwd",
            "//etc/passwd",
            "/etc/passwd",
            "/~Dot/",
            "/",
        )
    }
    first = answers["/~nobody/"]
    assert first[0] == 404 and first[2] == NOT_FOUND_BODY
    for path, (status, headers, body) in answers.items():
        assert (status, _without_date(headers), body) == (
            first[0],
            _without_date(first[1]),
            first[2],
        ), path
    # curl, which leaves the path as typed with --path-as-is
    for path in ("/~dot/passwd", "/~dot/../../../../etc/passwd", "/~dot/%2E%2E/x"):
        result = _curl(pages, path)
        assert _status(result) == 404 and result.stdout.endswith(NOT_FOUND_BODY), path
        assert b"root:" not in result.stdout
    deadline = time.monotonic() + 5
    while "leaving public_html" not in pages.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    (event,) = [e for e in pages.events() if e.get("event") == "pages_path_refused"]
    assert (event["count"], event["peer"]) == (1, "127.0.0.1")  # then once a minute at most
    assert event["path"] == "/~dot/../dot/public_html/index.html"


@pages_integration
def test_every_answer_carries_the_sandbox_and_nosniff(pages: RealServer) -> None:
    _publish(pages, "sam")
    _, headers, _ = _get(pages, "/~sam/")
    modified = headers["last-modified"]
    cases = [
        ("GET", "/~sam/", {}, 200),
        ("HEAD", "/~sam/", {}, 200),
        ("GET", "/~sam/docs/notes.txt", {"Range": "bytes=2-4"}, 206),
        ("GET", "/~sam/docs/notes.txt", {"Range": "bytes=900-"}, 416),
        ("GET", "/~sam", {}, 301),
        ("GET", "/~sam/", {"If-Modified-Since": modified}, 304),
        ("GET", "/~nobody/", {}, 404),
        ("POST", "/~sam/", {}, 405),
        ("DELETE", "/~sam/", {}, 405),
    ]
    for method, path, extra, want in cases:
        status, headers, _ = _get(pages, path, method, extra)
        assert status == want, (method, path)
        assert headers["content-security-policy"] == "sandbox", (method, path)
        assert headers["x-content-type-options"] == "nosniff", (method, path)


@pages_integration
def test_range_and_if_modified_since(pages: RealServer) -> None:
    _publish(pages, "ray")
    ranged = _curl(pages, "/~ray/docs/notes.txt", "-r", "2-5")
    assert _status(ranged) == 206
    assert b"\r\nContent-Range: bytes 2-5/11\r\n" in ranged.stdout
    assert ranged.stdout.endswith(b"\r\n\r\n2345")
    _, headers, _ = _get(pages, "/~ray/docs/notes.txt")
    modified = headers["last-modified"]
    fresh = _curl(pages, "/~ray/docs/notes.txt", "-H", f"If-Modified-Since: {modified}")
    assert _status(fresh) == 304 and fresh.stdout.endswith(b"\r\n\r\n")
    old = formatdate(time.time() - 86400 * 365, usegmt=True)
    stale = _curl(pages, "/~ray/docs/notes.txt", "-H", f"If-Modified-Since: {old}")
    assert _status(stale) == 200 and stale.stdout.endswith(b"0123456789\n")


@pages_integration
def test_many_ranges_get_the_file_once_and_types_come_from_the_name(pages: RealServer) -> None:
    public = _publish(pages, "mia")
    few = ",".join(["0-1"] * 3)
    status, headers, body = _get(pages, "/~mia/docs/notes.txt", headers={"Range": f"bytes={few}"})
    assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
    many = ",".join(["0-10"] * (MAX_RANGES + 1))  # the whole file, over and over
    status, _, body = _get(pages, "/~mia/docs/notes.txt", headers={"Range": f"bytes={many}"})
    assert (status, body) == (200, b"0123456789\n")
    (public / "notes.txt.gz").write_bytes(b"\x1f\x8b not really")
    status, headers, _ = _get(pages, "/~mia/notes.txt.gz")
    assert status == 200 and "content-encoding" not in headers


@pages_integration
def test_answers_and_bytes_are_counted_in_the_metrics(pages: RealServer) -> None:
    """What these requests add to the counters (the module's other tests asked before)."""
    _publish(pages, "met")

    def counters() -> tuple[float, float, float]:
        scrape = http.client.HTTPConnection("127.0.0.1", pages.metrics_port, timeout=10)
        scrape.request("GET", "/metrics")
        text = scrape.getresponse().read().decode()
        scrape.close()

        def value(pattern: str) -> float:
            found = re.search(rf"^{pattern} (\S+)$", text, re.M)
            return float(found.group(1)) if found else 0.0

        return (
            value(r'shellserver_pages_requests_total\{status="200"\}'),
            value(r'shellserver_pages_requests_total\{status="404"\}'),
            value(r"shellserver_pages_sent_bytes_total"),
        )

    before = counters()
    for _ in range(3):
        _get(pages, "/~met/docs/notes.txt")
    _get(pages, "/~nobody/")
    deadline = time.monotonic() + 10
    while (after := counters()) == before:  # the page is rendered once a second at most
        assert time.monotonic() < deadline, "the counters never moved"
        time.sleep(0.2)
    ok, missing, sent = (a - b for a, b in zip(after, before, strict=True))
    assert (ok, missing) == (3, 1)
    assert sent == 3 * 11 + len(NOT_FOUND_BODY)


@pages_integration
def test_pages_on_the_web_endpoint_refuse_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            TWISTD, "-n", "--pidfile=", "--logfile", str(tmp_path / "log"), "shellserver",
            "--data", str(tmp_path / "data"), "--telnet", "tcp:0:interface=127.0.0.1",
            "--web", "tcp:18080:interface=127.0.0.1", "--pages", "tcp:18080",
        ],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        b"twistd shellserver: --pages tcp:18080 and --web tcp:18080:interface=127.0.0.1 "
        b"share an address; personal pages need an origin of their own"
    ) in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_a_full_listener_answers_503_with_the_same_headers(tmp_path: Path) -> None:
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from shellserver.ops.metrics import Metrics
    from shellserver.wires.pages.site import pages_site

    g = pages_site(str(tmp_path), Clock(), Metrics(), 10, 1)
    answers = []
    for _ in range(2):
        addr = IPv4Address("TCP", "192.0.2.1", 40000)
        t = StringTransport(peerAddress=addr)
        g.buildProtocol(addr).makeConnection(t)
        answers.append(t.value())
    assert answers[0] == b"" and answers[1].startswith(b"HTTP/1.1 503 ")
    head, _, body = answers[1].partition(b"\r\n\r\n")
    assert b"\r\nContent-Security-Policy: sandbox\r\n" in head
    assert b"\r\nX-Content-Type-Options: nosniff\r\n" in head
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    assert length == len(body)


@pages_integration
def test_a_large_file_is_sent_whole(pages: RealServer) -> None:
    public = _publish(pages, "lea")
    data = os.urandom(3 * 1024 * 1024 + 17)
    (public / "big.bin").write_bytes(data)
    status, headers, body = _get(pages, "/~lea/big.bin")
    assert status == 200 and body == data
    assert headers["content-type"] == "application/octet-stream"


def _tcp_closed(s: socket.socket) -> bool:
    """Whether the connection is over for the kernel (TCP_CLOSE or CLOSE_WAIT), unread data
    left as it is."""
    state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state in (7, 8)  # TCP_CLOSE, TCP_CLOSE_WAIT


@pages_integration
def test_a_client_that_stops_reading_a_large_file_is_cut_off(tmp_path: Path) -> None:
    """Sending a file keeps the response clock running, restarted by each chunk the client
    takes: one that never reads does not hold its slot forever. With --max-connections 8 the
    listener's share is 2, so two stalled downloads make the deadline its shortest (2 s); the
    first one cut off eases the pressure (the other then has 30 s)."""
    srv = RealServer(
        tmp_path, "--max-connections", "8", "--pages", "tcp:0:interface=127.0.0.1"
    ).start()
    try:
        deadline = time.monotonic() + 10
        while not _PAGES.search(srv.log_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        port = int(_PAGES.search(srv.log_text()).group(1))  # type: ignore[union-attr]
        public = srv.data / "home" / "alice" / "public_html"
        public.mkdir(parents=True)
        (public / "big.bin").write_bytes(b"x" * (8 * 1024 * 1024))
        stalled = []
        for _ in range(2):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /~alice/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(s)
        # Never read meanwhile: past the 2 s deadline and its sweep, 5 s at most. The socket's
        # state (TCP_INFO, which reads nothing) says when one was cut off.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not any(_tcp_closed(s) for s in stalled):
            time.sleep(0.1)
        cut = 0
        for s in stalled:
            s.settimeout(0.5)
            got = 0
            try:
                while chunk := s.recv(1 << 20):
                    got += len(chunk)
            except ConnectionResetError:
                cut += 1
                assert got < 4 * 1024 * 1024  # cut off, not sent whole
            except TimeoutError:
                pass  # still open: the one the eased pressure left its 30 s
            s.close()
        assert cut >= 1
    finally:
        srv.stop()


@pages_integration
def test_a_locked_or_banned_users_pages_answer_like_a_missing_users(pages: RealServer) -> None:
    _publish(pages, "lou")
    missing = _curl(pages, "/~nobody/")
    assert _status(missing) == 404

    def answer(path: str) -> bytes:
        result = _curl(pages, path)
        return b"\r\n".join(
            line for line in result.stdout.split(b"\r\n") if not line.startswith(b"Date:")
        )

    assert _status(_curl(pages, "/~lou/")) == 200
    for action, undo in (("lock", "unlock"), ("ban", "unban")):
        done = cli(pages.data, action, "lou")
        assert done.returncode == 0, done.stderr
        for path in ("/~lou/", "/~lou/docs/notes.txt"):
            assert answer(path) == answer("/~nobody/"), (action, path)
        done = cli(pages.data, undo, "lou")
        assert done.returncode == 0, done.stderr
        assert _status(_curl(pages, "/~lou/")) == 200, undo
    done = cli(pages.data, "userdel", "lou")
    assert done.returncode == 0, done.stderr
    assert answer("/~lou/") == answer("/~nobody/")
