"""The RESP2 encoder and reader (shellserver.hub.cluster.resp, on hiredis), on bytes: every reply
type, replies split anywhere, many replies in one read, long bulk strings, bytes that are not
RESP."""

from __future__ import annotations

from typing import Any

import pytest

from shellserver.hub.cluster.resp import ProtocolError, Reader, RedisReplyError, encode

# One of each, as Redis sends them, and what the reader makes of them.
WIRE: list[tuple[bytes, Any]] = [
    (b"+OK\r\n", b"OK"),
    (b"+PONG\r\n", b"PONG"),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$6\r\n\xff\r\n\x00\r\n\r\n", b"\xff\r\n\x00\r\n"),  # binary, CRLF inside
    (b"$-1\r\n", None),
    (b":42\r\n", 42),
    (b":-7\r\n", -7),
    (b"*0\r\n", []),
    (b"*-1\r\n", None),
    (b"*3\r\n$7\r\nmessage\r\n$4\r\nss:a\r\n$3\r\none\r\n", [b"message", b"ss:a", b"one"]),
    (b"*3\r\n$9\r\nsubscribe\r\n$4\r\nss:a\r\n:1\r\n", [b"subscribe", b"ss:a", 1]),
    (
        b"*4\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n*0\r\n$-1\r\n*2\r\n+ok\r\n*-1\r\n",
        [[1, [b"x"]], [], None, [b"ok", None]],
    ),
]


def same(got: Any, want: Any) -> bool:
    """Equality, with error replies compared by type and text."""
    if isinstance(want, RedisReplyError):
        return isinstance(got, RedisReplyError) and str(got) == str(want)
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(same(g, w) for g, w in zip(got, want, strict=True))
        )
    return type(got) is type(want) and got == want


def test_each_reply_type() -> None:
    for wire, want in WIRE:
        got = Reader().feed(wire)
        assert len(got) == 1 and same(got[0], want), wire


def test_errors_are_values_at_any_depth() -> None:
    got = Reader().feed(b"-ERR unknown command 'NOPE'\r\n*2\r\n:1\r\n-WRONGTYPE no\r\n")
    assert same(got[0], RedisReplyError("ERR unknown command 'NOPE'"))
    assert same(got[1], [1, RedisReplyError("WRONGTYPE no")])


def test_many_replies_in_one_feed() -> None:
    stream = b"".join(wire for wire, _ in WIRE) * 50
    got = Reader().feed(stream)
    assert same(got, [want for _, want in WIRE] * 50)


def test_split_at_every_byte() -> None:
    """Every cut of a stream of every type (nested arrays included) gives the same replies,
    each as soon as its last byte is in."""
    stream = b"".join(wire for wire, _ in WIRE) + b"-ERR x\r\n"
    want = [w for _, w in WIRE] + [RedisReplyError("ERR x")]
    for cut in range(len(stream) + 1):
        reader = Reader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert same(got, want), cut
    reader = Reader()
    got = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
    assert same(got, want)
    assert reader.feed(b"") == []


def test_reply_is_out_as_soon_as_complete() -> None:
    reader = Reader()
    assert reader.feed(b"*2\r\n$3\r\nabc\r\n") == []
    assert reader.feed(b":1\r\n+O") == [[b"abc", 1]]
    assert reader.feed(b"K\r") == []
    assert reader.feed(b"\n") == [b"OK"]


def test_large_bulk_strings() -> None:
    """Longer than a read (64 KiB): whole and binary-safe, however the reads cut it."""
    big = bytes(range(256)) * 1024 + b"\r\n"  # 256 KiB
    stream = b"$%d\r\n%s\r\n" % (len(big), big) + b"*2\r\n$%d\r\n%s\r\n:3\r\n" % (len(big), big)
    assert Reader().feed(stream) == [big, [big, 3]]
    reader = Reader()
    got = []
    for i in range(0, len(stream), 4096):
        got += reader.feed(stream[i : i + 4096])
    assert got == [big, [big, 3]]


@pytest.mark.parametrize(
    "wire",
    [
        b"?what\r\n",
        b"$abc\r\nxyz\r\n",
        b":12x\r\n",
        b"*z\r\n",
        b"$3\r\nabcd\r\n",  # longer than it says
    ],
)
def test_not_resp(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        Reader().feed(wire)


def test_encode() -> None:
    assert encode(("SET", "kë", b"\xff\r\n", 42, -1)) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\xc3\xab\r\n$3\r\n\xff\r\n\r\n$2\r\n42\r\n$2\r\n-1\r\n"
    )
    assert encode(("PING",)) == b"*1\r\n$4\r\nPING\r\n"
    assert encode(("SET", "", b"")) == b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n"


@pytest.mark.parametrize("bad", [1.5, None, ["x"], bytearray(b"x"), True])
def test_encode_refuses_other_types(bad: Any) -> None:
    with pytest.raises(TypeError, match="str, bytes or int"):
        encode(("SET", "k", bad))


def test_round_trip_through_the_reader() -> None:
    """What encode sends is RESP too: an array of bulk strings."""
    args = ("EVALSHA", "abc", 2, b"\x00\r\n", "ü")
    assert Reader().feed(encode(args)) == [[b"EVALSHA", b"abc", b"2", b"\x00\r\n", "ü".encode()]]
