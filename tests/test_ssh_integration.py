"""SSH (the real OpenSSH client) and TLS telnet (Python's ssl) against the real server."""

from __future__ import annotations

import datetime
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from realserver import RawClient, RealServer, login

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("shellserver"))
SSH = shutil.which("ssh")
needs_ssh = pytest.mark.skipif(
    SSH is None or shutil.which("ssh-keygen") is None,
    reason="the OpenSSH client (ssh, ssh-keygen) is not installed (apt install openssh-client)",
)


def cli(data: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CLI, "--data", str(data), *args], input=stdin, capture_output=True, timeout=60
    )


# -- TLS telnet ---------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "testhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("testhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TLSClient(RawClient):
    """RawClient over TLS, verifying the server against its own self-signed certificate."""

    def __init__(self, port: int, cafile: Path) -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="testhost")
        self.buffer = b""
        self.raw_seen = b""


def test_tls_telnet_login_and_who(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    srv = RealServer(
        tmp_path, "--telnet", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    ).start()
    try:
        plain, tls = srv.listening("telnet")
        assert tls != plain
        c = TLSClient(tls, cert)
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
        c.expect("login: ")
        c.send_line("admin")
        c.expect("Password: ")
        c.send_line(srv.admin_password())
        c.expect("admin@testhost:~$ ")
        c.send_line("who")
        seen = c.expect("admin@testhost:~$ ")
        assert re.search(r"^admin\s", seen, re.M), seen
        c.send_line("logout")
        assert c.closed(timeout=5)
        c.close()
    finally:
        srv.stop()


# -- SSH ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    work = tmp_path_factory.mktemp("ssh")
    srv = RealServer(work, "--ssh", "tcp:0:interface=127.0.0.1").start()
    try:
        yield srv
    finally:
        srv.stop()


def ssh_port(srv: RealServer) -> int:
    deadline = time.monotonic() + 10
    while not srv.listening("ssh"):
        assert time.monotonic() < deadline, srv.log_text()
        time.sleep(0.05)
    return srv.listening("ssh")[0]


def ssh_args(
    srv: RealServer, *extra: str, key: Path | None = None, level: str = "ERROR"
) -> list[str]:
    known = srv.workdir / "known_hosts"
    args = [
        SSH or "ssh", "-F", "/dev/null", "-p", str(ssh_port(srv)),
        "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=accept-new",
        "-o", "ConnectTimeout=10", "-o", f"LogLevel={level}",
    ]  # fmt: skip
    if key is not None:
        args += ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(key)]
    else:
        args += ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
    return [*args, *extra]


def user_key(srv: RealServer, name: str) -> Path:
    path = srv.workdir / name
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True
        )
    return path


@needs_ssh
def test_host_keys_made_0600_logged_and_shown_by_status(sshd: RealServer) -> None:
    keys = sshd.data / "ssh"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in ("ssh_host_ed25519_key", "ssh_host_rsa_key"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    status = cli(sshd.data, "status")
    assert status.returncode == 0, status.stderr
    shown = re.findall(r"^SSH host key (\d+ SHA256:\S+ \((\w+)\))$", status.stdout.decode(), re.M)
    assert [kind for _, kind in shown] == ["ED25519", "RSA"]
    for line, _ in shown:
        assert f"SSH host key {line}" in sshd.log_text()
    # The check a user makes: the key the server presents is the one the operator published.
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(ssh_port(sshd)), "127.0.0.1"],
        capture_output=True,
        timeout=30,
    )
    printed = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=scan.stdout, capture_output=True, check=True
    ).stdout.decode()
    assert shown[0][0].split()[1] in printed


