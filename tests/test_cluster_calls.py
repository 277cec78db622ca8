"""The events the cluster's nodes send each other: the hand-built ``dlv`` event is the
same JSON as the general encoder's, for every text a message can carry."""

from __future__ import annotations

import json

import pytest

from shellserver.hub.cluster.calls import dump, dump_deliver

TEXTS = [
    "Message from ann@host on tel/3 at 12:00 ...\nhello\nEOF\n",
    "",
    'quotes " and \\ backslashes \\" and / slashes',
    "control \x00 \x01 \x1b[31m \x7f \t \r\n",
    "unicode: é ß 漢字 \u2028 \u2029 🎉",
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("sender", ["ann", None, 'a"b', "é"])
def test_deliver_event_is_the_general_encoding(text: str, sender: str | None) -> None:
    fast = dump_deliver(42, text, sender)
    assert fast == dump({"op": "dlv", "i": 42, "t": text, "s": sender})
    assert json.loads(fast) == {"op": "dlv", "i": 42, "t": text, "s": sender}


def test_a_text_that_is_not_unicode_fails_both_alike() -> None:
    """A lone surrogate cannot be UTF-8: both encoders refuse it the same way."""
    with pytest.raises(UnicodeEncodeError):
        dump({"op": "dlv", "i": 1, "t": "\udc80", "s": None})
    with pytest.raises(UnicodeEncodeError):
        dump_deliver(1, "\udc80", None)


def test_dump_is_compact_utf8() -> None:
    assert dump({"op": "wall", "n": "a", "t": "é"}) == '{"op":"wall","n":"a","t":"é"}'.encode()
