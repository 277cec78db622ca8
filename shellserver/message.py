"""A message for other terminals, encoded once per kind of wire (``hub.py`` carries it)."""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field


@define(eq=False)
class Message:
    """Text for other terminals. Each kind of wire encodes it once, for all its recipients.

    A wall to 10,000 telnet sessions encodes once: the first telnet recipient
    fills the ``"tel"`` slot and the others reuse it.
    """

    text: str
    _encoded: dict[str, bytes] = field(factory=dict, repr=False)

    @classmethod
    def of(cls, text: str) -> Message:
        if not text.endswith("\n"):
            text += "\n"
        return cls(text)

    def encoded(self, kind: str, encode: Callable[[str], bytes]) -> bytes:
        data = self._encoded.get(kind)
        if data is None:
            data = self._encoded[kind] = encode(self.text)
        return data

    def encoded_after(self, kind: str, lead: str, encode: Callable[[str], bytes]) -> bytes:
        """``lead`` and the text as one block, encoded once per kind and lead.

        For the few fixed leads a wire uses (a newline, nothing): each recipient
        then costs one write of shared bytes. ``encode`` must encode a
        concatenation as the concatenation of the encodings (``wire.encode`` does).
        """
        key = kind + lead
        data = self._encoded.get(key)
        if data is None:
            data = self._encoded[key] = encode(lead + self.text)
        return data
