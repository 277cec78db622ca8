"""A message for other terminals, encoded once per kind of wire (the hub carries it)."""

from __future__ import annotations

from collections.abc import Callable


class Message:
    """Text for other terminals. Each kind of wire encodes it once, for all its recipients.

    A wall to 10,000 telnet sessions encodes once: the first telnet recipient
    fills the ``"tel"`` slot and the others reuse it.

    A plain class with slots, not attrs: one is made per ``write`` line, and the
    usual message is encoded for one kind of wire and one lead only, which one
    pair of slots holds; a dict is made for a second encoding only.
    """

    __slots__ = ("_data", "_key", "_more", "_size", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._key: str | None = None  # wire kind + lead of the encoding in _data
        self._data = b""
        self._more: dict[str, bytes] | None = None

    @classmethod
    def of(cls, text: str) -> Message:
        """A message that ends its line, whatever its sender wrote: the prompt redrawn after it
        must start on a fresh line. Notices are written as sentences without one, and text from
        another node is taken as sent, so both come through here."""
        if not text.endswith("\n"):
            text += "\n"
        return cls(text)

    def size(self) -> int:
        """The text's length in UTF-8, worked out once for every recipient that holds it (a
        wall to thousands of detached sessions). Left unset until asked, so a ``write`` line,
        which nobody holds, pays nothing for it."""
        try:
            return self._size
        except AttributeError:
            self._size: int = len(self.text.encode("utf-8", "surrogateescape"))
            return self._size

    def __repr__(self) -> str:
        return f"Message(text={self.text!r})"

    def encoded(self, kind: str, encode: Callable[[str], bytes]) -> bytes:
        """The bytes every recipient on one kind of wire shares (a web frame): the first
        recipient pays for the encoding, the rest of a wall to thousands reuse it."""
        return self.encoded_after(kind, "", encode)

    def encoded_after(self, kind: str, lead: str, encode: Callable[[str], bytes]) -> bytes:
        """``lead`` and the text as one block, encoded once per kind and lead.

        For the few fixed leads a wire uses (a newline, nothing): each recipient
        then costs one write of shared bytes. ``encode`` must encode a
        concatenation as the concatenation of the encodings (``wire.encode`` does).
        """
        key = kind + lead
        if key == self._key:
            return self._data
        if self._key is None:
            self._key = key
            data = self._data = encode(lead + self.text)
            return data
        more = self._more
        if more is None:
            more = self._more = {}
        cached = more.get(key)
        if cached is None:
            cached = more[key] = encode(lead + self.text)
        return cached
