"""docs/web-protocol.md stays true: its example client works against a real server, the page
still speaks exactly the frames it lists, and the limits it names are the server's."""

from __future__ import annotations

import re
import subprocess
import sys
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
    assert sorted(sent) == ["0", "1"], sent  # keys, the size; nothing else
    table = frame_table()
    assert sorted(table) == ["0", "1"], table
    assert "KEYS" in table["0"] and "COLS ROWS" in table["1"]
    # The size frame is built as the doc says: "1", the columns, one space, the rows.
    assert 'send("1" + term.cols + " " + term.rows)' in PAGE_JS
    assert 'send("0" + data)' in PAGE_JS


def test_the_limits_in_the_doc_are_the_servers() -> None:
    assert web.MAX_FRAME == 64 * 1024 and "**64 KiB**" in DOC and "65536 bytes" in DOC
    assert (web.CLOSE_NORMAL, web.CLOSE_UNSUPPORTED, web.CLOSE_TOO_BIG) == (1000, 1003, 1009)
    assert "(close code 1003)" in DOC and "(code 1009)" in DOC and "(code 1000)" in DOC
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
    srv = RealServer(tmp_path, "--web", "tcp:0:interface=127.0.0.1").start()
    try:
        register(srv.port, "alice").close()
        url = f"ws://127.0.0.1:{srv.web_port}/ws"
        run = subprocess.run(
            [sys.executable, str(client), url, "alice", "correct horse", "who"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
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
