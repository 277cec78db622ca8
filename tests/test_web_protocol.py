"""docs/web-protocol.md stays true: its example client works against a real server, the page
still speaks exactly the frames it lists, and the limits it names are the server's."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from realserver import RealServer, register

from shellserver.wires.web import socket as web

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "web-protocol.md").read_text()
PAGE_JS = (ROOT / "shellserver" / "wires" / "web" / "assets" / "page.js").read_text()


def frame_table() -> dict[str, str]:
    """The client-to-server table: the message's prefix -> the row's text."""
    rows = re.findall(r'^\| `"(\d)" \+ ([^`]*)` \| (.*) \|$', DOC, re.M)
    return {prefix: f"{body} {text}" for prefix, body, text in rows}


def test_the_page_sends_exactly_the_frames_the_doc_lists() -> None:
    sent = re.findall(r'send\("([^"]*)" \+', PAGE_JS)
    assert sorted(sent) == ["0", "1", "2"], sent  # keys, the size, the token; nothing else
    table = frame_table()
    assert sorted(table) == ["0", "1", "2"], table
    assert "KEYS" in table["0"] and "COLS ROWS" in table["1"] and "TOKEN" in table["2"]
    # The size frame is built as the doc says: "1", the columns, one space, the rows.
    assert 'send("1" + term.cols + " " + term.rows)' in PAGE_JS
    assert 'send("0" + data)' in PAGE_JS
    # The token: first, on a /ws?resume socket, spent as it is sent; the server's binary
    # "2" frames are kept in sessionStorage only.
    assert 'new URL("ws?resume", location.href)' in PAGE_JS
    opened = PAGE_JS[PAGE_JS.index("ws.onopen") :]
    assert (
        opened.index("sendSize();") < opened.index('send("2" + takeToken());') < opened.index("};")
    )  # on open: the size, then the token, before any key can be sent
    assert "sessionStorage" in PAGE_JS and "localStorage" not in PAGE_JS
    assert 'if (text[0] === "2") keepToken(text.slice(1));' in PAGE_JS
    # Only the closes the doc calls on purpose stop the page from coming back by itself,
    # after the delays the doc gives.
    assert "const ON_PURPOSE = [1000, 1003, 1009];" in PAGE_JS
    assert "Math.min(MAX_DELAY, 2 ** retries)" in PAGE_JS and "const MAX_DELAY = 30;" in PAGE_JS
    assert "after 1 s, then 2, 4, 8, 16 and 30 s" in DOC.replace("\n", " ")
    assert '"reconnecting… "' in PAGE_JS and "`reconnecting…`" in DOC


def test_the_limits_in_the_doc_are_the_servers() -> None:
    assert web.MAX_FRAME == 64 * 1024 and "**64 KiB**" in DOC and "65536 bytes" in DOC
    assert (web.CLOSE_NORMAL, web.CLOSE_UNSUPPORTED, web.CLOSE_TOO_BIG) == (1000, 1003, 1009)
    assert "(close code 1003)" in DOC and "(code 1009)" in DOC and "code 1000" in DOC
    assert web.CLOSE_RESTART == 1012 and "code **1012**" in DOC.replace("\n", " ")
    assert "1012" not in PAGE_JS  # not a goodbye: the page comes back, as after a drop
    assert web.PING_INTERVAL == 30.0 and "ping every 30 s" in DOC
    assert "clamped to 20–500 columns and 5–200 rows" in DOC.replace("\n", " ").lower()
    from shellserver.terminal.discipline import clamp_size

    assert clamp_size(1, 1) == (20, 5) and clamp_size(10**5, 10**5) == (500, 200)


@pytest.mark.integration
def test_the_documented_client_logs_in_and_runs_a_command(tmp_path: Path) -> None:
    pytest.importorskip("websocket", reason="websocket-client is not installed (selenium's)")
    (code,) = re.findall(r"```python\n(.*?)```", DOC, re.S)
    client = tmp_path / "webclient.py"
    client.write_text(code)
    srv = RealServer(tmp_path, "--web", "tcp:0:interface=127.0.0.1", "--linger", "300").start()
    try:
        alice = register(srv.port, "alice")
        alice.send_line("logout")  # not just closed: that would leave it detached
        assert alice.closed()
        alice.close()
        url = f"ws://127.0.0.1:{srv.web_port}/ws"
        run = subprocess.run(
            [sys.executable, str(client), url, "alice", "correct horse", "who"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert run.stderr == "got a resume token\n"  # kept apart from the output
        lines = run.stdout.splitlines()
        assert lines[0].split()[:2] == ["USER", "TTY"], run.stdout
        assert re.fullmatch(r"alice +web/\d+ .*", lines[1]), run.stdout  # only itself
        assert len(lines) == 2, run.stdout
        # The documented Origin rule: another site's page is refused, this one's let in.
        import websocket

        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, origin="http://evil.example", timeout=10)
        assert refused.value.status_code == 403
        ok = websocket.create_connection(
            url, origin=f"https://127.0.0.1:{srv.web_port}", timeout=10
        )
        greeting = ""
        while "login: " not in greeting:
            greeting += ok.recv()
        ok.close()
        # And a binary frame closes the socket with 1003, as the doc says.
        raw = websocket.create_connection(url, timeout=10)
        raw.send_binary(b"0who\r")
        while True:
            op, data = raw.recv_data(control_frame=True)
            if op == websocket.ABNF.OPCODE_CLOSE:
                break
        assert int.from_bytes(data[:2], "big") == 1003
        raw.close()
    finally:
        srv.stop()


class Socket:
    """A ``/ws?resume`` client as the doc describes it: output and tokens kept apart."""

    def __init__(self, url: str, token: str = "") -> None:
        import websocket

        self.ws = websocket.create_connection(url + "?resume", timeout=10)
        self.ws.send("1" + "120 40")
        self.ws.send("2" + token)
        self.received = ""
        self.tokens: list[str] = []

    def until(self, text: str) -> str:
        while text not in self.received:
            data = self.ws.recv()
            if isinstance(data, bytes):
                assert data[:1] == b"2", data
                self.tokens.append(data[1:].decode())
            else:
                self.received += data
        before, _, self.received = self.received.partition(text)
        return (before + text).replace("\r\n", "\n")

    def send(self, keys: str) -> None:
        self.ws.send("0" + keys)


@pytest.mark.integration
def test_a_dropped_socket_resumes_with_its_token_and_an_old_token_is_refused(
    tmp_path: Path,
) -> None:
    pytest.importorskip("websocket", reason="websocket-client is not installed (selenium's)")
    srv = RealServer(
        tmp_path, "--web", "tcp:0:interface=127.0.0.1", "--linger", "300", runner="twist-json"
    ).start()
    try:
        bob = register(srv.port, "bob")
        register(srv.port, "alice").send_line("logout")
        url = f"ws://127.0.0.1:{srv.web_port}/ws"
        page = Socket(url)
        page.until("login: ")
        page.send("alice\r")
        page.until("Password: ")
        page.send("correct horse\r")
        page.until("alice@testhost:~$ ")
        page.send("echo half")
        page.until("echo half")
        (token,) = page.tokens  # given with the login, before anything was typed
        page.ws.sock.close()  # the socket drops: no close frame, no logout
        deadline = time.monotonic() + 10
        while True:
            bob.send_line("who")
            if "(detached)" in bob.expect("bob@testhost:~$ "):
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        bob.send_line("write alice sent while you were away")
        bob.expect("bob@testhost:~$ ")
        again = Socket(url, token)
        shown = again.until("alice@testhost:~$ echo half")
        assert "login:" not in shown and "Password" not in shown and "Resume" not in shown
        assert "--- 1 message while you were away ---\n" in shown
        assert "sent while you were away" in shown
        again.send("\x15who\r")  # ^U, then who: the same web tty, attached again
        again.until("who\r\n")
        listing = again.until("alice@testhost:~$ ")
        assert re.search(r"alice +web/\d+ ", listing) and "(detached)" not in listing
        (new,) = again.tokens
        assert new != token
        # The old token, replayed from elsewhere: refused, the login asked, logged.
        thief = Socket(url, token)
        thief.until("login: ")
        assert thief.tokens == [] and "alice@testhost" not in thief.received
        thief.ws.close()
        again.send("logout\r")
        again.until("logout")
        bob.send_line("logout")
        deadline = time.monotonic() + 10
        while not (refusals := [e for e in srv.events() if e.get("event") == "resume_refused"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (refused,) = refusals
        assert refused["peer"] == "127.0.0.1" and refused["count"] == 1
        log = srv.log.read_text()  # every field of every event, as written
        assert token not in log and new not in log  # no token is ever logged
        assert any(e.get("event") == "resume" and e.get("via") == "token" for e in srv.events())
    finally:
        srv.stop()


@pytest.mark.integration
def test_after_shellserver_restart_the_token_resumes_on_the_next_start(tmp_path: Path) -> None:
    """The restart closes the socket with 1012 (come back), parks the token's digest with the
    session, and the server started again resumes the session for that token."""
    pytest.importorskip("websocket", reason="websocket-client is not installed (selenium's)")
    import websocket
    from test_ssh_integration import CLI

    data = tmp_path / "data"

    def start(name: str) -> RealServer:
        (tmp_path / name).mkdir()
        srv = RealServer(
            tmp_path / name, "--data", str(data), "--linger", "300",
            "--web", "tcp:0:interface=127.0.0.1",
        )  # fmt: skip
        srv.data = data
        return srv.start()

    first = start("first")
    try:
        alice = register(first.port, "alice")
        alice.send_line("logout")
        assert alice.closed()
        page = Socket(f"ws://127.0.0.1:{first.web_port}/ws")
        page.until("login: ")
        page.send("alice\r")
        page.until("Password: ")
        page.send("correct horse\r")
        page.until("alice@testhost:~$ ")
        page.send("echo kept")
        page.until("echo kept")
        (token,) = page.tokens
        run = subprocess.run(
            [CLI, "--data", str(data), "restart"], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        page.until("The server is restarting; reconnect to resume this session.")
        while True:
            opcode, payload = page.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
        assert int.from_bytes(payload[:2], "big") == 1012
        assert first.proc is not None and first.proc.wait(20) == 0
    finally:
        first.stop()
    second = start("second")
    try:
        deadline = time.monotonic() + 10
        while "detached again, resumable" not in second.log_text():
            assert time.monotonic() < deadline, second.log_text()
            time.sleep(0.05)
        back = Socket(f"ws://127.0.0.1:{second.web_port}/ws", token)
        shown = back.until("alice@testhost:~$ echo kept")
        assert "login:" not in shown and "Resume" not in shown
        back.send("\x15logout\r")
        back.until("logout")
    finally:
        second.stop()
