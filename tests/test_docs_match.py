"""The docs say what the server does: texts and label values they quote, checked against a
real server, and docs that stand on their own (they cite no document the reader lacks)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from realserver import PASSWORD, RawClient, RealServer, login
from test_operations import scrape

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
CLI = str(Path(sys.executable).with_name("shellserver"))


def doc(name: str) -> str:
    return (DOCS / name).read_text()


def row(text: str, first_cell: str) -> str:
    """The table row of ``text`` whose first cell is ``first_cell``."""
    (found,) = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    return found


def quoted(text: str) -> list[str]:
    """The `code` words of ``text``, leaving out those inside parentheses."""
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\([^()]*\)", "", text)
    return re.findall(r"`([^`]+)`", text)


def test_the_docs_cite_no_document_the_reader_lacks() -> None:
    """docs/ and README.md are all a user has: no spec sections, no issue numbers."""
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = path.read_text()
        assert "SPEC" not in text, path
        assert "§" not in text, path
        assert not re.search(r"\bissues?\b", text, re.I), path


def test_addkey_prints_what_the_admin_guide_quotes(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (apt install openssh-client)")
    (said,) = re.findall(r"prints `(added key SHA256:[^`]*)`", doc("admin.md"))
    key = tmp_path / "bob_id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    data = tmp_path / "data"
    made = subprocess.run(
        [CLI, "--data", str(data), "useradd", "bob", "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    added = subprocess.run(
        [CLI, "--data", str(data), "addkey", "bob"],
        stdin=key.with_suffix(".pub").open(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    pattern = re.escape(said).replace("…", r"[A-Za-z0-9+/]{43}")
    assert re.fullmatch(pattern + "\n", added.stdout), (said, added.stdout)


@pytest.mark.integration
def test_wires_and_message_kinds_are_those_operations_md_lists(tmp_path: Path) -> None:
    """A session on each wire (telnet, SSH, browser): the ``wire`` label values of
    ``shellserver_sessions``, the ``wire`` of the ``login`` events and the ``kind`` values
    of ``shellserver_messages_total`` are the ones the doc's tables name."""
    ssh = shutil.which("ssh")
    websocket = pytest.importorskip("websocket", reason="websocket-client (selenium's)")
    if ssh is None or shutil.which("ssh-keygen") is None:
        pytest.skip("the OpenSSH client (ssh, ssh-keygen) is not installed")
    ops = doc("operations.md")
    sessions_row = row(ops, "`shellserver_sessions{wire,role}`")
    (wires_said,) = re.findall(r"by wire \(([^)]*)\)", sessions_row)
    login_row = row(ops, "`login`")
    (tty_kinds_said,) = re.findall(r"`wire` \(the tty kind: ([^)]*)\)", login_row)
    for listed in (wires_said, tty_kinds_said):  # a plain list: no "later `ssh`"
        assert re.fullmatch(r"`[a-z]+`(, `[a-z]+`)*", listed), listed
    (kinds_said,) = re.findall(
        r"`kind` is (.*?); `outcome`", row(ops, "`shellserver_messages_total{kind,outcome}`")
    )

    srv = RealServer(
        tmp_path, "--metrics", "tcp:0:interface=127.0.0.1", "--ssh", "tcp:0:interface=127.0.0.1",
        "--web", "tcp:0:interface=127.0.0.1", runner="twist-json",
    )  # fmt: skip
    srv.start()
    clients: list[object] = []
    try:
        key = tmp_path / "id_alice"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        for argv, stdin in [
            (["useradd", "alice", "--password-stdin"], PASSWORD + "\n"),
            (["addkey", "alice"], key.with_suffix(".pub").read_text()),
        ]:
            r = subprocess.run(
                [CLI, "--data", str(srv.data), *argv],
                input=stdin, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
        clients.append(login(srv.port, "alice", PASSWORD))
        ws = websocket.create_connection(f"ws://127.0.0.1:{srv.web_port}/ws", timeout=10)
        clients.append(ws)
        for send, want in [("", "login: "), ("alice\r", "Password: "), (PASSWORD + "\r", ":~$ ")]:
            if send:
                ws.send("0" + send)
            seen = ""
            while want not in seen:
                seen += ws.recv()
        (ssh_port,) = srv.listening("ssh")
        shell = subprocess.Popen(
            [ssh, "-F", "/dev/null", "-p", str(ssh_port), "-T", "-o", "BatchMode=yes",
             "-o", "IdentitiesOnly=yes", "-i", str(key), "-o", "StrictHostKeyChecking=no",
             "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "LogLevel=ERROR",
             "alice@127.0.0.1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        clients.append(shell)
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(srv.metrics_port)
            live = {
                dict(labels)["wire"]
                for (name, labels), value in samples.items()
                if name == "shellserver_sessions" and value > 0
            }
            if len(live) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        shown = {
            dict(labels)["wire"] for (name, labels) in samples if name == "shellserver_sessions"
        }
        assert live == shown == set(quoted(wires_said)), (live, shown, wires_said)
        logins = {e["wire"] for e in srv.events() if e.get("event") == "login"}
        assert logins == set(quoted(tty_kinds_said)), (logins, tty_kinds_said)
        kinds = {
            dict(labels)["kind"]
            for (name, labels) in samples
            if name.startswith("shellserver_messages")
        }
        assert kinds == set(quoted(kinds_said)), (kinds, kinds_said)
    finally:
        for c in clients:
            if isinstance(c, subprocess.Popen):
                c.kill()
                c.wait()
                for pipe in (c.stdin, c.stdout, c.stderr):
                    if pipe is not None:
                        pipe.close()
            elif isinstance(c, RawClient):
                c.close()
            else:
                c.close()  # type: ignore[attr-defined]
        srv.stop()
