"""The Redis link in the forms operators run Redis: a password (``requirepass``), an ACL user,
a unix socket and TLS, each against a real redis-server; the password never in a log line."""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from redisserver import RedisServer, free_port
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from shellserver.hub.cluster import link as link_module
from shellserver.hub.cluster.link import RedisLink
from shellserver.hub.cluster.url import parse_redis_url

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-Pa55"


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.02, lambda: None)


class Logged:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.lines.append(formatEvent(event))

    def secret_free(self, *secrets: str) -> None:
        for line in self.lines:
            for secret in secrets:
                assert secret not in line, line


@pytest.fixture
def logged() -> Iterator[Logged]:
    seen = Logged()
    globalLogPublisher.addObserver(seen)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(seen)


@pytest.fixture
def redis_at(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def start(*args: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", *args)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def links() -> Iterator[Callable[..., RedisLink]]:
    made: list[RedisLink] = []

    def make(url: str, **kw: Any) -> RedisLink:
        parsed = parse_redis_url(url)
        link = RedisLink(
            parsed.host,
            parsed.port,
            parsed.db,
            reactor,
            kw.pop("on_up", lambda: None),
            lambda: None,
            kw.pop("on_message", lambda c, d: None),
            url=parsed,
        )
        made.append(link)
        link.start()
        return link

    yield make
    for link in made:
        pytest_twisted.blockon(link.stop())


@pytest_twisted.ensureDeferred
async def test_requirepass_auth_on_both_connections(
    redis_at: Callable[..., RedisServer], links: Any, logged: Logged
) -> None:
    redis = redis_at("--requirepass", SECRET)
    heard: list[bytes] = []
    link = links(
        f"redis://:{SECRET}@127.0.0.1:{redis.port}/4", on_message=lambda c, d: heard.append(d)
    )
    await until(lambda: link.available)
    assert await link.call("SET", "k", "v") == b"OK"
    assert await link.call("CLIENT", "INFO") and b" db=4 " in await link.call("CLIENT", "INFO")
    await link.subscribe("chan")  # the subscriber connection authenticated too
    assert await link.publish("chan", b"hello") == 1
    await until(lambda: heard == [b"hello"])
    assert link.address == f"redis://:***@127.0.0.1:{redis.port}/4"
    assert any("connected to redis://:***@127.0.0.1" in line for line in logged.lines)
    logged.secret_free(SECRET)


@pytest_twisted.ensureDeferred
async def test_acl_user(redis_at: Callable[..., RedisServer], links: Any, logged: Logged) -> None:
    redis = redis_at(
        "--user", "default", "off", "--user", "node", "on", ">n0de-pass", "~*", "&*", "+@all"
    )  # fmt: skip
    link = links(f"redis://node:n0de-pass@127.0.0.1:{redis.port}/0")
    await until(lambda: link.available)
    assert await link.call("ACL", "WHOAMI") == b"node"
    logged.secret_free("n0de-pass")


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_an_outage_said_again_and_retried(
    redis_at: Callable[..., RedisServer],
    links: Any,
    logged: Logged,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong password: one line saying what to check, said again while it lasts, and the
    node keeps retrying: once Redis takes the password, the link is up."""
    monkeypatch.setattr(link_module, "REMIND", 0.5)
    redis = redis_at("--requirepass", SECRET)
    link = links(f"redis://:wrong-{SECRET}@127.0.0.1:{redis.port}/0")
    await deferLater(reactor, 1.6, lambda: None)
    assert not link.available
    down = [line for line in logged.lines if "unavailable" in line]
    assert down[0] == (
        f"cluster: redis://:***@127.0.0.1:{redis.port}/0 unavailable (WRONGPASS invalid "
        "username-password pair or user is disabled: check the user and password in the "
        "cluster URL); acting locally, reconnecting"
    ), logged.lines
    assert 2 <= len(down) <= 4 and "still unavailable (WRONGPASS" in down[1], down
    # the operator fixes the server's side: the node, retrying, gets in
    admin = links(f"redis://:{SECRET}@127.0.0.1:{redis.port}/0")
    await until(lambda: admin.available)
    await admin.call("CONFIG", "SET", "requirepass", f"wrong-{SECRET}")
    await until(lambda: link.available, timeout=15)
    logged.secret_free(SECRET)


@pytest_twisted.ensureDeferred
async def test_missing_password_says_so(
    redis_at: Callable[..., RedisServer], links: Any, logged: Logged
) -> None:
    redis = redis_at("--requirepass", SECRET)
    link = links(f"redis://127.0.0.1:{redis.port}/0")
    await until(lambda: any("unavailable" in line for line in logged.lines))
    assert not link.available
    line = next(line for line in logged.lines if "unavailable" in line)
    assert "NOAUTH Authentication required: check the user and password" in line, line


@pytest_twisted.ensureDeferred
async def test_unix_socket_with_password(
    redis_at: Callable[..., RedisServer], links: Any, tmp_path: Path, logged: Logged
) -> None:
    sock = tmp_path / "redis.sock"
    redis = redis_at("--unixsocket", str(sock), "--unixsocketperm", "700", "--requirepass", SECRET)
    assert redis.proc is not None
    link = links(f"unix://:{SECRET}@{sock}?db=2")
    await until(lambda: link.available)
    info = await link.call("CLIENT", "INFO")
    assert b" db=2 " in info and b"laddr=" + str(sock).encode() in info, info
    other = links(f"unix://{sock}?db=2&password={SECRET}")
    await until(lambda: other.available)
    await link.call("SET", "here", "1")
    assert await other.call("GET", "here") == b"1"
    assert link.address == f"unix://:***@{sock}?db=2"
    logged.secret_free(SECRET)


# -- TLS ---------------------------------------------------------------------------------------


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(subject: str, key: Any, issuer: str, signer: Any, names: list[Any], ca: bool) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_pki(where: Path, names: list[Any]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for ``names``: (ca.pem, cert.pem, key.pem)."""
    from cryptography.hazmat.primitives import serialization

    where.mkdir(parents=True, exist_ok=True)
    ca_key, key = _key(), _key()
    ca = _cert("test CA", ca_key, "test CA", ca_key, [], ca=True)
    cert = _cert("redis", key, "test CA", ca_key, names, ca=False)
    paths = (where / "ca.pem", where / "cert.pem", where / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    return paths


def tls_redis(
    redis_at: Callable[..., RedisServer], cert: Path, key: Path, ca: Path, *args: str
) -> int:
    """A redis-server with a TLS port (and its plain one); the TLS port."""
    port = free_port()
    redis_at(
        "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", *args,
    )  # fmt: skip
    return port


def _names() -> list[Any]:
    from cryptography import x509

    return [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


@pytest_twisted.ensureDeferred
async def test_tls_with_ca_file_and_password(
    redis_at: Callable[..., RedisServer], links: Any, tmp_path: Path, logged: Logged
) -> None:
    ca, cert, key = make_pki(tmp_path / "pki", _names())
    port = tls_redis(redis_at, cert, key, ca, "--requirepass", SECRET)
    link = links(f"rediss://:{SECRET}@127.0.0.1:{port}/1?ca={ca}")
    by_name = links(f"rediss://:{SECRET}@localhost:{port}/1?ca={ca}")
    await until(lambda: link.available and by_name.available)
    info = await link.call("CLIENT", "INFO")
    assert f"laddr=127.0.0.1:{port}".encode() in info  # over the TLS port, not the plain one
    assert await link.call("SET", "k", "v") == b"OK"
    assert await by_name.call("GET", "k") == b"v"
    logged.secret_free(SECRET)


@pytest_twisted.ensureDeferred
async def test_tls_refuses_an_unknown_ca_and_a_wrong_name(
    redis_at: Callable[..., RedisServer], links: Any, tmp_path: Path, logged: Logged
) -> None:
    from cryptography import x509

    ca, cert, key = make_pki(tmp_path / "pki", _names())
    other_ca, _, _ = make_pki(tmp_path / "other", _names())
    port = tls_redis(redis_at, cert, key, ca)
    stranger = links(f"rediss://127.0.0.1:{port}/0?ca={other_ca}")  # signed by another CA
    await until(lambda: any("unavailable" in line for line in logged.lines))
    misnamed_ca, misnamed_cert, misnamed_key = make_pki(
        tmp_path / "misnamed", [x509.DNSName("redis.example")]
    )
    misnamed_port = tls_redis(redis_at, misnamed_cert, misnamed_key, misnamed_ca)
    misnamed = links(f"rediss://127.0.0.1:{misnamed_port}/0?ca={misnamed_ca}")  # not our name
    await until(lambda: sum("unavailable" in line for line in logged.lines) >= 2)
    await deferLater(reactor, 0.5, lambda: None)
    assert not stranger.available and not misnamed.available
    down = [line for line in logged.lines if "unavailable" in line]
    assert "TLS failed: certificate verify failed" in down[0], down
    assert "TLS failed: the certificate does not name 127.0.0.1" in down[1], down


def test_tls_ca_file_missing_is_one_line(tmp_path: Path) -> None:
    url = parse_redis_url(f"rediss://h:1/0?ca={tmp_path}/nope.pem")
    with pytest.raises(ValueError, match=r"cannot read the CA file .*nope.pem"):
        link_module.tls_options(url)
    (tmp_path / "junk.pem").write_text("not a certificate")
    url = parse_redis_url(f"rediss://h:1/0?ca={tmp_path}/junk.pem")
    with pytest.raises(ValueError, match=r"holds no PEM certificate"):
        link_module.tls_options(url)


# -- a node, as the operator sees it ------------------------------------------------------------


def test_a_node_never_shows_the_password(
    redis_at: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """A node with a password in ``--cluster``: the log, ``status``, ``who --json`` and the
    metrics page name the Redis server without it; a wrong one is said (redacted) and the
    node serves its own sessions meanwhile."""
    import subprocess
    import sys
    import urllib.request

    from realserver import RealServer, register

    cli = str(Path(sys.executable).with_name("shellserver"))
    redis = redis_at("--requirepass", SECRET)
    for name in ("node", "wrong"):
        (tmp_path / name).mkdir()
    # The node with the wrong password starts first: its logins wait (5 s at most) for a
    # cluster it never joins, and that wait runs out while the first node is looked at.
    wrong = RealServer(
        tmp_path / "wrong", "--cluster", f"redis://:x{SECRET}@127.0.0.1:{redis.port}/0"
    ).start()
    try:
        srv = RealServer(
            tmp_path / "node",
            "--cluster", f"redis://:{SECRET}@127.0.0.1:{redis.port}/0", "--node", "a",
            "--metrics", "tcp:0:interface=127.0.0.1",
        ).start()  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while "cluster: connected to" not in srv.log_text():
                assert time.monotonic() < deadline, srv.log_text()
                time.sleep(0.1)
            assert f"connected to redis://:***@127.0.0.1:{redis.port}/0" in srv.log_text()
            alice = register(srv.port, "alice")
            shown = [srv.log_text()]
            for args in (["status"], ["who", "--json"]):
                r = subprocess.run(
                    [cli, "--data", str(srv.data), *args],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert r.returncode == 0, r.stderr
                shown += [r.stdout, r.stderr]
            assert "in a cluster of 1 live node" in shown[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics") as page:
                shown.append(page.read().decode())
            alice.close()
            for text in shown:
                assert SECRET not in text
        finally:
            srv.stop()

        bob = register(wrong.port, "bob")  # serving alone meanwhile
        bob.close()
        deadline = time.monotonic() + 15
        while "WRONGPASS" not in wrong.log_text():
            assert time.monotonic() < deadline, wrong.log_text()
            time.sleep(0.1)
        assert f"redis://:***@127.0.0.1:{redis.port}/0 unavailable (WRONGPASS" in wrong.log_text()
        assert SECRET not in wrong.log_text()
    finally:
        wrong.stop()


def test_the_docs_tls_example_pasted_into_one_shell(tmp_path: Path) -> None:
    """docs/scaling.md, "The Redis URL": a certificate by ``openssl``, a TLS Redis with a
    password, a node joining it over ``rediss://`` (ports moved), then the stop line."""
    import shutil

    from test_docs_examples import move_ports, pasted, sh_blocks

    for program in ("redis-server", "openssl"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")
    start, stop = sh_blocks("scaling.md", "The Redis URL")
    ports: dict[int, int] = {6380: free_port()}
    start, stop = move_ports(start, ports), move_ports(stop, ports)
    assert len(ports) == 2, ports
    with pasted(start, stop, tmp_path):
        log = tmp_path / "node-a.log"
        deadline = time.monotonic() + 30
        while "cluster: connected to" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, (tmp_path / "bash.out").read_text()
            time.sleep(0.1)
        want = f"connected to rediss://:***@127.0.0.1:{ports[6380]}/0?ca={tmp_path}/redis.crt"
        assert want in log.read_text()
        assert "n0t-the-real-one" not in log.read_text()
