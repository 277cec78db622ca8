"""The browser terminal: frames, Origin, the page, and ``/ws`` on the real server.

The protocol-level tests talk to the real ``twistd -n shellserver --web`` with
Twisted's own ``WebSocketClientEndpoint`` (tests/webclient.py); the browser
itself is driven in tests/test_web_browser.py.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import webclient
from realserver import PASSWORD, RawClient, RealServer, login, register
from twisted.internet.error import ConnectionDone
from twisted.internet.ssl import Certificate
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS

from shellserver.text.message import Message
from shellserver.wires.web import page as webpage
from shellserver.wires.web.socket import MAX_FRAME, FrameLimit, Pinger, WebWire, frame

VENDOR = Path(webpage.__file__).parent / "assets" / "vendor"


def client_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """A masked client frame (mask 0, so the payload is as given)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 0x10000:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


# -- sans-io ---------------------------------------------------------------------


def test_frame_limit_counts_headers_not_payloads() -> None:
    limit = FrameLimit()
    ok = client_frame(b"x" * MAX_FRAME)
    assert all(limit.feed(ok[i : i + 7]) for i in range(0, len(ok), 7))  # split anywhere
    assert limit.feed(client_frame(b"hi"))
    # One frame over the limit is refused from its header alone.
    assert not FrameLimit().feed(client_frame(b"x" * (MAX_FRAME + 1))[:14])


def test_frame_limit_adds_up_fragments_of_one_message() -> None:
    limit = FrameLimit()
    part = client_frame(b"y" * 40_000, opcode=1, fin=False)
    assert limit.feed(part)
    assert limit.feed(client_frame(b"", opcode=9))  # a ping between fragments is not counted
    assert not limit.feed(client_frame(b"y" * 40_000, opcode=0, fin=True)[:8])


def test_origin_must_name_the_pages_host() -> None:
    assert webpage.origin_allowed("http://example.org:8080", "example.org:8080")
    assert webpage.origin_allowed("https://Example.org", "example.org")  # TLS proxy in front
    assert not webpage.origin_allowed("http://evil.example", "example.org:8080")
    assert not webpage.origin_allowed("http://example.org", "example.org:8080")
    assert not webpage.origin_allowed("null", "example.org")
    assert not webpage.origin_allowed("http://example.org", None)
    assert webpage.origin_allowed(None, "example.org")  # not a browser


