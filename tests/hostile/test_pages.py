"""Attacks on the personal pages listener (``--pages``): greedy downloaders and path probes,
against the real server, with the bystanders' round trips watched."""

from __future__ import annotations

import contextlib
import socket
import time

from hostile.arena import Arena, arena_with

MB = 1024 * 1024

arena = arena_with("hostile-pages", "--pages", "tcp:0:interface=127.0.0.1")


def _port(arena: Arena) -> int:
    deadline = time.monotonic() + 10
    while not arena.server.listening("pages"):
        assert time.monotonic() < deadline, "no pages listener"
        time.sleep(0.05)
    return arena.server.listening("pages")[0]


def _get(port: int, path: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    return int(top.split(b" ", 2)[1]), body


def test_pipelined_downloads_never_read_hold_one_response_each(arena: Arena) -> None:
    port = _port(arena)
    public = arena.server.data / "home" / "alice" / "public_html"
    public.mkdir(exist_ok=True)
    (public / "big.bin").write_bytes(b"x" * MB)
    (public / "index.html").write_text("<p>hi</p>")
    assert _get(port, "/~alice/big.bin")[0] == 200  # warm the allocator
    before = arena.server.rss()
    request = b"GET /~alice/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
    greedy = []
    with arena.watch():
        for i in range(30):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind((f"127.0.9.{i % 3 + 2}", 0))
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.send(request * 100)
            greedy.append(s)
        time.sleep(2.0)
        start = time.monotonic()
        status, body = _get(port, "/~alice/", source=arena.source())
        assert (status, body) == (200, b"<p>hi</p>")  # a clean address gets its page at once
        assert time.monotonic() - start < 1.0
    grown = arena.server.rss() - before
    print(f"\nRSS grew {grown / MB:.1f} MB for 30 connections x 100 GETs of 1 MiB, never read")
    # Each holds at most one 64 KiB chunk in flight, not 100 MiB of answers.
    assert grown < 30 * MB, f"RSS grew {grown / MB:.0f} MB"
    for s in greedy:
        s.close()
    arena.bystanders_ok()


def test_path_probes_find_nothing_and_cost_the_bystanders_nothing(arena: Arena) -> None:
    port = _port(arena)
    public = arena.server.data / "home" / "bob" / "public_html"
    public.mkdir(exist_ok=True)
    (public / "passwd").symlink_to("/etc/passwd")
    probes = [
        "/~bob/passwd",
        "/~bob/../../../../etc/passwd",
        "/~bob/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/~bob/..%2f..%2f..%2fetc%2fpasswd",
        "/~bob/%00",
        "/~admin/../../store.db",
        "/~bob/" + "a/" * 70,
        "/~bob/" + "x" * 300,
    ]
    source = arena.source()
    with arena.watch():
        for _ in range(25):
            for path in probes:
                status, body = _get(port, path, source)
                assert status == 404 and b"root:" not in body, path
    arena.bystanders_ok()
