"""Telnet's numbers: the commands after IAC (RFC 854) and the options we name.

One module of plain constants, so the parser, the negotiator, the protocol and
the tests all spell a byte the same way and none of them imports another just
for its numbers.
"""

from __future__ import annotations

# Commands (RFC 854); EOF, SUSP and ABORT are RFC 1184's, sent by clients for ^D, ^Z, ^C.
SE, NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, SB = range(240, 251)
WILL, WONT, DO, DONT, IAC = 251, 252, 253, 254, 255
EOF, SUSP, ABORT = 236, 237, 238
# Options: binary (856), echo (857), suppress go-ahead (858), terminal type (1091),
# window size (1073), linemode (1184).
BINARY, ECHO, SGA, TTYPE, NAWS, LINEMODE = 0, 1, 3, 24, 31, 34
# Terminal-type subnegotiation: the client says IS <name>, we ask with SEND.
TTYPE_IS, TTYPE_SEND = 0, 1


def iac(cmd: int, opt: int) -> bytes:
    """``IAC cmd opt``: every negotiation we send is one of these three-byte sequences, and
    tests compare the wire with them, so they are built in one place."""
    return bytes((IAC, cmd, opt))