@needs_ssh
def test_key_login_with_a_key_added_by_addkey(sshd: RealServer) -> None:
    key = user_key(sshd, "id_alice")
    made = cli(sshd.data, "useradd", "alice", "--password-stdin", stdin=b"alicepass1\n")
    assert made.returncode == 0, made.stderr
    refused = subprocess.run(
        ssh_args(sshd, "alice@127.0.0.1", "who", key=key), capture_output=True, timeout=30
    )
    assert refused.returncode == 255 and b"Permission denied" in refused.stderr
    added = cli(sshd.data, "addkey", "alice", stdin=(key.with_suffix(".pub")).read_bytes())
    assert added.returncode == 0, added.stderr
    assert added.stdout.decode().startswith("added key SHA256:")
    again = cli(sshd.data, "addkey", "alice", stdin=(key.with_suffix(".pub")).read_bytes())
    assert again.returncode == 1 and b"already in alice's authorized_keys" in again.stderr
    run = subprocess.run(
        ssh_args(sshd, "alice@127.0.0.1", "who", key=key), capture_output=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    assert re.search(rb"^alice\s+ssh/\d+\s", run.stdout, re.M), run.stdout
    assert b"\r\n" not in run.stdout  # no pty: plain lines, fit for a pipe
    assert "admin addkey by" in sshd.log_text()
    assert "SSH alice authenticated from 127.0.0.1 (publickey)" in sshd.log_text()
    nobody = cli(sshd.data, "addkey", "zed", stdin=(key.with_suffix(".pub")).read_bytes())
    assert nobody.returncode == 1 and b"user 'zed' does not exist" in nobody.stderr


@needs_ssh
def test_key_login_with_a_key_the_user_added_with_echo(sshd: RealServer) -> None:
    key = user_key(sshd, "id_erin")
    cli(sshd.data, "useradd", "erin", "--password-stdin", stdin=b"erinpass12\n")
    session = login(sshd.port, "erin", "erinpass12")
    session.send_line("mkdir .ssh")
    session.expect("erin@testhost:~$ ")
    public = key.with_suffix(".pub").read_text().strip()
    session.send_line(f"echo '{public}' >> ~/.ssh/authorized_keys")
    session.expect("erin@testhost:~$ ")
    session.close()
    run = subprocess.run(
        ssh_args(sshd, "erin@127.0.0.1", "who", key=key), capture_output=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    assert re.search(rb"^erin\s+ssh/\d+\s", run.stdout, re.M), run.stdout


@needs_ssh
def test_bad_lines_in_authorized_keys_are_logged_and_skipped(sshd: RealServer) -> None:
    key = user_key(sshd, "id_bob")
    cli(sshd.data, "useradd", "bob", "--password-stdin", stdin=b"bobpass123\n")
    ssh_dir = sshd.data / "home" / "bob" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_bytes(
        b"this is not a key\n" + key.with_suffix(".pub").read_bytes()
    )
    run = subprocess.run(
        ssh_args(sshd, "bob@127.0.0.1", "who", key=key), capture_output=True, timeout=30
    )
    assert run.returncode == 0 and b"bob" in run.stdout, run.stderr
    assert "bob's ~/.ssh/authorized_keys line 1 skipped: not a key" in sshd.log_text()


@needs_ssh
def test_password_login_with_a_pty_messages_resize_and_logout(sshd: RealServer) -> None:
    """A wrong password waits, then the right one; the shell is telnet's character-mode shell."""
    pexpect = pytest.importorskip("pexpect")
    cli(sshd.data, "useradd", "carol", "--password-stdin", stdin=b"carolpass1\n")
    args = ssh_args(sshd, "-o", "SetEnv=TERM=vt220", "carol@127.0.0.1")
    child = pexpect.spawn(args[0], args[1:], timeout=30, dimensions=(24, 80))
    try:
        child.expect("password: ")
        started = time.monotonic()
        child.sendline("wrong-password")
        child.expect("password: ")
        assert time.monotonic() - started >= 0.9  # the failure is delayed
        child.sendline("carolpass1")
        child.expect("This is your first login")
        child.expect(r"carol@testhost:~\$ ")
        child.send("who")  # half a line typed when a message comes
        child.expect("who")
        teller = login(sshd.port, "admin", sshd.admin_password())
        teller.send_line("write carol hello over ssh")
        teller.expect("admin@testhost:~$ ")
        child.expect("hello over ssh")
        child.expect(r"carol@testhost:~\$ who")  # the prompt and the half-typed line again
        child.send("\r")
        child.expect(r"carol\s+ssh/\d+")
        child.expect(r"carol@testhost:~\$ ")
        teller.send_line("who")
        seen = teller.expect("admin@testhost:~$ ")
        assert re.search(r"^carol\s+ssh/\d+\s", seen, re.M), seen
        teller.close()
        child.sendline("touch " + " ".join(f"file{n:02}" for n in range(30)))
        child.expect(r"carol@testhost:~\$ ")

        def ls() -> str:
            child.send("ls\r")
            child.expect("ls\r\n")
            child.expect(r"carol@testhost:~\$ ")
            return str(child.before.decode())

        narrow = ls()
        child.setwinsize(24, 200)  # window-change
        wide = ls()
        assert max(map(len, wide.splitlines())) > 80 >= max(map(len, narrow.splitlines()))
        child.sendline("logout")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    log = sshd.log_text()
    assert "failed login for carol from 127.0.0.1" in log


@needs_ssh
def test_exec_exit_status_and_tty_names(sshd: RealServer) -> None:
    key = user_key(sshd, "id_frank")
    cli(sshd.data, "useradd", "frank", "--password-stdin", stdin=b"frankpass1\n")
    cli(sshd.data, "addkey", "frank", stdin=key.with_suffix(".pub").read_bytes())

    def run(command: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ssh_args(sshd, "frank@127.0.0.1", command, key=key), capture_output=True, timeout=30
        )

    ok = run("who")
    assert ok.returncode == 0 and re.search(rb"^frank\s+ssh/\d+", ok.stdout, re.M)
    assert b"Last login" not in ok.stdout and b"$ " not in ok.stdout  # no greeting, no prompt
    missing = run("nosuchcommand")
    assert missing.returncode == 127 and b"nosuchcommand: command not found" in missing.stdout
    usage = run("write")
    assert usage.returncode == 1 and b"Usage: write" in usage.stdout
    failed = run("cat nothing-here")
    assert failed.returncode == 1, failed.stdout
    listed = run("ls -l; cat f")  # no command list: said so, nothing run
    assert (listed.returncode, listed.stdout) == (
        1,
        b"sh: pipes and command lists are not supported\n",
    ), listed.stdout


@needs_ssh
def test_forwarding_is_refused(sshd: RealServer) -> None:
    key = user_key(sshd, "id_dave")
    cli(sshd.data, "useradd", "dave", "--password-stdin", stdin=b"davepass12\n")
    cli(sshd.data, "addkey", "dave", stdin=key.with_suffix(".pub").read_bytes())
    remote = subprocess.run(
        [
            *ssh_args(sshd, "-N", "-oExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9", key=key),
            "dave@127.0.0.1",
        ],
        capture_output=True,
        timeout=30,
    )
    assert remote.returncode == 255 and b"remote port forwarding failed" in remote.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local_port = probe.getsockname()[1]
    local = subprocess.Popen(
        [
            *ssh_args(sshd, "-N", "-L", f"{local_port}:127.0.0.1:9", key=key, level="INFO"),
            "dave@127.0.0.1",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", local_port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "ssh -L never listened"
                time.sleep(0.1)
        conn.settimeout(10)
        assert conn.recv(100) == b""  # the tunnel is closed at once
        conn.close()
    finally:
        local.terminate()
        try:
            _, err = local.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a loaded machine: what it said is all we need
            local.kill()
            _, err = local.communicate(timeout=10)
    assert b"administratively prohibited" in err, err
    assert "direct-tcpip channel refused" in sshd.log_text()
    assert "Traceback" not in sshd.log_text()


@needs_ssh
def test_addkey_with_the_server_stopped(tmp_path: Path) -> None:
    srv = RealServer(tmp_path).start()
    srv.stop()
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    done = cli(srv.data, "addkey", "admin", stdin=key.with_suffix(".pub").read_bytes())
    assert done.returncode == 0, done.stderr
    keys = srv.data / "home" / "admin" / ".ssh" / "authorized_keys"
    assert stat.S_IMODE(keys.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert keys.read_bytes().split()[:2] == key.with_suffix(".pub").read_bytes().split()[:2]
    missing = cli(srv.data, "addkey", "nobody2", stdin=key.with_suffix(".pub").read_bytes())
    assert missing.returncode == 1 and b"user 'nobody2' does not exist" in missing.stderr
    bad = cli(srv.data, "addkey", "admin", stdin=b"ssh-rsa AAAA\n")
    assert bad.returncode == 1 and b"malformed ssh-rsa key" in bad.stderr
    big = cli(srv.data, "addkey", "admin", stdin=b"#" * 70_000)
    assert big.returncode == 1 and b"larger than 16 KiB" in big.stderr


@needs_ssh
def test_sigterm_ends_ssh_sessions_with_the_final_notice(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    srv = RealServer(tmp_path, "--ssh", "tcp:0:interface=127.0.0.1").start()
    try:
        args = ssh_args(srv, "admin@127.0.0.1")
        child = pexpect.spawn(args[0], args[1:], timeout=30)
        child.expect("password: ")
        child.sendline(srv.admin_password())
        child.expect(r"admin@testhost:~\$ ")
        srv.stop()  # SIGTERM
        child.expect("The system is going down NOW!")
        child.expect(pexpect.EOF)
        child.close()
    finally:
        srv.stop()
    assert "admin logged out from ssh/0" in srv.log_text()


@needs_ssh
def test_wrong_ssh_passwords_count_toward_the_address_block(tmp_path: Path) -> None:
    """Ten wrong passwords over SSH block the address: for SSH and for telnet alike."""
    pexpect = pytest.importorskip("pexpect")
    srv = RealServer(tmp_path, "--ssh", "tcp:0:interface=127.0.0.1").start()
    try:
        args = ssh_args(srv, "-o", "NumberOfPasswordPrompts=1", "admin@127.0.0.1", "who")
        guesses = [pexpect.spawn(args[0], args[1:], timeout=30) for _ in range(10)]
        for child in guesses:
            child.expect("password: ")
        for child in guesses:  # in parallel: each waits for its own pause
            child.sendline("not-the-password")
        for child in guesses:
            child.expect("Permission denied")
            child.expect(pexpect.EOF)
            child.close()
        right = pexpect.spawn(args[0], args[1:], timeout=30)
        right.expect("password: ")
        right.sendline(srv.admin_password())
        right.expect("Permission denied")  # blocked: the right password too
        right.close()
        telnet = RawClient(srv.port)
        telnet.expect("Too many failed logins; try again later")  # before login: is asked
        assert telnet.closed(timeout=5)
        telnet.close()
    finally:
        srv.stop()
    assert srv.log_text().count("failed login for admin from 127.0.0.1: incorrect") == 10
