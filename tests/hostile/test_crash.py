"""kill -9 in the middle of registrations, password changes and file writes: after a restart every
acknowledged change is there, the store is intact, and no file in a home is half-written."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from realserver import PASSWORD, RealServer, sign_in, sign_up

from hostile.arena import Peer

pytestmark = pytest.mark.integration


def _content(writer: int, n: int) -> bytes:
    """A file body big enough that a torn write would show: 3,000 bytes naming its write."""
    return (f"w{writer}-n{n}:" * 400)[:3000].encode()


class Stream:
    """One client doing one kind of change in a loop, remembering what was acknowledged."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self.acked: list[object] = []
        self.pending: object = None
        self.error: BaseException | None = None

    def connect(self) -> Peer:
        return Peer(self.port, self.source, timeout=5)


def _register_loop(s: Stream, stop: threading.Event) -> None:
    n = 0
    try:
        while not stop.is_set():
            name = f"reg{n}"
            s.pending = name
            c = sign_up(s.connect(), name, PASSWORD)
            s.acked.append(name)
            c.send_line("exit")
            c.close()
            n += 1
    except (AssertionError, OSError) as e:
        s.error = e


def _login(s: Stream, name: str, password: str) -> Peer:
    return sign_in(s.connect(), name, password)


def _passwd_loop(s: Stream, stop: threading.Event) -> None:
    current = PASSWORD
    try:
        c = _login(s, "changer", current)
        n = 0
        while not stop.is_set():
            new = f"password-{n:05d}"
            s.pending = new
            c.send_line("passwd")
            c.expect("password: ")  # (current) password:
            c.send_line(current)
            c.expect("password: ")
            c.send_line(new)
            c.expect("password: ")
            c.send_line(new)
            c.expect("successfully")
            s.acked.append(new)
            current = new
            c.expect("changer@testhost:~$ ")
            n += 1
    except (AssertionError, OSError) as e:
        s.error = e


def _write_loop(s: Stream, writer: int, stop: threading.Event) -> None:
    try:
        c = _login(s, f"writer{writer}", PASSWORD)
        n = 0
        while not stop.is_set():
            s.pending = (n % 3, n)
            c.send_line(f"echo {_content(writer, n).decode()} > f{n % 3}")
            c.expect(f"writer{writer}@testhost:~$ ")
            s.acked.append((n % 3, n))
            n += 1
    except (AssertionError, OSError) as e:
        s.error = e


def _setup(server: RealServer) -> None:
    for name in ["changer", "writer0", "writer1"]:
        sign_up(Peer(server.port), name, PASSWORD).close()


def test_kill_9_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    args = ("--max-registrations", "0", "--cmd-rate", "0")
    server = RealServer(tmp_path, *args).start()
    _setup(server)
    stop = threading.Event()
    reg, pw = Stream(server.port, "127.0.9.1"), Stream(server.port, "127.0.9.2")
    writers = [Stream(server.port, f"127.0.9.{3 + i}") for i in range(2)]
    threads = [
        threading.Thread(target=_register_loop, args=(reg, stop)),
        threading.Thread(target=_passwd_loop, args=(pw, stop)),
        *(threading.Thread(target=_write_loop, args=(w, i, stop)) for i, w in enumerate(writers)),
    ]
    for t in threads:
        t.start()
    time.sleep(1.5)
    assert server.proc is not None
    server.proc.kill()  # SIGKILL mid-stream
    server.proc.wait(5)
    stop.set()
    for t in threads:
        t.join(10)
    assert reg.acked and pw.acked and all(w.acked for w in writers)

    db = sqlite3.connect(str(server.data / "accounts.sqlite3"))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

    server.log.rename(tmp_path / "killed.log")  # the new one must announce its own port
    restarted = RealServer(tmp_path, *args).start()
    try:
        check = Stream(restarted.port, "127.0.9.9")
        for name in reg.acked:
            _login(check, str(name), PASSWORD).close()
        last = str(pw.acked[-1])
        candidates = [last] if pw.pending == last else [last, str(pw.pending)]
        assert any(_try_login(check, "changer", p) for p in candidates)
        for i, w in enumerate(writers):
            home = restarted.data / "home" / f"writer{i}"
            final: dict[int, int] = {}
            for slot, n in w.acked:  # type: ignore[misc]
                final[slot] = n
            for slot, n in final.items():
                body = (home / f"f{slot}").read_bytes()
                allowed = {_content(i, n) + b"\n"}
                if isinstance(w.pending, tuple) and w.pending[0] == slot:
                    allowed.add(_content(i, w.pending[1]) + b"\n")
                assert body in allowed, (slot, body[:40])
        for path in (restarted.data / "home").rglob("*"):
            if path.is_file() and path.stat().st_size:
                body = path.read_bytes()
                head = body.split(b":", 1)[0].decode()
                writer, n = head[1:].split("-n")
                assert body == _content(int(writer), int(n)) + b"\n", path  # whole, or absent
    finally:
        restarted.stop()


def _try_login(s: Stream, name: str, password: str) -> bool:
    try:
        _login(s, name, password).close()
        return True
    except AssertionError:
        return False
