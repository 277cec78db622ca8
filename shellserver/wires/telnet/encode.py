"""The one place where text becomes bytes for a terminal.

Everything above the protocol layer works on ``str``; everything that leaves
the server goes through :func:`encode`. A broadcast is encoded once and the
same bytes are written to every session.
"""

from __future__ import annotations


def encode(text: str) -> bytes:
    """UTF-8 with CR LF line ends, invalid input bytes restored, IAC doubled.

    Input lines are decoded with ``surrogateescape``, so text that echoes a
    user's invalid bytes can carry them back out; a lone 0xFF among them would
    otherwise read as a telnet IAC.
    """
    data = text.replace("\n", "\r\n").encode("utf-8", "surrogateescape")
    if b"\xff" in data:
        data = data.replace(b"\xff", b"\xff\xff")
    return data


def decode(data: bytes) -> str:
    """Input bytes to text, keeping invalid bytes as lone surrogates for the sanitiser."""
    return data.decode("utf-8", "surrogateescape")
