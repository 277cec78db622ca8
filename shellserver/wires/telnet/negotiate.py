"""Telnet option negotiation: a small RFC 1143 table that never waits for answers.

Twisted's own negotiation (``conch.telnet``) waits for answers and raises
``AlreadyNegotiating``; ``nc`` never answers at all. So the table here asks
and carries on: an answer, when one comes, only updates it. RFC 1143's queue
bit keeps a late answer to an old request from being taken for the answer to
a newer one, and answering only changes of state means two peers can never
loop sending the same request back and forth.

This module knows no transport and no parser: it takes the commands the
parser read and returns the bytes to send back.
"""

from __future__ import annotations

from typing import ClassVar

from shellserver.wires.telnet.codes import (
    BINARY,
    DO,
    DONT,
    ECHO,
    IAC,
    NAWS,
    SB,
    SE,
    SGA,
    TTYPE,
    TTYPE_SEND,
    WILL,
    WONT,
    iac,
)

# Option states (RFC 1143); the _OPP states carry the queue bit "opposite".
NO, YES, WANTNO, WANTYES, WANTNO_OPP, WANTYES_OPP = 0, 1, 2, 3, 4, 5
_BASE = {WANTNO_OPP: WANTNO, WANTYES_OPP: WANTYES}
#: Our own request (RFC 1143 section 7): (state, enable) -> (new state, send it now?).
#: Pairs not listed change nothing (already there, or already asked).
_REQUEST = {
    (NO, True): (WANTYES, True),
    (WANTNO, True): (WANTNO_OPP, False),
    (WANTYES_OPP, True): (WANTYES, False),
    (YES, False): (WANTNO, True),
    (WANTYES, False): (WANTYES_OPP, False),
    (WANTNO_OPP, False): (WANTNO, False),
}
#: What is offered at connect, in this order: (at our end?, option). Echo and SGA at our
#: end put telnet(1) in character mode; SGA, binary, window size and terminal type at
#: the client's end are what the editor and 8-bit text need. Nothing waits for answers.
OFFERS: tuple[tuple[bool, int], ...] = ((True, ECHO), (True, SGA), (False, SGA))
OFFERS += ((True, BINARY), (False, BINARY), (False, NAWS), (False, TTYPE))
_TTYPE_SEND = bytes((IAC, SB, TTYPE, TTYPE_SEND, IAC, SE))


def _get(bits: int, opt: int) -> int:
    return (bits >> (3 * opt)) & 7


def _put(bits: int, opt: int, state: int) -> int:
    shift = 3 * opt
    return (bits & ~(7 << shift)) | (state << shift)


class Negotiator:
    """Both sides' option states for one connection, and the answers they call for.

    The states are packed 3 bits per option in one int per side: a dict per
    side cost 224 bytes per connection for the handful of options a client
    ever names, and every connection keeps its table for life. Options never
    named read as NO.
    """

    __slots__ = ("_him", "_negotiating", "_ttype_asked", "_us")

    #: Options we agree to turn on at our end when asked (DO).
    accept_us: ClassVar[frozenset[int]] = frozenset({SGA, ECHO, BINARY})
    #: Options we let the peer turn on (WILL).
    accept_him: ClassVar[frozenset[int]] = frozenset({NAWS, TTYPE, SGA, BINARY})

    def __init__(self) -> None:
        self._us = 0
        self._him = 0
        #: Has the client ever negotiated? Until it does, nothing is queued (see request).
        self._negotiating = False
        #: TTYPE SEND goes out once a connection: a WILL/WONT TTYPE storm gets no SB storm back.
        self._ttype_asked = False

    def offers(self) -> bytes:
        """The requests to send at connect, all at once: a client that never answers
        (``nc``) must not be left waiting, and one that does answers them all in one go."""
        out = b""
        for ours, opt in OFFERS:
            out += self.request(opt, True, ours)
        return out

    def state(self, opt: int, ours: bool = True) -> int:
        """NO, YES, WANTNO or WANTYES (a queued reversal is not shown): what callers
        decide on (character mode, tests) without knowing RFC 1143's queue bit."""
        state = _get(self._us if ours else self._him, opt)
        return _BASE.get(state, state)

    def _set(self, opt: int, ours: bool, state: int) -> None:
        if ours:
            self._us = _put(self._us, opt, state)
        else:
            self._him = _put(self._him, opt, state)

    def received(self, cmd: int, opt: int) -> bytes:
        """The answer to the client's WILL, WONT, DO or DONT ``opt`` (often nothing).

        A request is answered only when it changes a state, so a client that
        repeats itself gets no echo of it and two peers cannot loop. When the
        client agrees to send its terminal type we ask for it, once a connection.
        """
        self._negotiating = True
        if cmd == WILL:
            before = _get(self._him, TTYPE)
            out = self._peer_enables(opt, False, opt in self.accept_him)
            if (
                opt == TTYPE
                and before != YES
                and _get(self._him, TTYPE) == YES
                and not self._ttype_asked
            ):
                self._ttype_asked = True
                out += _TTYPE_SEND
            return out
        if cmd == WONT:
            return self._peer_disables(opt, False)
        if cmd == DO:
            return self._peer_enables(opt, True, opt in self.accept_us)
        return self._peer_disables(opt, True)

    def request(self, opt: int, enable: bool, ours: bool) -> bytes:
        """Ask for a change and carry on: the bytes to send now (maybe none).

        A request made while an earlier one is unanswered is queued (RFC 1143),
        so the late answer to the first is never mistaken for the second's.
        A client that has never negotiated (``nc``) is not expected to answer
        at all: it gets each request at once, so the echo a hidden password
        prompt needs is asked for every time and nothing is left waiting for
        an answer that will not come.
        """
        bits = self._us if ours else self._him
        state = _get(bits, opt)
        if not self._negotiating and state in (WANTYES, WANTNO):
            state = YES if state == WANTYES else NO
        step = _REQUEST.get((state, enable))
        if step is None:
            return b""
        new, send = step
        self._set(opt, ours, new)
        if not send:
            return b""
        if ours:
            return iac(WILL if enable else WONT, opt)
        return iac(DO if enable else DONT, opt)

    def _peer_enables(self, opt: int, ours: bool, acceptable: bool) -> bytes:
        yes, no = (WILL, WONT) if ours else (DO, DONT)
        state = _get(self._us if ours else self._him, opt)
        if state == NO:
            if acceptable:
                self._set(opt, ours, YES)
                return iac(yes, opt)
            return iac(no, opt)
        if state in (WANTNO, WANTYES):
            # WANTNO answered with a yes is a broken peer (RFC 1143 says NO);
            # WANTYES: our request was granted.
            self._set(opt, ours, NO if state == WANTNO else YES)
        elif state == WANTNO_OPP:
            self._set(opt, ours, YES)
        elif state == WANTYES_OPP:
            # Granted, but we have since changed our mind: ask to turn it off.
            self._set(opt, ours, WANTNO)
            return iac(no, opt)
        return b""

    def _peer_disables(self, opt: int, ours: bool) -> bytes:
        yes, no = (WILL, WONT) if ours else (DO, DONT)
        state = _get(self._us if ours else self._him, opt)
        if state == YES:
            self._set(opt, ours, NO)
            return iac(no, opt)
        if state == WANTNO_OPP:
            # Our "off" was acknowledged, and an "on" waited for that answer.
            self._set(opt, ours, WANTYES)
            return iac(yes, opt)
        self._set(opt, ours, NO)
        return b""
