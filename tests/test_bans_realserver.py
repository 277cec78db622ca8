"""Bans against the real server: telnet, the OpenSSH client and a WebSocket from banned
loopback addresses (127.0.x.y, so the admin's own 127.0.0.1 is not covered), the CLI with the
server running and stopped, expiry, and a ban made on one node holding on another."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
import webclient
from clusternodes import ADMIN, eventually, run, running
from realserver import PASSWORD, RawClient, RealServer, login, sign_in, sign_up
from test_ssh_integration import self_signed

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("shellserver"))
SSH = shutil.which("ssh")
needs_ssh = pytest.mark.skipif(
    SSH is None or shutil.which("ssh-keygen") is None,
    reason="the OpenSSH client (ssh, ssh-keygen) is not installed (apt install openssh-client)",
)
UNTIL = r"until \w{3} \w{3} \d\d \d\d:\d\d"


class From(RawClient):
    """A raw client connecting from a chosen loopback address."""

    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(source, 0)
        )
        self.buffer = b""
        self.raw_seen = b""

    def everything(self, timeout: float = 10.0) -> str:
        """All it is sent until the server closes the connection."""
        assert self.closed(timeout), self.buffer
        return self.buffer.decode("utf-8", "replace").replace("\r\n", "\n")


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--data", str(data), *args], capture_output=True, text=True, timeout=60
    )


def me() -> str:
    """Who the control socket names as the banning operator."""
    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RealServer]:
    server = RealServer(
        tmp_path,
        "--ssh", "tcp:0:interface=127.0.0.1",
        "--web", "tcp:0:interface=127.0.0.1",
    ).start()  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


def ssh_port(srv: RealServer) -> int:
    deadline = time.monotonic() + 10
    while not srv.listening("ssh"):
        assert time.monotonic() < deadline, srv.log_text()
        time.sleep(0.05)
    return srv.listening("ssh")[0]


def ssh_argv(srv: RealServer, source: str, *extra: str) -> list[str]:
    return [
        SSH or "ssh", "-F", "/dev/null", "-p", str(ssh_port(srv)), "-b", source,
        "-o", f"UserKnownHostsFile={srv.workdir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=10",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *extra,
    ]  # fmt: skip


def ssh(srv: RealServer, source: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssh_argv(srv, source, *extra), capture_output=True, timeout=30)


@needs_ssh
@pytest_twisted.ensureDeferred
async def test_a_network_ban_refuses_every_wire_before_any_prompt(srv: RealServer) -> None:
    admin = login(srv.port, "admin", srv.admin_password())
    vic = sign_up(From(srv.port, "127.0.5.7"), "vic")
    web_url = f"ws://127.0.0.1:{srv.web_port}/ws"
    on_web = await webclient.connect(web_url, bindAddress=("127.0.5.11", 0))
    await webclient.sign_up(on_web, "wendy", PASSWORD)

    banned = cli(srv.data, "ban", "127.0.5.7/24", "1h", "spam")
    assert banned.returncode == 0, banned.stderr
    assert re.fullmatch(rf"banned 127\.0\.5\.0/24 {UNTIL} \(spam\)\n", banned.stdout)
    # Sessions already open from the network end at once, told why, on every wire.
    told = vic.expect("(spam)")
    assert re.search(rf"You have been logged out by {me()}: banned 127\.0\.5\.0/24 {UNTIL}", told)
    assert vic.closed()
    assert "banned 127.0.5.0/24" in await on_web.expect("(spam)")
    await on_web.lost
    # Other addresses are not covered: the admin's session goes on.
    assert "admin" in run(admin, "who", "admin")

    # telnet: the refusal, then the close, before any prompt.
    refused = From(srv.port, "127.0.5.8").everything()
    assert re.fullmatch(rf"Your address is banned {UNTIL}\.\n", refused), refused
    # SSH: closed before the version exchange, so before any authentication.
    r = ssh(srv, "127.0.5.9", "vic@127.0.0.1", "who")
    assert r.returncode == 255, r
    assert b"Connection closed" in r.stderr and b"Permission denied" not in r.stderr, r.stderr
    assert b"password" not in r.stderr.lower()
    # The browser's WebSocket: the refusal as text, then the close, no login prompt.
    client = await webclient.connect(web_url, bindAddress=("127.0.5.10", 0))
    await client.lost
    assert re.fullmatch(rf"Your address is banned {UNTIL}\.\n", client.seen), client.seen
    assert "login:" not in client.seen

    listed = cli(srv.data, "bans", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)["bans"]
    assert entry["target"] == "127.0.5.0/24" and entry["kind"] == "network"
    assert entry["by"] == me() and entry["reason"] == "spam"
    assert entry["until"] is not None and entry["when"] < entry["until"]
    table = run(admin, "bans", "admin")
    assert re.search(r"^127\.0\.5\.0/24 +\S+ +\w{3} \w{3} \d\d \d\d:\d\d +\w{3}", table, re.M)
    assert "refused 1 connection(s) from banned addresses" in srv.log_text()

    lifted = cli(srv.data, "unban", "127.0.5.0/24")
    assert lifted.returncode == 0 and lifted.stdout == "unbanned 127.0.5.0/24\n", lifted
    sign_in(From(srv.port, "127.0.5.8"), "vic", PASSWORD).close()
    again = cli(srv.data, "unban", "127.0.5.0/24")
    assert again.returncode == 1 and "127.0.5.0/24 is not banned" in again.stderr
    admin.close()


def test_tls_telnet_from_a_banned_address_is_refused_after_the_handshake(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    srv = RealServer(
        tmp_path, "--telnet", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    ).start()
    try:
        tls_port = srv.listening("telnet")[1]
        assert cli(srv.data, "ban", "127.0.4.0/24", "30m").returncode == 0

        def tls_from(source: str) -> From:
            c = From(tls_port, source)
            context = ssl.create_default_context(cafile=str(cert))
            c.sock = context.wrap_socket(c.sock, server_hostname="testhost")
            return c

        got = tls_from("127.0.4.1").everything()
        assert re.fullmatch(rf"Your address is banned {UNTIL}\.\n", got), got
        tls_from("127.0.3.1").expect("login: ")
    finally:
        srv.stop()


def test_a_timed_ban_expires_by_itself(srv: RealServer) -> None:
    r = cli(srv.data, "ban", "127.0.6.1", "2s", "cool", "down")
    assert r.returncode == 0 and r.stdout.endswith(" (cool down)\n"), r
    started = time.monotonic()
    assert "Your address is banned until" in From(srv.port, "127.0.6.1").everything()
    From(srv.port, "127.0.6.2").expect("login: ")  # another address
    time.sleep(max(0.0, 2.2 - (time.monotonic() - started)))
    From(srv.port, "127.0.6.1").expect("login: ")
    assert json.loads(cli(srv.data, "bans", "--json").stdout) == {"bans": []}


def test_cli_errors_and_bans_made_with_the_server_stopped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bad = cli(data, "ban", "1.2.3", "1h")
    assert bad.returncode == 2 and "invalid address '1.2.3'" in bad.stderr
    bad = cli(data, "ban", "bob", "5x", "spam")
    assert bad.returncode == 2 and "invalid duration '5x'" in bad.stderr
    assert "Traceback" not in bad.stderr
    made = cli(data, "ban", "127.0.8.0/24", "7d", "offline")
    assert made.returncode == 0 and made.stdout.startswith("banned 127.0.8.0/24 until "), made
    assert cli(data, "ban", "mallory").stdout == "banned mallory permanently\n"
    listed = json.loads(cli(data, "bans", "--json").stdout)["bans"]
    assert [b["target"] for b in listed] == ["127.0.8.0/24", "mallory"]
    assert cli(data, "unban", "mallory").stdout == "unbanned mallory\n"
    srv = RealServer(tmp_path).start()
    try:
        assert "Your address is banned" in From(srv.port, "127.0.8.3").everything()
        text = cli(data, "bans").stdout
        assert text.splitlines()[0].split() == ["TARGET", "BY", "WHEN", "UNTIL", "REASON"]
        assert text.splitlines()[1].startswith("127.0.8.0/24 ")
    finally:
        srv.stop()


@needs_ssh
def test_a_key_ban_refuses_that_key_but_not_the_password(srv: RealServer) -> None:
    key = srv.workdir / "id_kim"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    made = subprocess.run(
        [CLI, "--data", str(srv.data), "useradd", "kim", "--password-stdin"],
        input=b"kimpass123\n",
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    added = subprocess.run(
        [CLI, "--data", str(srv.data), "addkey", "kim"],
        input=key.with_suffix(".pub").read_bytes(),
        capture_output=True,
    )
    assert added.returncode == 0, added.stderr
    fingerprint = added.stdout.decode().split()[2]
    with_key = ("-o", "IdentitiesOnly=yes", "-i", str(key), "kim@127.0.0.1")
    ok = ssh(srv, "127.0.0.1", *with_key, "whoami")
    assert ok.returncode == 0 and ok.stdout == b"kim\n", ok
    # A session logged in with the key is ended by the ban of that key.
    admin = login(srv.port, "admin", srv.admin_password())
    pexpect = pytest.importorskip("pexpect")
    args = ssh_argv(srv, "127.0.0.1", "-tt", *with_key)
    child = pexpect.spawn(args[0], args[1:], timeout=30)
    try:
        child.expect(r"kim@testhost:~\$ ")
        run(admin, f"ban {fingerprint} 1h stolen", "admin")
        child.expect(f"You have been logged out by admin: banned {re.escape(fingerprint)} ")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    refused = ssh(srv, "127.0.0.1", *with_key, "whoami")
    assert refused.returncode == 1, refused
    assert re.search(rf"Login refused: banned {UNTIL} \(stolen\)".encode(), refused.stdout)
    # kim's password still works (only a ban of the user bars the user).
    sign_in(RawClient(srv.port), "kim", "kimpass123").close()
    admin.close()


def test_a_ban_made_on_one_node_holds_on_another(tmp_path: Path) -> None:
    with running(tmp_path, "ab", users=["wes", "xia"]) as cluster:
        wes = cluster.login("b", "wes")
        xia = sign_in(From(cluster["b"].port, "127.0.9.4"), "xia", PASSWORD)
        cluster.clients.append(xia)
        r = cluster.cli("a", "ban", "wes", "1h", "rude")
        assert r.returncode == 0, r.stderr
        assert re.search(
            rf"logged out by {me()}: banned wes {UNTIL} \(rude\)", wes.expect("(rude)")
        )
        assert wes.closed()
        again = cluster.connect("b")
        again.expect("login: ")
        again.send_line("wes")
        again.expect("Password: ")
        again.send_line(PASSWORD)
        assert re.search(rf"Login refused: banned {UNTIL} \(rude\)", again.expect("(rude)"))
        assert again.closed()
        # An address ban from an admin's session on node a: node b ends and refuses.
        admin = cluster.admin("a")
        run(admin, "ban 127.0.9.0/24 30m", ADMIN)
        told = xia.expect("127.0.9.0/24 until")
        assert f"logged out by {ADMIN}: banned 127.0.9.0/24 until" in told
        assert xia.closed()
        refused = From(cluster["b"].port, "127.0.9.5").everything()
        assert re.fullmatch(rf"Your address is banned {UNTIL}\.\n", refused), refused
        # Lifted on node b, it is lifted on node a too.
        assert cluster.cli("b", "unban", "127.0.9.0/24").returncode == 0

        def let_in() -> bool:
            c = From(cluster["a"].port, "127.0.9.6")
            try:
                return "login: " in c.expect("login: ", timeout=2)
            except AssertionError:
                return False
            finally:
                c.close()

        assert eventually(let_in, 5)
        assert cluster.tracebacks() == {}
