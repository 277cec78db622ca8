"""The real server as users meet it: ``twistd -n shellserver`` in a subprocess, on loopback."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

from twisted.logger import eventFromJSON, formatEvent

_LISTENING = re.compile(r"telnet listening on .*port=(\d+)")
_METRICS = re.compile(r"metrics listening on .*port=(\d+)")
_WEB = re.compile(r"web listening on .*port=(\d+)")
_IAC_SEQ = re.compile(rb"\xff[\xfb-\xfe].|\xff[\xf0-\xfa]", re.S)
TWISTD = str(Path(sys.executable).with_name("twistd"))
TWIST = str(Path(sys.executable).with_name("twist"))


class RealServer:
    def __init__(
        self, workdir: Path, *args: str, runner: str = "twistd", fd_limit: int = 0
    ) -> None:
        self.runner = runner
        #: RLIMIT_NOFILE (soft and hard) for the server process; 0 leaves it as it is.
        self.fd_limit = fd_limit
        self.workdir = workdir
        self.data = workdir / "data"
        self.log = workdir / "twistd.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        #: The --metrics port, when the server was started with one.
        self.metrics_port = 0
        #: The first --web port, when the server was started with one.
        self.web_port = 0

    def start(self, timeout: float = 20.0) -> RealServer:
        if self.runner in ("twist", "twist-json"):
            form = "json" if self.runner == "twist-json" else "text"
            prefix = [TWIST, "--log-file", str(self.log), "--log-format", form]
        else:
            prefix = [TWISTD, "-n", "--pidfile=", "--logfile", str(self.log)]
        cmd = [
            *prefix, "shellserver",
            "--telnet", "tcp:0:interface=127.0.0.1", "--data", str(self.data),
            "--hostname", "testhost", "--hash-cost", "4", "--linger", "0", *self.args,
        ]  # fmt: skip
        limit = self.fd_limit

        def lower_fd_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lower_fd_limit if limit else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists():
                text = self.log_text()
                m = _LISTENING.search(text)
                if m:
                    self.port = int(m.group(1))
                    metrics = _METRICS.search(text)
                    self.metrics_port = int(metrics.group(1)) if metrics else 0
                    web = _WEB.search(text)
                    self.web_port = int(web.group(1)) if web else 0
                    # Each listener logs its own line: wait for every one asked for.
                    if (web or "--web" not in self.args) and (
                        metrics or "--metrics" not in self.args
                    ):
                        return self
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {out}")
            # Every integration test waits here, some several times: a short poll (reading a
            # log of a few lines) is found listening 20 ms sooner on average than a 50 ms one.
            time.sleep(0.01)
        self.stop()
        raise RuntimeError("server did not start listening in time")

    def rss(self) -> int:
        """The server process's resident memory in bytes (VmRSS from /proc)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def listening(self, what: str) -> list[int]:
        """The ports the ``what`` listeners (telnet, ssh, …) bound, in the order given."""
        pattern = re.compile(rf"{what} listening on .*port=(\d+)")
        return [int(m.group(1)) for m in pattern.finditer(self.log_text())]

    def admin_password(self) -> str:
        return (self.data / "initial-admin-password").read_text().strip()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def log_text(self) -> str:
        """The log as text (a JSON log's events formatted, one per line)."""
        if not self.log.exists():
            return ""
        if self.runner != "twist-json":
            return self.log.read_text()
        return "\n".join(formatEvent(eventFromJSON(e)) for e in self.json_lines())

    def json_lines(self) -> list[str]:
        """A ``--log-format json`` log's records (RFC 7464: each starts with RS, ends a line)."""
        complete = self.log.read_text().split("\n")[:-1]  # the last may be half-written
        return [line.lstrip("\x1e") for line in complete if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        """Each line of a JSON log parsed with json.loads, as a log shipper would."""
        return [json.loads(line) for line in self.json_lines()]


class RawClient:
    """A client that never answers negotiation, like nc."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buffer = b""
        self.raw_seen = b""

    def send_line(self, text: str, end: bytes = b"\r\n") -> None:
        self.sock.sendall(text.encode() + end)

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def expect(self, text: str, timeout: float = 10.0) -> str:
        """Read until ``text`` shows; return everything up to and including it."""
        want = text.replace("\n", "\r\n").encode()
        deadline = time.monotonic() + timeout
        while want not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"did not see {text!r}; got {self.buffer!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"connection closed before {text!r}; got {self.buffer!r}")
            self.raw_seen += chunk
            self.buffer += _IAC_SEQ.sub(b"", chunk)
        i = self.buffer.index(want) + len(want)
        seen, self.buffer = self.buffer[:i], self.buffer[i:]
        return seen.decode("utf-8", "replace").replace("\r\n", "\n")

    def closed(self, timeout: float = 10.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += _IAC_SEQ.sub(b"", chunk)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


#: The password the real-server tests give the accounts they register.
PASSWORD = "correct horse"
Client = TypeVar("Client", bound=RawClient)


def sign_in(c: Client, name: str, password: str) -> Client:
    """Log a fresh connection in: from the greeting to the user's prompt."""
    c.expect("login: ")
    c.send_line(name)
    c.expect("Password: ")
    c.send_line(password)
    c.expect(f"{name}@testhost:~$ ")
    return c


def sign_up(c: Client, name: str, password: str = PASSWORD) -> Client:
    """Register ``name`` on a fresh connection (``new`` at the greeting); ends at its prompt."""
    c.expect("login: ")
    for line, prompt in [
        ("new", "Username: "),
        (name, "Password: "),
        (password, "Password again: "),
        (password, f"{name}@testhost:~$ "),
    ]:
        c.send_line(line)
        c.expect(prompt)
    return c


def login(port: int, name: str, password: str) -> RawClient:
    """A raw client logged in at its prompt."""
    return sign_in(RawClient(port), name, password)


def register(port: int, name: str, password: str = PASSWORD) -> RawClient:
    """A raw client that registered ``name`` and sits at its prompt."""
    return sign_up(RawClient(port), name, password)


def have_telnet() -> str | None:
    return shutil.which("telnet")


def env_without_venv_leaks() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
