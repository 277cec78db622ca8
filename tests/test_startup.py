"""Starting the real server: bad options, failed starts, the descriptor limit."""

from __future__ import annotations

import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest
from realserver import TWIST, TWISTD

from shellserver.app.service import default_max_connections

pytestmark = pytest.mark.integration


def start(tmp_path: Path, *args: str, runner: str = TWISTD) -> subprocess.CompletedProcess[str]:
    prefix = [runner, "-n", "--pidfile="] if runner == TWISTD else [runner]
    return subprocess.run(
        [*prefix, "shellserver", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    "runner, name, args, said",
    [
        (TWISTD, "twistd", ["--bad-value"], "option --bad-value not recognized"),
        (TWIST, "twist", ["--bad-value"], "option --bad-value not recognized"),
        (TWISTD, "twistd", ["--telnet", "nonsense:1"], "--telnet: not a listen endpoint"),
        (TWIST, "twist", ["--idle-timeout", "soon"], "--idle-timeout takes a whole number"),
        (TWISTD, "twistd", ["--data"], "option --data requires argument"),
    ],
)  # fmt: skip
def test_a_bad_option_is_one_line_and_exit_1(
    tmp_path: Path, runner: str, name: str, args: list[str], said: str
) -> None:
    r = start(tmp_path, *args, runner=runner)
    assert r.returncode == 1
    assert r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.startswith(f"{name} shellserver: {said}")
    assert line.endswith(f"(see '{name} shellserver --help')")
    assert not (tmp_path / "shellserver-data").exists()


def test_a_port_in_use_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = start(tmp_path, "--telnet", f"tcp:{port}:interface=127.0.0.1", "--data", "data")
    assert r.returncode == 1
    [line] = r.stderr.splitlines() or r.stdout.splitlines()
    assert line.startswith(f"shellserver: cannot listen on tcp:{port}:interface=127.0.0.1: ")
    assert not (tmp_path / "data").exists()  # no data dir, no admin, no password file


def test_a_metrics_port_in_use_stops_the_start_too(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = start(
            tmp_path, "--telnet", "tcp:0:interface=127.0.0.1", "--data", "data",
            "--metrics", f"tcp:{port}:interface=127.0.0.1",
        )  # fmt: skip
    assert r.returncode == 1
    [line] = r.stderr.splitlines() or r.stdout.splitlines()
    assert line.startswith(f"shellserver: cannot listen on tcp:{port}:interface=127.0.0.1: ")
    assert not (tmp_path / "data").exists()


def run_with_fd_limit(tmp_path: Path, hard: int, *args: str) -> str:
    """Start the real server under a descriptor hard limit; return its log once it listens."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard))

    log = tmp_path / "twistd.log"
    proc = subprocess.Popen(
        [
            TWISTD, "-n", "--pidfile=", "--logfile", str(log), "shellserver",
            "--telnet", "tcp:0:interface=127.0.0.1", "--data", "data", "--hash-cost", "4", *args,
        ],
        cwd=tmp_path, preexec_fn=limit, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "telnet listening" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(20)
    return log.read_text()


def test_the_default_connection_limit_fits_the_descriptor_hard_limit(tmp_path: Path) -> None:
    text = run_with_fd_limit(tmp_path, 2000)
    assert "accepting at most 1936 connections, as the file descriptor hard limit (2000)" in text
    assert "wanted" not in text and "file descriptor limit is" not in text  # no warning


def test_a_given_connection_limit_that_does_not_fit_is_warned_about(tmp_path: Path) -> None:
    text = run_with_fd_limit(tmp_path, 2000, "--max-connections", "5000")
    assert "the file descriptor limit is 2000 (5064 wanted): accepting at most 1936" in text


def test_default_max_connections() -> None:
    assert default_max_connections(20000, 20000) == 19936
    assert default_max_connections(20000, 1 << 20) == 20000
    assert default_max_connections(20000, resource.RLIM_INFINITY) == 20000
    assert default_max_connections(20000, 10) == 1
