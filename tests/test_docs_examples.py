"""The multi-process examples in docs/, pasted into one ``bash`` as a reader would.

The commands are taken from the docs as written; only their ports are moved to free
ones (a machine running the tests may use 2323 or 6379 itself), and they run in a temp
dir, where their relative data dir lands. Each example must start every process it
shows in one shell (two ``twistd`` in one directory once clashed over ``twistd.pid``),
the nodes must serve (a telnet login on each, which sees the other's session), and its
stop line must stop everything it started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from clusternodes import who_rows
from realserver import RawClient
from redisserver import RedisServer, free_port

pytestmark = pytest.mark.integration

DOCS = Path(__file__).parent.parent / "docs"
#: The venv's bin: ``twistd`` and ``shellserver`` as a reader who activated it has them.
BIN = str(Path(sys.executable).parent)
#: Port numbers in a command: ``tcp:2323``, ``--port 6379``, ``redis://127.0.0.1:6379/0``.
_PORT = re.compile(r"(?:tcp:|--port |127\.0\.0\.1:)(\d{4,5})\b")


def sh_blocks(doc: str, section: str) -> list[str]:
    """The ```sh blocks of ``section`` (a ``##`` or ``###`` heading) of docs/``doc``."""
    text = (DOCS / doc).read_text()
    start = text.index(f" {section}\n")
    end = re.compile(r"^#{1,3} ", re.M).search(text, start + len(section) + 2)
    body = text[start : end.start() if end else len(text)]
    return re.findall(r"```sh\n(.*?)```", body, re.S)


def move_ports(script: str, ports: dict[int, int]) -> str:
    """``script`` with each port it names replaced: by ``ports``' choice, else a free one."""
    for port in sorted({int(p) for p in _PORT.findall(script)}):
        ports.setdefault(port, free_port())
    return re.sub(r"\b\d{4,5}\b", lambda m: str(ports.get(int(m[0]), m[0])), script)


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SHELLSERVER_DATA")}
    e["PATH"] = BIN + os.pathsep + e.get("PATH", "")
    return e


@contextmanager
def pasted(start: str, stop: str, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """``start`` pasted into one bash, then (when the block ends) ``stop`` in the same shell.

    The shell waits for a file between the two, so the test can use what ``start`` started;
    whatever is still running afterwards (a failed example) is killed with its process group.
    """
    go_on = cwd / "stop-now"
    script = f"{start}\necho '--started--'\nuntil [ -e {go_on} ]; do sleep 0.1; done\n{stop}\n"
    out = open(cwd / "bash.out", "w")  # noqa: SIM115 - closed below, after the shell
    shell = subprocess.Popen(
        ["bash", "-c", script], cwd=cwd, env=env(), text=True, start_new_session=True,
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "--started--" not in (cwd / "bash.out").read_text():
            assert shell.poll() is None, f"the shell ended:\n{(cwd / 'bash.out').read_text()}"
            assert time.monotonic() < deadline, (cwd / "bash.out").read_text()
            time.sleep(0.1)
        yield shell
        go_on.touch()
        assert shell.wait(60) == 0, (cwd / "bash.out").read_text()
    finally:
        with suppress(ProcessLookupError):  # the shell, or anything the example left behind
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
        out.close()


def admin_password(data: Path, timeout: float = 60.0) -> str:
    path = data / "initial-admin-password"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.1)
    return path.read_text().strip()


def admin_on(port: int, password: str, timeout: float = 30.0) -> RawClient:
    """``admin`` logged in by telnet on ``port`` (the node may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = RawClient(port)
            break
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.2)
    c.expect("login: ", timeout)
    c.send_line("admin")
    c.expect("Password: ")
    c.send_line(password)
    c.expect(":~$ ", timeout)
    return c


def serving_together(
    ports: list[int], password: str, meanwhile: Callable[[], None] = lambda: None
) -> None:
    """An admin logged in on each node; each sees every session, the cluster's ``who``;
    then ``meanwhile()``, before they log out."""
    clients = [admin_on(p, password) for p in ports]
    try:
        deadline = time.monotonic() + 15
        for c in clients:
            while True:
                c.send_line("who")
                rows = who_rows(c.expect(":~$ "))
                if len(rows) == len(ports) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)  # the other node's session reaches this one's mirror
            assert [user for user, _ in rows] == ["admin"] * len(ports), rows
        meanwhile()
    finally:
        for c in clients:
            c.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_the_scaling_quick_start_pasted_into_one_shell(tmp_path: Path) -> None:
    """docs/scaling.md, "Running it": Redis, two nodes, the CLI, then the stop line."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    start, stop = sh_blocks("scaling.md", "Running it")[:2]
    ports: dict[int, int] = {}
    start = move_ports(start, ports)
    stop = move_ports(stop, ports)
    assert len(ports) == 3, ports  # Redis and two telnet listeners, nothing left unmoved
    (data,) = set(re.findall(r"--data (\S+)", start))
    assert not Path(data).is_absolute(), "the example makes its data dir where it is pasted"
    with pasted(start, stop, tmp_path):
        out = (tmp_path / "bash.out").read_text()
        assert "Another twistd server is running" not in out
        assert out.count("is running: pid") == 2, out  # the `until` line saw both nodes
        assert "USER" in out and "TTY" in out, out  # and the CLI's `who` answered
        telnet = [ports[2323], ports[2324]]

        def who_json_of_each_node() -> None:
            """docs/admin.md's `who --json` with `--node`: any node lists the cluster."""
            (said,) = re.findall(
                r"`(shellserver --node a who --json)`", (DOCS / "admin.md").read_text()
            )
            for name in ("a", "b"):
                r = subprocess.run(
                    ["bash", "-c", said.replace("--node a", f"--node {name}")],
                    cwd=tmp_path, env={**env(), "SHELLSERVER_DATA": data},
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert r.returncode == 0, r.stderr
                sessions = json.loads(r.stdout)["sessions"]
                assert sorted(s["node"] for s in sessions) == ["a", "b"], sessions

        serving_together(telnet, admin_password(tmp_path / data), who_json_of_each_node)
    for port in [*telnet, ports[6379]]:
        assert refused(port), f"port {port} still open after the stop line"
    for log in ("node-a.log", "node-b.log"):
        text = (tmp_path / log).read_text()
        assert "Traceback" not in text, text
        assert "Server Shut Down." in text, text


def test_the_admin_guide_nodes_pasted_into_one_shell(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """docs/admin.md, "Several nodes on one data dir": two nodes on the default data dir."""
    (start,) = sh_blocks("admin.md", "Several nodes on one data dir")
    ports = {6379: redis_server.port}
    start = move_ports(start, ports)
    assert len(ports) == 3, ports
    telnet = [p for old, p in ports.items() if old != 6379]
    with pasted(start, "kill $(jobs -p); wait", tmp_path):
        serving_together(telnet, admin_password(tmp_path / "shellserver-data"))
        assert "Another twistd server is running" not in (tmp_path / "bash.out").read_text()
    for port in telnet:
        assert refused(port)
