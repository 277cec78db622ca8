"""A bystander in its own process that measures the server's worst round trip during an attack.

The hostile suite's promise is that no single user stalls the others: while an
attack runs, a logged-in session sends ``echo`` every 100 ms and times each answer.
It runs in a child process so that the attacker's own Python (in the test
process) cannot hold the probe back: what it measures is the server.

Run as ``python stallprobe.py PORT NAME PASSWORD``; it prints ``ready`` once
logged in, probes until a line arrives on stdin, then prints the worst round
trip in seconds and the number of probes.
"""

from __future__ import annotations

import select
import socket
import sys
import time

#: 10 a second, the arena's --cmd-rate: a long watch is never throttled by its own bucket.
PERIOD = 0.1


def _read_until(sock: socket.socket, want: bytes, buf: bytearray, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while want not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SystemExit(f"probe: no {want!r} within {timeout} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise SystemExit("probe: connection closed")
        buf += chunk
    del buf[: buf.index(want) + len(want)]


def main() -> None:
    port, name, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    buf = bytearray()
    _read_until(sock, b"login: ", buf, 30)
    sock.sendall(name.encode() + b"\r\n")
    _read_until(sock, b"Password: ", buf, 30)
    sock.sendall(password.encode() + b"\r\n")
    _read_until(sock, b"$ ", buf, 30)
    print("ready", flush=True)
    worst, count = 0.0, 0
    while not select.select([sys.stdin], [], [], 0)[0]:
        mark = f"probe-{count}".encode()
        start = time.perf_counter()
        sock.sendall(b"echo " + mark + b"\r\n")
        _read_until(sock, mark + b"\r\n", buf, 60)
        worst = max(worst, time.perf_counter() - start)
        count += 1
        time.sleep(PERIOD)
    print(f"{worst:.6f} {count}", flush=True)
    sock.close()


if __name__ == "__main__":
    main()
