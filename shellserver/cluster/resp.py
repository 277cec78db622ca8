"""RESP2, the Redis wire format: commands to bytes, and a reader that turns received bytes
into replies.

The reader parses everything a read brought in one call, however many replies that is (a
burst of pub/sub messages, a pipeline of answers), and keeps only an unfinished tail for the
next read. txredisapi's parser, which the cluster used before, stopped after each bulk string
with data behind it and went on in a later reactor turn (pausing and resuming the socket in
between), which cost a node about half its CPU per message received (docs/scaling.md,
"Redis client library").

Reply types, decided here, without guessing from the content: bulk strings are ``bytes``,
status replies (``+OK``) ``str``, integers ``int``, nil (``$-1``, ``*-1``) ``None``, arrays
``list`` (nested as sent), error replies :class:`RedisReplyError` *values* (the link raises
the top-level ones; one inside an array, from ``EXEC`` or a script, stays an element).
``hiredis.Reader`` would be faster still but gives status replies as ``bytes``, the same as
bulk strings.
"""

from __future__ import annotations

from typing import Any

Arg = str | bytes | int

_CRLF = b"\r\n"
_BULK, _ARRAY, _STATUS, _INT, _ERROR = b"$*+:-"  # the type bytes, as ints


class RedisReplyError(Exception):
    """Redis answered with an error: a wrong command or script, not an outage."""


class ProtocolError(Exception):
    """What Redis sent is not RESP2: the connection cannot be trusted any more."""


def encode(args: tuple[Arg, ...]) -> bytes:
    """One command as RESP: an array of bulk strings. ``str`` is sent as UTF-8, ``int`` in
    decimal; anything else is a caller's mistake (TypeError), never sent as its repr."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            raise TypeError(f"Redis arguments are str, bytes or int, not {type(arg).__name__}")
        parts += (b"$%d\r\n" % len(data), data, _CRLF)
    return b"".join(parts)


def _number(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"not a number: {line[:40]!r}") from None


class Reader:
    """Replies out of a byte stream, in order: :meth:`feed` returns every reply completed by
    the bytes given. Linear in the bytes received: an array split across reads keeps the
    elements parsed so far (``_stack``), and a long bulk string is not looked at again until
    all of it is there (``_wanted``)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []  # received, not parsed yet
        self._have = 0  # their total length
        self._wanted = 0  # no reply can complete before _have reaches this
        #: arrays being filled, outermost first: [elements so far, elements expected]
        self._stack: list[tuple[list[Any], int]] = []

    def feed(self, data: bytes) -> list[Any]:
        """The replies that ``data`` completes (none, one or many). Raises ProtocolError on
        bytes that are not RESP2; the reader is then unusable, like the connection."""
        if data:
            self._chunks.append(data)
            self._have += len(data)
        if self._have < self._wanted or not self._have:
            return []
        chunks = self._chunks
        buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        replies: list[Any] = []
        pos = self._parse(buf, replies)
        rest = buf[pos:]
        self._chunks = [rest] if rest else []
        self._have = len(rest)
        self._wanted -= pos
        return replies

    def _parse(self, buf: bytes, replies: list[Any]) -> int:
        """Parse ``buf`` from the start; returns where the unfinished tail begins, with
        ``_wanted`` set (relative to ``buf``) to the length it needs to make progress."""
        stack = self._stack
        size = len(buf)
        pos = 0
        value: Any
        while True:
            end = buf.find(_CRLF, pos)
            if end < 0:
                self._wanted = size + 1
                return pos
            kind = buf[pos]
            if kind == _BULK:
                length = _number(buf[pos + 1 : end])
                if length < 0:
                    value = None
                    pos = end + 2
                else:
                    start = end + 2
                    stop = start + length
                    if stop + 2 > size:
                        self._wanted = stop + 2
                        return pos
                    if buf[stop : stop + 2] != _CRLF:
                        raise ProtocolError("a bulk string longer than its length")
                    value = buf[start:stop]
                    pos = stop + 2
            elif kind == _ARRAY:
                count = _number(buf[pos + 1 : end])
                pos = end + 2
                if count > 0:
                    stack.append(([], count))
                    continue
                value = None if count < 0 else []
            elif kind == _STATUS:
                value = buf[pos + 1 : end].decode("utf-8", "replace")
                pos = end + 2
            elif kind == _INT:
                value = _number(buf[pos + 1 : end])
                pos = end + 2
            elif kind == _ERROR:
                value = RedisReplyError(buf[pos + 1 : end].decode("utf-8", "replace"))
                pos = end + 2
            else:
                raise ProtocolError(f"unknown reply type: {buf[pos : pos + 40]!r}")
            # the value completes an element, which may complete arrays around it
            while stack:
                items, count = stack[-1]
                items.append(value)
                if len(items) < count:
                    break
                stack.pop()
                value = items
            else:
                replies.append(value)
