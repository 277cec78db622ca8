"""RESP2, the Redis wire format, through ``hiredis`` (the Redis project's own parser, in C):
commands to bytes, and a reader that turns received bytes into replies.

The reader parses everything a read brought in one call, however many replies that is (a
burst of pub/sub messages, a pipeline of answers), and keeps only an unfinished tail for the
next read. txredisapi's parser, which the cluster used first, stopped after each bulk string
with data behind it and went on in a later reactor turn (pausing and resuming the socket in
between), which cost a node about half its CPU per message received (docs/scaling.md,
"Redis client library").

Reply types, as hiredis gives them: bulk strings and status replies (``+OK``) are ``bytes``,
integers ``int``, nil (``$-1``, ``*-1``) ``None``, arrays ``list`` (nested as sent), error
replies :class:`RedisReplyError` *values* (the link raises the top-level ones; one inside an
array, from ``EXEC`` or a script, stays an element).
"""

from __future__ import annotations

from typing import Any

import hiredis

Arg = str | bytes | int
_TYPES = (str, bytes, int)
_EXACT = frozenset(_TYPES)


class RedisReplyError(Exception):
    """Redis answered with an error: a wrong command or script, not an outage."""


class ProtocolError(Exception):
    """What Redis sent is not RESP2: the connection cannot be trusted any more."""


def encode(args: tuple[Arg, ...]) -> bytes:
    """One command as RESP: an array of bulk strings. ``str`` is sent as UTF-8, ``int`` in
    decimal; anything else is a caller's mistake (TypeError), never sent as its repr."""
    for arg in args:
        # the exact types first: a set lookup, where ``isinstance`` against a union (built
        # anew on each pass) cost several times the packing itself
        if type(arg) not in _EXACT and (not isinstance(arg, _TYPES) or isinstance(arg, bool)):
            raise TypeError(f"Redis arguments are str, bytes or int, not {type(arg).__name__}")
    # hiredis's stub types the tuple as one element long; it takes any length.
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


class Reader:
    """Replies out of a byte stream, in order: :meth:`feed` returns every reply completed by
    the bytes given (hiredis keeps an unfinished one until the rest is in)."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(protocolError=ProtocolError, replyError=RedisReplyError)

    def feed(self, data: bytes) -> list[Any]:
        """The replies that ``data`` completes (none, one or many). Raises ProtocolError on
        bytes that are not RESP2."""
        reader = self._reader
        reader.feed(data)
        replies: list[Any] = []
        while True:
            reply = reader.gets()
            if reply is False:
                return replies
            replies.append(reply)
