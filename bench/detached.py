"""What a detached session costs, against an idle attached one (``make bench-detached``).

Two runs of a fresh server each, ``N`` accounts:

- *attached*: N telnet sessions (line mode) log in and stay, idle;
- *detached*: N sessions log in and drop their connection at once (no logout), a few at a
  time, so the server holds N detached sessions and almost no connection; then a wall of
  100 bytes reaches every one of them (held, not sent).

The resident memory of the server over its idle start, divided by N, is the cost per
session. A detached session should cost no more than an attached one: it keeps its
session and what it holds, and lets go of its connection, transport buffers and terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BIN, PASSWORD, Server


async def _login(port: int, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readuntil(b"login: ")
    writer.write(name.encode() + b"\r\n")
    await reader.readuntil(b"Password: ")
    writer.write(PASSWORD.encode() + b"\r\n")
    await reader.readuntil(b"$ ")
    return reader, writer


async def _many(port: int, names: list[str], drop: bool, concurrency: int = 50) -> list[object]:
    gate = asyncio.Semaphore(concurrency)
    held: list[object] = []

    async def one(name: str) -> None:
        async with gate:
            reader, writer = await _login(port, name)
            if drop:
                writer.transport.abort()  # gone without a logout: detached
            else:
                held.append((reader, writer))

    await asyncio.gather(*(one(n) for n in names))
    return held


def _pid_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _detached_count(data: Path) -> int:
    done = subprocess.run(
        [str(BIN / "shellserver"), "--data", str(data), "who", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return sum(1 for s in json.loads(done.stdout)["sessions"] if s.get("detached"))


def measure(n: int, detached: bool, workdir: Path, settle: float = 1.0) -> dict[str, float]:
    """One fresh server: its idle RSS, then with ``n`` sessions of the kind asked (each
    reading taken ``settle`` seconds after what it measures, twice that for the attached)."""
    names = [f"u{i}" for i in range(n)]
    server = Server("shellserver", workdir, [*names, "boss"]).start()
    assert server.proc is not None
    try:
        time.sleep(settle)
        base = _pid_rss(server.proc.pid)
        loop = asyncio.new_event_loop()
        held = loop.run_until_complete(_many(server.port, names, detached))
        result = {"base": base}
        if detached:
            deadline = time.monotonic() + 120
            while _detached_count(workdir / "data") < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sessions were not all detached in time")
                time.sleep(min(0.5, settle))
            time.sleep(settle)
            result["rss"] = _pid_rss(server.proc.pid)
            subprocess.run(
                [str(BIN / "shellserver"), "--data", str(workdir / "data"), "wall", "x" * 100],
                capture_output=True,
                timeout=60,
                check=True,
            )
            time.sleep(settle)
            result["rss_held"] = _pid_rss(server.proc.pid)
        else:
            time.sleep(2 * settle)
            result["rss"] = _pid_rss(server.proc.pid)
        for _, writer in held:  # type: ignore[misc]
            writer.close()
        loop.close()
        return result
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Both runs, the table, and whether the detached session is within its target."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000, help="sessions per run [2000]")
    p.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds the server is left before each reading of its memory [1.0]",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-detached-") as tmp:
        attached = measure(args.n, False, Path(tmp) / "attached", args.settle)
        detached = measure(args.n, True, Path(tmp) / "detached", args.settle)
    kib = 1024 * args.n
    a = (attached["rss"] - attached["base"]) / kib
    d = (detached["rss"] - detached["base"]) / kib
    h = (detached["rss_held"] - detached["base"]) / kib
    print(f"{'N':>6} {'attached KiB/session':>22} {'detached':>10} {'detached + wall held':>22}")
    print(f"{args.n:>6} {a:>22.1f} {d:>10.1f} {h:>22.1f}")
    ok = d <= a
    print(f"detached <= attached: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
