"""scrypt password hashes that carry their own parameters.

Hashing costs ~50 ms at the default cost with the GIL released, so callers
run it on a thread pool; raising ``--hash-cost`` later leaves old hashes valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets

MIN_COST = 1
MAX_COST = 20
_R, _P, _DKLEN = 8, 1, 32
_FORMAT = re.compile(r"^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9+/]+)$")


def check_cost(cost: int) -> None:
    """One bound for ``--hash-cost``, the CLI and stored hashes: a cost read from a hash must
    not make scrypt allocate without limit (cost 20 is already 1 GiB)."""
    if not MIN_COST <= cost <= MAX_COST:
        raise ValueError(f"hash cost must be {MIN_COST} to {MAX_COST}, not {cost}")


def _b64(data: bytes, urlsafe: bool = False) -> str:
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return enc(data).decode().rstrip("=")


def _unb64(text: str, urlsafe: bool = False) -> bytes:
    dec = base64.urlsafe_b64decode if urlsafe else base64.b64decode
    return dec(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, cost: int, r: int, p: int) -> bytes:
    n = 1 << cost
    return hashlib.scrypt(
        password.encode("utf-8", "surrogateescape"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=_DKLEN,
        maxmem=128 * r * n * 2 + (1 << 20),
    )


def hash_password(password: str, cost: int) -> str:
    """A new hash with its parameters and salt inside, so a later ``--hash-cost`` change leaves
    it valid; slow on purpose, so callers run it on the hashing pool."""
    check_cost(cost)
    salt = os.urandom(16)
    key = _derive(password, salt, cost, _R, _P)
    return f"$scrypt$ln={cost},r={_R},p={_P}${_b64(salt, True)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check; a malformed hash is simply a mismatch."""
    m = _FORMAT.match(stored)
    if m is None:
        return False
    try:
        cost, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
        check_cost(cost)
        if not (1 <= r <= 32 and 1 <= p <= 16):
            return False
        salt, key = _unb64(m.group(4), True), _unb64(m.group(5))
        return hmac.compare_digest(_derive(password, salt, cost, r, p), key)
    except (ValueError, MemoryError):
        return False


def needs_rehash(stored: str, cost: int) -> bool:
    """True when ``stored`` was not made at ``cost`` with our parameters (e.g. ``newusers
    --hash-cost 4``): such a hash verifies faster or slower than the server's own, so it is
    replaced at the next successful login and every account answers in the same time."""
    m = _FORMAT.match(stored)
    if m is None:
        return True
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) != (cost, _R, _P)


#: Hashes needing at most this much scrypt work (n * r * p; cost 5 at r=8, p=1: 32 KiB,
#: ~0.15 ms here) are cheap enough to check on the thread that read them from the store.
CHEAP_WORK = (1 << 5) * 8


def is_cheap(stored: str) -> bool:
    """Is ``stored`` a well-formed hash whose check costs no more than ``CHEAP_WORK``?"""
    m = _FORMAT.match(stored)
    if m is None:
        return False
    cost, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return cost <= MAX_COST and (1 << cost) * r * p <= CHEAP_WORK


def dummy_hash(cost: int) -> str:
    """A real hash of a random secret: unknown users take the same path as known ones."""
    return hash_password(secrets.token_urlsafe(16), cost)