class FakeSocket:
    """What Twisted's WebSocket layer offers a protocol, over a StringTransport."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.transport.registerProducer(object(), True)  # the HTTP channel, before the upgrade
        self.closed: list[int] = []

    def loseConnection(self, code: int = 1000) -> None:
        self.closed.append(code)


class Receiver:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.events.append((name, args))


def open_wire() -> tuple[WebWire, FakeSocket, Receiver]:
    receiver = Receiver()
    wire = WebWire(lambda w: receiver, Clock(), "192.0.2.7")  # type: ignore[arg-type,return-value]
    sock = FakeSocket()
    wire.negotiationStarted(sock)
    wire.negotiationFinished()
    return wire, sock, receiver


def test_wire_is_character_mode_and_maps_keys_and_resizes() -> None:
    wire, _, receiver = open_wire()
    assert receiver.events[0] == ("mode_changed", (True,))
    wire.textMessageReceived("0ls -l\n")
    wire.textMessageReceived("1132 43")
    wire.textMessageReceived("19999 1")  # clamped to 500x5
    wire.textMessageReceived("1a b")  # not a size: ignored
    assert receiver.events[1:] == [
        ("text_received", ("ls -l\r",)),
        ("resized", ()),
        ("resized", ()),
    ]
    assert (wire.width, wire.height) == (500, 5)
    assert wire.kind == "web"


def test_wire_frames_a_message_once_for_every_browser() -> None:
    first, sock1, _ = open_wire()
    second, sock2, _ = open_wire()
    message = Message.of("hello from bob\n")
    assert first.send_message("", message) and second.send_message("\n", message)
    body = frame("hello from bob\n")
    assert body == b"\x81\x10hello from bob\r\n"
    assert sock1.transport.value() == body
    assert sock2.transport.value() == frame("\n") + body
    assert message.encoded("web", frame) is message.encoded("web", frame)


def test_wire_closes_on_binary_and_oversize_frames() -> None:
    wire, sock, receiver = open_wire()
    wire.bytesMessageReceived(b"\x00")
    assert sock.closed == [1003]
    wire.textMessageReceived("0late")  # nothing read once closing
    assert ("text_received", ("late",)) not in receiver.events
    other, sock2, _ = open_wire()
    other.too_big()
    assert sock2.closed == [1009]


def test_an_abort_while_closing_leaves_no_close_timer() -> None:
    wire, sock, _ = open_wire()
    clock = wire._clock
    assert isinstance(clock, Clock)
    wire.close()  # a close frame, and the 10 s timer for a browser that does not read it
    assert sock.closed == [1000] and len(clock.getDelayedCalls()) == 1
    wire.abort()  # e.g. the output stall, before the timer
    wire.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_vendored_files_match_their_checksums() -> None:
    """xterm.js is vendored from npm (make assets); the files are those the lock pinned."""
    lines = (VENDOR / "SHA256SUMS").read_text().splitlines()
    assert {line.split()[1] for line in lines} >= {"xterm.js", "xterm.css", "addon-fit.js"}
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    lock = (Path(__file__).parent.parent / "webassets" / "package-lock.json").read_text()
    assert '"integrity": "sha512-' in lock


# -- the real server -----------------------------------------------------------------


@pytest.fixture
def web(tmp_path: Path) -> Iterator[RealServer]:
    srv = RealServer(tmp_path, "--web", "tcp:0:interface=127.0.0.1").start()
    try:
        yield srv
    finally:
        srv.stop()


def fetch(url: str, method: str = "GET", **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10, **kwargs) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.integration
def test_page_has_a_strict_csp_and_assets_their_types(web: RealServer) -> None:
    base = f"http://127.0.0.1:{web.web_port}/"
    status, headers, body = fetch(base)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'content="{nonce}"' in body.decode() and "{{NONCE}}" not in body.decode()
    assert nonce not in fetch(base)[1]["Content-Security-Policy"]  # new each time
    assert b"<script>" not in body and b"https://" not in body  # nothing inline, no CDN
    for path, kind in [
        ("assets/vendor/xterm.js", "text/javascript"),
        ("assets/vendor/addon-fit.js", "text/javascript"),
        ("assets/vendor/xterm.css", "text/css"),
        ("assets/page.js", "text/javascript"),
        ("assets/page.css", "text/css"),
    ]:
        status, headers, body = fetch(base + path)
        assert status == 200 and headers["Content-Type"].startswith(kind), path
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert body == (VENDOR.parent / "page.css").read_bytes()
    assert fetch(base + "assets/nothing.js")[0] == 404
    assert fetch(base, method="POST")[0] == 405


def upgrade(port: int, origin: str | None) -> bytes:
    """A raw WebSocket handshake; returns the response head."""
    head = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
    )
    if origin is not None:
        head += f"Origin: {origin}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((head + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.integration
def test_a_wrong_origin_is_refused(web: RealServer) -> None:
    port = web.web_port
    assert upgrade(port, "http://evil.example").startswith(b"HTTP/1.1 403")
    assert upgrade(port, f"http://127.0.0.1:{port + 1}").startswith(b"HTTP/1.1 403")
    assert upgrade(port, f"http://127.0.0.1:{port}").startswith(b"HTTP/1.1 101")
    # Logged once a minute at most: the first refusal now, the second counted for later.
    deadline = time.monotonic() + 5
    while "refused 1 WebSocket(s)" not in web.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = web.log_text()
    assert "refused 1 WebSocket(s) from another site; latest from 127.0.0.1, origin " in log
    assert "'http://evil.example'" in log and log.count("WebSocket(s) from another site") == 1


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_login_a_command_and_a_write_from_telnet(web: RealServer) -> None:
    url = f"ws://127.0.0.1:{web.web_port}/ws"
    client = await webclient.connect(url)
    client.resize(100, 30)
    await webclient.sign_up(client, "webby", PASSWORD)
    client.line("who")
    seen = await client.expect("webby@testhost:~$ ")
    assert "web/0" in seen
    client.line("echo é☃日本")  # text frames carry UTF-8 both ways
    assert "\né☃日本\n" in await client.expect("webby@testhost:~$ ")
    bob = register(web.port, "bob")
    client.keys("echo half")
    await client.expect("echo half")
    bob.send_line("write webby from telnet")
    bob.expect("bob@testhost:~$ ")
    seen = await client.expect("echo half")  # the half line drawn again under the message
    assert "Message from bob@testhost on tel/0" in seen and "from telnet" in seen
    client.line(" line")
    seen = await client.expect("webby@testhost:~$ ")
    assert "half line\n" in seen
    bob.send_line("who")
    assert "web/0" in bob.expect("bob@testhost:~$ ")
    bob.close()
    # The same editor: Tab completes, the history recalls, ^U kills; a wall arrives.
    client.keys("fing\t")
    await client.expect("finger ")
    client.keys("\x15\x1b[A")
    await client.expect("echo half line")
    client.keys("\x15")
    admin = login(web.port, "admin", web.admin_password())
    admin.send_line("wall hello everyone")
    admin.expect("admin@testhost:~$ ")
    await client.expect("hello everyone")
    admin.close()
    client.line("logout")
    await client.lost
    # Logging in again works, and the tty is reused.
    again = await webclient.connect(url)
    await again.expect("login: ")
    again.line("webby")
    await again.expect("Password: ")
    again.line(PASSWORD)
    await again.expect("webby@testhost:~$ ")
    again.transport.loseConnection()
    await again.lost


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_an_oversize_frame_closes_the_socket(web: RealServer) -> None:
    url = f"ws://127.0.0.1:{web.web_port}/ws"
    client = await webclient.connect(url)
    await client.expect("login: ")
    client.keys("x" * (MAX_FRAME + 1))
    await client.lost
    assert "x" * 100 not in client.seen
    # The server carries on for everyone else.
    other = await webclient.connect(url)
    await other.expect("login: ")
    other.transport.loseConnection()
    await other.lost
    login(web.port, "admin", web.admin_password()).close()


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(crt), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, crt


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_ssl_endpoint_gives_https_and_wss(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    key, crt = cert
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={crt}"
    srv = RealServer(tmp_path, "--web", endpoint).start()
    try:
        context = ssl.create_default_context(cafile=str(crt))
        status, headers, _ = fetch(f"https://127.0.0.1:{srv.web_port}/", context=context)
        assert status == 200 and "Content-Security-Policy" in headers
        policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(crt.read_bytes()))
        client = await webclient.connect(f"wss://127.0.0.1:{srv.web_port}/ws", tlsPolicy=policy)
        await client.expect("login: ")
        client.transport.loseConnection()
        await client.lost
    finally:
        srv.stop()


def test_wire_holds_own_output_and_drops_messages_while_the_browser_does_not_read() -> None:
    wire, sock, _ = open_wire()
    wire._out.limit = 10
    wire.pauseProducing()  # the socket's buffer is full
    assert sock.transport.producerState == "paused"  # and we stop reading the browser too
    assert wire.backlogged and not wire.drain().called
    wire.send("own output")
    assert not wire.send_message("", Message.of("someone else's message"))
    assert sock.transport.value() == b""
    wire.resumeProducing()
    assert sock.transport.value() == frame("own output")
    assert sock.transport.producerState == "producing" and not wire.backlogged


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_pre_auth_limits_per_address_count_telnet_and_web_together(tmp_path: Path) -> None:
    srv = RealServer(
        tmp_path, "--web", "tcp:0:interface=127.0.0.1", "--max-unauth-per-addr", "1"
    ).start()
    try:
        waiting = RawClient(srv.port)
        waiting.expect("login: ")
        client = await webclient.connect(f"ws://127.0.0.1:{srv.web_port}/ws")
        await client.lost
        assert "Too many connections from your address" in client.seen
        waiting.close()
    finally:
        srv.stop()


@pytest.mark.integration
def test_plain_http_connections_are_bounded_per_address(tmp_path: Path) -> None:
    srv = RealServer(
        tmp_path, "--web", "tcp:0:interface=127.0.0.1", "--max-unauth-per-addr", "2"
    ).start()
    try:
        port = srv.web_port
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as third:
            third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert third.recv(4096).startswith(b"HTTP/1.1 503")
        idle.pop().close()
        deadline = time.monotonic() + 10
        while fetch(f"http://127.0.0.1:{port}/")[0] != 200:  # its slot is free again
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for s in idle:
            s.close()
    finally:
        srv.stop()


def test_without_the_vendored_files_the_page_says_how_to_add_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twisted.web.test.requesthelper import DummyRequest

    real = webpage._read
    monkeypatch.setattr(webpage, "_read", lambda name: None if "vendor/" in name else real(name))
    guard = webpage.web_site(lambda wire: None, Clock(), 1024)  # type: ignore[arg-type,return-value]
    page = guard.wrappedFactory.resource.children[b""]
    body = page.render_GET(DummyRequest([b""])).decode()
    assert "make assets" in body and "vendor/xterm.js" in body
    assert b"vendor" not in guard.wrappedFactory.resource.children[b"assets"].children


def test_open_sockets_are_pinged_by_one_timer_while_any_is_open() -> None:
    clock = Clock()
    pinger = Pinger(clock, interval=30)
    wires = []
    for _ in range(2):
        wire = WebWire(lambda w: Receiver(), clock, "192.0.2.7", pinger=pinger)  # type: ignore[arg-type,return-value]
        sock = FakeSocket()
        wire.negotiationStarted(sock)
        wire.negotiationFinished()
        wires.append((wire, sock))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(30)
    assert [sock.transport.value() for _, sock in wires] == [b"\x89\x00", b"\x89\x00"]
    for wire, _ in wires:
        wire.connectionLost(Failure(ConnectionDone()))
    clock.advance(30)
    assert clock.getDelayedCalls() == []  # no timer once every socket is gone


@pytest.mark.integration
def test_a_big_request_body_ends_the_connection(web: RealServer) -> None:
    with socket.create_connection(("127.0.0.1", web.web_port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        answer = b""
        try:
            for _ in range(40):
                s.sendall(b"z" * 4096)
            while chunk := s.recv(4096):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    assert answer == b""  # cut off after 64 KiB, nothing buffered, no answer
    assert fetch(f"http://127.0.0.1:{web.web_port}/")[0] == 200
