"""The second factor's records: a TOTP secret (RFC 6238), its last used time step, and the
hashed single-use recovery codes.

``OtpDB`` is the SQL, run on the store's one database thread (beside the
account store's own ``AccountDB``); ``OtpStore`` is the reactor's face, every
call a Deferred, hashing on the hashing pool. A code is accepted once: the time
step it belongs to must be later than the last one used, and the step is moved
forward by a conditional ``UPDATE`` in the store itself, so two logins with one
code (on one node or on two sharing the store) cannot both pass.
"""

from __future__ import annotations

import enum
import re
import secrets
import sqlite3
from collections.abc import Sequence

import pyotp
from attrs import define, frozen
from pyotp.exceptions import OTPVerificationError
from twisted.internet.defer import Deferred

from shellserver.ops.threads import Runner
from shellserver.store.accounts import AccountDB
from shellserver.store.passwords import hash_password, verify_password

#: Seconds per time step, digits per code: what every authenticator app assumes.
STEP = 30
DIGITS = 6
#: Steps either side of now that are accepted (a phone's clock a little off, a slow typist).
DRIFT = 1
#: Recovery codes printed at ``otp enable``.
RECOVERY_CODES = 10
#: Letters of a recovery code: no 0/o, 1/l/i to misread (32 symbols, 5 bits each).
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_LENGTH = 10
#: Characters of a typed code looked at, at most: anything longer is simply wrong.
MAX_TYPED = 64
#: The scrypt cost of recovery codes at most (n = 1024, a few ms): a typed code is checked
#: against every unused one, and 50 random bits need no slow hash to stand an offline
#: search (2^50 scrypt runs), while ten slow ones per try would let a user keep the hashing
#: pool busy for everyone's logins.
RECOVERY_COST = 10

_TOTP = re.compile(rf"[0-9]{{{DIGITS}}}")
_RECOVERY = re.compile(rf"[{RECOVERY_ALPHABET}]{{{RECOVERY_LENGTH}}}")


class Verdict(enum.Enum):
    """What a typed code turned out to be; every answer but ``OK`` is a failed login."""

    OK = "ok"
    #: A recovery code, now spent.
    RECOVERY = "recovery"
    WRONG = "wrong"
    #: Right, but its time step was used already (or a later one was).
    REPLAYED = "replayed"
    #: The account has no second factor (reset meanwhile).
    NOT_ENABLED = "not enabled"

    @property
    def accepted(self) -> bool:
        """A code that lets the login (or ``otp disable``) through."""
        return self in (Verdict.OK, Verdict.RECOVERY)


@frozen
class OtpStatus:
    """``otp status``: whether a second factor is on, since when, and codes left."""

    enabled: bool
    since: float | None = None
    recovery_left: int = 0


def new_secret() -> str:
    """A 160-bit base32 secret, the size RFC 4226 recommends (pyotp's default)."""
    return pyotp.random_base32()


def time_step(now: float) -> int:
    """The RFC 6238 time step (counter) of ``now``."""
    return int(now) // STEP


def totp(secret: str) -> pyotp.TOTP:
    """The TOTP generator of a secret, with the parameters every app assumes."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP)


def provisioning_uri(secret: str, user: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (from the QR code or typed)."""
    return totp(secret).provisioning_uri(name=user, issuer_name=issuer)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step within :data:`DRIFT` of ``now`` whose code is ``code``, or None (the
    step is what the store remembers, so the same code is not accepted twice)."""
    try:
        step: int = totp(secret).verify_and_get_timecode(code, for_time=now, valid_window=DRIFT)
    except (OTPVerificationError, ValueError):  # ValueError: a clock before the epoch
        return None
    return step


def normal_code(typed: str) -> str:
    """A typed code as compared: spaces and dashes dropped, lower case, bounded."""
    return re.sub(r"[\s-]", "", typed[:MAX_TYPED]).lower()


def is_totp_code(code: str) -> bool:
    """Six digits (after :func:`normal_code`): a code from the app, not a recovery code."""
    return _TOTP.fullmatch(code) is not None


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """Fresh recovery codes as printed (``abcde-fghjk``): 50 random bits each."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def hash_codes(codes: Sequence[str], cost: int) -> list[str]:
    """On the hashing pool: each code hashed like a password, in its normal form."""
    return [hash_password(normal_code(code), cost) for code in codes]


def find_code(code: str, hashes: Sequence[tuple[int, str]]) -> int | None:
    """On the hashing pool: the id of the stored recovery code ``code`` is, or None."""
    for code_id, stored in hashes:
        if verify_password(code, stored):
            return code_id
    return None


