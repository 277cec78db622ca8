"""The second factor against the real server: enabled over telnet (the URI's secret gives the
codes, through pyotp), then asked at a password login on telnet, the browser's WebSocket and
SSH's keyboard-interactive with the real OpenSSH client; ``--require-otp admin``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from realserver import PASSWORD, RawClient, RealServer, register, sign_in
from test_web_browser import browser, screen, type_keys, wait_for  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("shellserver"))
SSH = shutil.which("ssh")
needs_ssh = pytest.mark.skipif(
    SSH is None or shutil.which("ssh-keygen") is None,
    reason="the OpenSSH client (ssh, ssh-keygen) is not installed (apt install openssh-client)",
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    work = tmp_path_factory.mktemp("otp")
    server = RealServer(
        work,
        "--ssh", "tcp:0:interface=127.0.0.1",
        "--web", "tcp:0:interface=127.0.0.1",
        "--require-otp", "admin", "--max-registrations", "0",
    ).start()  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


def enable(c: RawClient, name: str) -> tuple[pyotp.TOTP, list[str]]:
    """``otp enable`` at ``name``'s prompt: the secret read from the URI, confirmed with its
    current code; the recovery codes printed."""
    c.send_line("otp enable")
    shown = c.expect("Verification code: ")
    uri = re.search(r"otpauth://totp/testhost:" + name + r"\?\S+", shown)
    assert uri is not None, shown
    assert "▄" in shown or "▀" in shown  # the QR code came through the session's output
    totp = pyotp.parse_uri(uri.group(0))
    assert isinstance(totp, pyotp.TOTP)
    c.send_line(totp.now())
    done = c.expect(f"{name}@testhost:~$ ")
    assert "Second factor enabled" in done, done
    codes = re.findall(r"^  ([a-z2-9]{5}-[a-z2-9]{5})$", done, re.M)
    assert len(codes) == 10
    return totp, codes


def fresh_code(totp: pyotp.TOTP) -> str:
    """A code not used yet: the next time step's, which the server accepts (a step of drift)
    and which is later than the step the last login or ``otp enable`` used."""
    return totp.at(time.time(), counter_offset=1)


def to_code_prompt(port: int, name: str, password: str = PASSWORD) -> RawClient:
    c = RawClient(port)
    c.expect("login: ")
    c.send_line(name)
    c.expect("Password: ")
    c.send_line(password)
    c.expect("Verification code: ")
    return c


def test_telnet_login_asks_for_the_code_once_each(srv: RealServer) -> None:
    me = register(srv.port, "alice")
    totp, codes = enable(me, "alice")
    me.close()
    # A wrong code: a failed login, back at login:.
    c = to_code_prompt(srv.port, "alice")
    right = fresh_code(totp)
    c.send_line("000000" if right != "000000" else "111111")
    c.expect("Login incorrect\n")
    c.expect("login: ")
    c.close()
    assert "failed login for alice from 127.0.0.1: verification code wrong" in srv.log_text()
    # The right code logs in; the same code again is refused.
    c = to_code_prompt(srv.port, "alice")
    c.send_line(right)
    c.expect("alice@testhost:~$ ")
    c.close()
    again = to_code_prompt(srv.port, "alice")
    again.send_line(right)
    again.expect("Login incorrect\n")
    again.close()
    assert "failed login for alice from 127.0.0.1: verification code replayed" in srv.log_text()
    # A recovery code works once.
    c = to_code_prompt(srv.port, "alice")
    c.send_line(codes[0])
    c.expect("alice@testhost:~$ ")
    c.send_line("otp status")
    assert "9 recovery code(s) left" in c.expect("alice@testhost:~$ ")
    c.close()
    c = to_code_prompt(srv.port, "alice")
    c.send_line(codes[0])
    c.expect("Login incorrect\n")
    c.close()


def test_the_browser_login_asks_for_the_code(srv: RealServer) -> None:
    websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
    me = register(srv.port, "bob")
    totp, _ = enable(me, "bob")
    me.close()
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.web_port}/ws", timeout=10)
    try:
        seen = ""

        def until(text: str) -> str:
            nonlocal seen
            deadline = time.monotonic() + 10
            while text not in seen:
                assert time.monotonic() < deadline, seen
                seen += ws.recv()
            got, seen = seen[: seen.index(text) + len(text)], seen[seen.index(text) + len(text) :]
            return got

        until("login: ")
        ws.send("0bob\r")
        until("Password: ")
        ws.send(f"0{PASSWORD}\r")
        until("Verification code: ")
        code = fresh_code(totp)
        ws.send(f"0{code}\r")
        shown = until("bob@testhost:~$ ")
        assert code not in shown  # echo off
    finally:
        ws.close()


def test_chromium_asks_for_the_code_and_shows_the_qr_code(
    srv: RealServer,
    browser: Any,  # noqa: F811 (the fixture)
) -> None:
    from selenium.webdriver.common.keys import Keys

    me = register(srv.port, "fran")
    totp, recovery = enable(me, "fran")
    me.close()
    browser.get(f"http://127.0.0.1:{srv.web_port}/")
    wait_for(browser, "login:")
    code = fresh_code(totp)
    for line, prompt in [
        ("fran", "Password:"),
        (PASSWORD, "Verification code:"),
        (code, "fran@testhost:~$"),
    ]:
        type_keys(browser, line + Keys.ENTER)
        wait_for(browser, prompt)
    assert code not in screen(browser)  # echo off
    # The QR code drawn in the browser's terminal.
    type_keys(browser, "otp disable" + Keys.ENTER)
    wait_for(browser, "Verification code:")
    type_keys(browser, recovery[0] + Keys.ENTER)  # the login used the newest code
    wait_for(browser, "second factor disabled")
    type_keys(browser, "clear" + Keys.ENTER)
    type_keys(browser, "otp enable" + Keys.ENTER)
    shown = wait_for(browser, "Key: ")
    drawn = [row for row in shown.splitlines() if len(row) >= 30 and set(row) <= set(" ▀▄█")]
    assert len(drawn) >= 15, shown  # the rows the window holds (its top may have scrolled)
    wait_for(browser, "Verification code:")
    type_keys(browser, Keys.ENTER)
    wait_for(browser, "second factor not enabled")


def ssh_args(srv: RealServer, *extra: str) -> list[str]:
    (port,) = srv.listening("ssh")
    return [
        SSH or "ssh", "-F", "/dev/null", "-p", str(port),
        "-o", f"UserKnownHostsFile={srv.workdir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR", *extra,
    ]  # fmt: skip


@needs_ssh
def test_ssh_asks_for_the_code_through_keyboard_interactive(srv: RealServer) -> None:
    pexpect = pytest.importorskip("pexpect")
    me = register(srv.port, "carol")
    totp, _ = enable(me, "carol")
    me.close()
    args = ssh_args(
        srv,
        "-o", "PubkeyAuthentication=no",
        "-o", "KbdInteractiveAuthentication=yes",
        "-o", "PreferredAuthentications=password,keyboard-interactive",
        "carol@127.0.0.1",
    )  # fmt: skip
    child = pexpect.spawn(args[0], args[1:], timeout=30, dimensions=(24, 80))
    try:
        child.expect("password: ")
        child.sendline(PASSWORD)
        child.expect("Verification code: ")
        right = fresh_code(totp)
        child.sendline("000000" if right != "000000" else "111111")
        child.expect("password: ")  # a wrong code: the login starts over
        child.sendline(PASSWORD)
        child.expect("Verification code: ")
        child.sendline(right)
        child.expect(r"carol@testhost:~\$ ")
        child.sendline("logout")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    log = srv.log_text()
    assert "failed login for carol from 127.0.0.1: verification code wrong" in log
    assert "SSH carol authenticated from 127.0.0.1 (keyboard-interactive)" in log


@needs_ssh
def test_a_public_key_login_asks_no_code(srv: RealServer) -> None:
    me = register(srv.port, "dave")
    enable(me, "dave")
    me.close()
    key = srv.workdir / "id_dave"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    added = subprocess.run(
        [CLI, "--data", str(srv.data), "addkey", "dave"],
        input=key.with_suffix(".pub").read_bytes(),
        capture_output=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    run = subprocess.run(
        ssh_args(
            srv, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(key),
            "dave@127.0.0.1", "otp status",
        ),
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert b"otp: second factor enabled" in run.stdout


def test_require_otp_admin_enrols_the_admin_before_the_prompt(srv: RealServer) -> None:
    if SSH is not None:  # one command over SSH is refused: the steps need a terminal
        pexpect = pytest.importorskip("pexpect")
        args = ssh_args(
            srv, "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
            "admin@127.0.0.1", "who",
        )  # fmt: skip
        child = pexpect.spawn(args[0], args[1:], timeout=30)
        try:
            child.expect("password: ")
            child.sendline(srv.admin_password())
            child.expect("A second factor is required for this account: log in with a terminal")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 1
    c = RawClient(srv.port)
    c.expect("login: ")
    c.send_line("admin")
    c.expect("Password: ")
    c.send_line(srv.admin_password())
    shown = c.expect("Verification code: ")
    assert "This account must use a second factor" in shown
    assert "admin@testhost" not in shown  # no prompt before the second factor
    uri = re.search(r"otpauth://\S+", shown)
    assert uri is not None
    c.send_line(pyotp.parse_uri(uri.group(0)).now())
    assert "Second factor enabled" in c.expect("admin@testhost:~$ ")
    c.close()
    # A user is not asked to enrol: the prompt follows the password.
    register(srv.port, "erin").close()
    sign_in(RawClient(srv.port), "erin", PASSWORD).close()
    # The admin's next password login asks for a code.
    c = RawClient(srv.port)
    c.expect("login: ")
    c.send_line("admin")
    c.expect("Password: ")
    c.send_line(srv.admin_password())
    c.expect("Verification code: ")
    c.close()


def cli(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--data", str(data), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_otp_reset_from_the_command_line_running(srv: RealServer) -> None:
    me = register(srv.port, "gus")
    enable(me, "gus")
    me.close()
    done = cli(srv.data, "otp-reset", "gus")
    assert (done.returncode, done.stdout) == (0, "second factor of gus removed\n"), done.stderr
    assert "admin otp reset by" in srv.log_text()
    again = cli(srv.data, "otp-reset", "gus")
    assert again.returncode == 1
    assert again.stderr == "shellserver otp-reset: gus has no second factor\n"
    nobody = cli(srv.data, "otp-reset", "zed")
    assert nobody.returncode == 1 and "user 'zed' does not exist" in nobody.stderr
    sign_in(RawClient(srv.port), "gus", PASSWORD).close()  # no code asked any more


def test_otp_reset_from_the_command_line_stopped(tmp_path: Path) -> None:
    from shellserver.store.accounts import AccountDB
    from shellserver.store.otp import OtpDB

    data = tmp_path / "data"
    made = cli(data, "useradd", "hal", "--password-stdin", stdin="halpass123\n")
    assert made.returncode == 0, made.stderr  # the data dir and the store, server stopped
    db = AccountDB.open(str(data / "accounts.sqlite3"))
    try:
        assert OtpDB(db).enable("hal", pyotp.random_base32(), 0, ["h"], time.time())
    finally:
        db.close()
    done = cli(data, "otp-reset", "hal")
    assert (done.returncode, done.stdout) == (0, "second factor of hal removed\n"), done.stderr
    assert "admin otp-reset by" in (data / "admin.log").read_text()
    again = cli(data, "otp-reset", "hal")
    assert again.returncode == 1
    assert again.stderr == "shellserver otp-reset: hal has no second factor\n"
