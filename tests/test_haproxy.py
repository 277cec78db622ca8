"""A real haproxy, configured as docs/scaling.md says, in front of a real server whose listeners
take the PROXY header: the server sees each client's own address (127.0.0.3, 127.0.0.4 here,
while haproxy itself connects from 127.0.0.1) in ``who``, the log and the per-address limits."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import PASSWORD, RawClient, RealServer, sign_in, sign_up
from redisserver import free_port

pytestmark = pytest.mark.integration

DOCS = Path(__file__).parent.parent / "docs"
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
SSH = shutil.which("ssh")
CLI = str(Path(sys.executable).with_name("shellserver"))
#: Clients on loopback addresses of their own, so the balancer's (127.0.0.1) is not theirs.
CLIENT, OTHER_CLIENT = "127.0.0.3", "127.0.0.4"


def docs_config() -> str:
    """The ```haproxy block of docs/scaling.md."""
    (config,) = re.findall(r"```haproxy\n(.*?)```", (DOCS / "scaling.md").read_text(), re.S)
    return str(config)


def client(port: int, source: str = CLIENT) -> RawClient:
    """A raw telnet client connecting from ``source``."""
    c = RawClient.__new__(RawClient)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    c.buffer = b""
    c.raw_seen = b""
    return c


class Balancer:
    """haproxy with the docs' config, every node address in it pointed at ``telnet``/``ssh``."""

    def __init__(self, workdir: Path, telnet: int, ssh: int, web: int) -> None:
        assert HAPROXY is not None
        self.telnet, self.ssh, self.web = free_port(), free_port(), free_port()
        config = docs_config()
        assert "send-proxy-v2" in config and "mode tcp" in config
        config = config.replace("bind :2323", f"bind 127.0.0.1:{self.telnet}")
        config = config.replace("bind :2222", f"bind 127.0.0.1:{self.ssh}")
        config = config.replace("bind :8080", f"bind 127.0.0.1:{self.web}")
        config = re.sub(r"127\.0\.0\.1:1232\d", f"127.0.0.1:{telnet}", config)
        config = re.sub(r"127\.0\.0\.1:1222\d", f"127.0.0.1:{ssh}", config)
        config = re.sub(r"127\.0\.0\.1:1808\d", f"127.0.0.1:{web}", config)
        assert re.findall(r"\b\d{4,5}\b", config).count("2323") == 0, config  # all moved
        path = workdir / "haproxy.cfg"
        path.write_text(config)
        self.log = workdir / "haproxy.out"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [HAPROXY, "-f", str(path), "-db"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.telnet), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, Balancer]]:
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    try:
        socket.create_connection(("127.0.0.1", 9), source_address=(CLIENT, 0))
    except ConnectionRefusedError:
        pass
    except OSError as e:
        pytest.skip(f"cannot connect from {CLIENT} ({e})")
    work = tmp_path_factory.mktemp("haproxy")
    srv = RealServer(
        work,
        "--telnet", "haproxy:tcp:0:interface=127.0.0.1",
        "--ssh", "haproxy:tcp:0:interface=127.0.0.1",
        "--web", "haproxy:tcp:0:interface=127.0.0.1",
        "--max-unauth-per-addr", "2",
    ).start()  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while len(srv.listening("telnet")) < 2 or not srv.listening("ssh"):
            assert time.monotonic() < deadline, srv.log_text()
            time.sleep(0.05)
        balancer = Balancer(
            work, srv.listening("telnet")[1], srv.listening("ssh")[0], srv.web_port
        )
        try:
            yield srv, balancer
        finally:
            balancer.stop()
    finally:
        srv.stop()


def who_json(srv: RealServer) -> list[dict[str, object]]:
    r = subprocess.run(
        [CLI, "--data", str(srv.data), "who", "--json"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    sessions: list[dict[str, object]] = json.loads(r.stdout)["sessions"]
    return sessions


def test_who_and_the_log_see_the_client_not_the_balancer(
    behind: tuple[RealServer, Balancer],
) -> None:
    srv, balancer = behind
    alice = sign_up(client(balancer.telnet), "alice")
    bob = sign_up(client(balancer.telnet, OTHER_CLIENT), "bob")
    try:
        peers = {s["user"]: s["peer"] for s in who_json(srv)}
        assert peers == {"alice": CLIENT, "bob": OTHER_CLIENT}, peers
        admin = sign_in(client(balancer.telnet), "admin", srv.admin_password())
        admin.send_line("who")
        table = admin.expect("admin@testhost:~$ ")
        assert re.search(rf"^alice .* {re.escape(CLIENT)}$", table, re.M), table
        assert re.search(rf"^bob .* {re.escape(OTHER_CLIENT)}$", table, re.M), table
        admin.send_line("last alice")
        assert CLIENT in admin.expect("admin@testhost:~$ ")  # the login record
        admin.close()
    finally:
        alice.close()
        bob.close()
    # the direct listener still sees its own peers, and nothing was taken for a header
    direct = client(srv.port)
    direct.expect("login: ")
    direct.close()
    assert "Traceback" not in srv.log_text()


def test_per_address_limit_counts_each_client(behind: tuple[RealServer, Balancer]) -> None:
    """``--max-unauth-per-addr 2``: a third connection from one client is refused, while
    another client, through the same balancer, still gets in."""
    srv, balancer = behind
    waiting = [client(balancer.telnet) for _ in range(2)]
    try:
        for c in waiting:
            c.expect("login: ")
        third = client(balancer.telnet)
        third.expect("Too many connections from your address waiting to log in")
        assert third.closed()
        other = client(balancer.telnet, OTHER_CLIENT)
        other.expect("login: ")
        other.close()
    finally:
        for c in waiting:
            c.close()
    deadline = time.monotonic() + 10
    while f"latest from {CLIENT}: Too many connections" not in srv.log_text():
        assert time.monotonic() < deadline, srv.log_text()
        time.sleep(0.1)


def http_get(port: int, source: str) -> bytes:
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0)
    ) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got


def test_the_browser_terminal_counts_each_client(behind: tuple[RealServer, Balancer]) -> None:
    """The page through the balancer; its per-address connection limit (2 here) counts the
    client's connections, not all of the balancer's."""
    _, balancer = behind
    assert http_get(balancer.web, CLIENT).startswith(b"HTTP/1.1 200 ")
    idle = []
    try:
        for _ in range(2):
            idle.append(
                socket.create_connection(
                    ("127.0.0.1", balancer.web), timeout=10, source_address=(CLIENT, 0)
                )
            )
        time.sleep(0.3)  # through haproxy to the server, counted there
        assert http_get(balancer.web, CLIENT).startswith(b"HTTP/1.1 503 ")
        assert http_get(balancer.web, OTHER_CLIENT).startswith(b"HTTP/1.1 200 ")
    finally:
        for s in idle:
            s.close()


def test_a_client_reaching_the_proxied_port_directly_is_not_served(
    behind: tuple[RealServer, Balancer],
) -> None:
    srv, _ = behind
    c = client(srv.listening("telnet")[1])
    c.send_line("PROXY TCP4 203.0.113.9 no-port")  # not a header
    assert c.closed()
    assert "login: " not in c.buffer.decode(errors="replace")


@pytest.mark.skipif(SSH is None, reason="OpenSSH's ssh is not installed")
def test_ssh_through_the_balancer_sees_the_client(
    behind: tuple[RealServer, Balancer], tmp_path: Path
) -> None:
    srv, balancer = behind
    key = tmp_path / "id_carol"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    made = subprocess.run(
        [CLI, "--data", str(srv.data), "useradd", "carol", "--password-stdin"],
        input=f"{PASSWORD}\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    added = subprocess.run(
        [CLI, "--data", str(srv.data), "addkey", "carol"],
        input=key.with_suffix(".pub").read_text(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    run = subprocess.run(
        [
            SSH or "ssh", "-F", "/dev/null", "-p", str(balancer.ssh), "-b", CLIENT,
            "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-i", str(key), "carol@127.0.0.1", "who",
        ],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.search(rb"^carol\s+ssh/\d+\s", run.stdout, re.M), run.stdout
    assert f"SSH carol authenticated from {CLIENT} (publickey)" in srv.log_text()


def admin_in(c: RawClient, password: str, greeted: bool = True) -> RawClient:
    """``admin`` logged in on a node that names itself after the host (the docs' example)."""
    if not greeted:
        c.expect("login: ", 30)
    c.send_line("admin")
    c.expect("Password: ")
    c.send_line(password)
    c.expect(":~$ ", 30)
    return c


def test_the_docs_example_pasted_into_one_shell(tmp_path: Path, redis_server: object) -> None:
    """docs/scaling.md, "Behind a load balancer": its haproxy.cfg saved, its nodes and haproxy
    started from one shell (ports moved), a login through the balancer from a client address
    of its own, seen by the cluster's ``who``; then its stop line."""
    from test_docs_examples import admin_password, move_ports, pasted, refused, sh_blocks

    if HAPROXY is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    start, stop = sh_blocks("scaling.md", "Behind a load balancer: haproxy and the PROXY header")
    ports = {6379: redis_server.port}  # type: ignore[attr-defined]
    ports.update({p: free_port() for p in (2323, 2222, 8080)})  # the frontends' bind :PORT
    config = move_ports(docs_config(), ports).replace("bind :", "bind 127.0.0.1:")
    start = move_ports(start, ports)
    assert len(ports) == 10, ports  # Redis, three frontends, six node listeners
    (tmp_path / "haproxy.cfg").write_text(config)
    with pasted(start, stop, tmp_path):
        password = admin_password(tmp_path / "ss-data")
        deadline = time.monotonic() + 30
        sessions = []
        while True:
            try:
                c = client(ports[2323])
                c.expect("login: ", 5)
                break
            except (OSError, AssertionError):
                assert time.monotonic() < deadline, (tmp_path / "bash.out").read_text()
                time.sleep(0.3)
        sessions.append(admin_in(c, password))
        sessions.append(admin_in(client(ports[2323], OTHER_CLIENT), password, greeted=False))
        try:
            deadline = time.monotonic() + 15
            while True:
                sessions[0].send_line("who")
                table = sessions[0].expect(":~$ ")
                rows = re.findall(r"^admin .* (\S+)$", table, re.M)
                if len(rows) == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert sorted(rows) == [CLIENT, OTHER_CLIENT], table  # the clients, not haproxy
        finally:
            for c in sessions:
                c.close()
    for port in (ports[2323], ports[2222], ports[12323], ports[12324]):
        assert refused(port), f"port {port} still open after the stop line"