class OtpDB:
    """The second factor's SQL on the account store's connection, used by the same one
    thread (the database thread, or the offline CLI)."""

    def __init__(self, db: AccountDB) -> None:
        self.db = db

    def status(self, name: str) -> OtpStatus:
        """Whether ``name`` has a second factor, since when, and recovery codes left."""
        conn = self.db._db
        row = conn.execute("SELECT enabled FROM otp WHERE user=?", (name,)).fetchone()
        if row is None:
            return OtpStatus(False)
        left = conn.execute("SELECT count(*) FROM otp_recovery WHERE user=?", (name,))
        return OtpStatus(True, float(row[0]), int(left.fetchone()[0]))

    def enabled(self, name: str) -> bool:
        """Asked after every right password: one indexed read."""
        row = self.db._db.execute("SELECT 1 FROM otp WHERE user=?", (name,)).fetchone()
        return row is not None

    def enable(self, name: str, secret: str, step: int, hashes: Sequence[str], now: float) -> bool:
        """Store a confirmed secret (``step``: the confirming code's, so it cannot be used
        again at login) and its recovery codes; False when one is there already."""
        with self.db._transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO otp (user, secret, last_step, enabled) VALUES (?,?,?,?)",
                    (name, secret, step, now),
                )
            except sqlite3.IntegrityError:
                return False
            for code_hash in hashes:
                conn.execute(
                    "INSERT INTO otp_recovery (user, code_hash) VALUES (?,?)", (name, code_hash)
                )
        return True

    def check_totp(self, name: str, code: str, now: float) -> Verdict:
        """A six-digit code: right for a step near ``now`` and later than the last used. The
        step moves forward in the same statement that checks it (compare-and-set), so a code
        is accepted once however many logins race with it."""
        row = self.db._db.execute(
            "SELECT secret, last_step FROM otp WHERE user=?", (name,)
        ).fetchone()
        if row is None:
            return Verdict.NOT_ENABLED
        step = matching_step(row[0], code, now)
        if step is None:
            return Verdict.WRONG
        if step <= row[1]:
            return Verdict.REPLAYED
        with self.db._transaction() as conn:
            cur = conn.execute(
                "UPDATE otp SET last_step=? WHERE user=? AND last_step<?", (step, name, step)
            )
        return Verdict.OK if cur.rowcount == 1 else Verdict.REPLAYED

    def recovery_hashes(self, name: str) -> list[tuple[int, str]]:
        """The unused recovery codes' ids and hashes (at most :data:`RECOVERY_CODES`)."""
        rows = self.db._db.execute(
            "SELECT id, code_hash FROM otp_recovery WHERE user=? ORDER BY id LIMIT ?",
            (name, RECOVERY_CODES),
        ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def spend_recovery(self, code_id: int) -> bool:
        """Delete a recovery code; False when another login spent it first."""
        with self.db._transaction() as conn:
            cur = conn.execute("DELETE FROM otp_recovery WHERE id=?", (code_id,))
        return cur.rowcount == 1

    def disable(self, name: str) -> bool:
        """Remove the secret and the recovery codes (cascade); False when there was none."""
        with self.db._transaction() as conn:
            cur = conn.execute("DELETE FROM otp WHERE user=?", (name,))
        return cur.rowcount == 1


@define(eq=False)
class OtpStore:
    """The second factor as the reactor uses it: SQL on the database thread, recovery-code
    hashes on the hashing pool, never on the reactor."""

    db: OtpDB
    run_db: Runner
    run_hash: Runner
    hash_cost: int

    def status(self, name: str) -> Deferred[OtpStatus]:
        """``otp status``."""
        return self.run_db(self.db.status, name)

    def enabled(self, name: str) -> Deferred[bool]:
        """Does a password login of ``name`` need a code?"""
        return self.run_db(self.db.enabled, name)

    def enable(
        self, name: str, secret: str, step: int, codes: Sequence[str], now: float
    ) -> Deferred[bool]:
        """Hash the recovery codes on the pool, then store everything in one transaction."""

        async def enable() -> bool:
            cost = min(self.hash_cost, RECOVERY_COST)
            hashes = await self.run_hash(hash_codes, codes, cost)
            done: bool = await self.run_db(self.db.enable, name, secret, step, hashes, now)
            return done

        return Deferred.fromCoroutine(enable())

    def verify(self, name: str, typed: str, now: float) -> Deferred[Verdict]:
        """A typed code: six digits are a TOTP code, ten letters a recovery code (spent if
        right), anything else wrong."""
        return Deferred.fromCoroutine(self._verify(name, normal_code(typed), now))

    async def _verify(self, name: str, code: str, now: float) -> Verdict:
        if is_totp_code(code):
            verdict: Verdict = await self.run_db(self.db.check_totp, name, code, now)
            return verdict
        if _RECOVERY.fullmatch(code) is None:
            return Verdict.WRONG
        hashes = await self.run_db(self.db.recovery_hashes, name)
        if not hashes and not await self.enabled(name):
            return Verdict.NOT_ENABLED
        found = await self.run_hash(find_code, code, hashes)
        if found is None or not await self.run_db(self.db.spend_recovery, found):
            return Verdict.WRONG
        return Verdict.RECOVERY

    def disable(self, name: str) -> Deferred[bool]:
        """``otp disable`` (after a code) and ``otp reset``: False when there was none."""
        return self.run_db(self.db.disable, name)
