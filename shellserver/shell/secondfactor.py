"""The second factor's dialogues: enabling TOTP (the ``otp enable`` command and the enrolment
``--require-otp`` asks for at login) and asking for a code at a password login.

They talk through two callables, ``write`` and ``read``, so the command (through its
session's output, under the output cap) and the session start (through the terminal
before the shell is there) run the same steps with the same words.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import segno
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from shellserver.store.accounts import Account
from shellserver.store.otp import (
    OtpStore,
    matching_step,
    new_recovery_codes,
    new_secret,
    normal_code,
    provisioning_uri,
)

log = Logger()

#: What a password login asks next, echo off, on every wire.
CODE_PROMPT = "Verification code: "
#: Wrong codes ``otp enable`` takes before it gives up.
ENABLE_TRIES = 3
#: ``--require-otp`` values.
REQUIRE_NONE, REQUIRE_ADMIN, REQUIRE_ALL = "none", "admin", "all"

Write = Callable[[str], None]
Read = Callable[[str, bool], Deferred[str]]


@frozen
class SecondFactor:
    """What the second factor's dialogues use, given by the assembly: the store's records,
    the clock codes are read against, the issuer named in the apps and ``--require-otp``."""

    otp: OtpStore
    clock: IReactorTime
    #: The issuer an authenticator app shows beside the account (the server's host name).
    issuer: str
    #: ``--require-otp``: ``none``, ``admin`` or ``all``.
    require: str = REQUIRE_NONE

    def required_of(self, account: Account) -> bool:
        """Must ``account`` have a second factor before it gets a prompt?"""
        return self.require == REQUIRE_ALL or (self.require == REQUIRE_ADMIN and account.is_admin)

    async def must_enrol(self, account: Account) -> bool:
        """Required of the account and not there yet: the session start runs the enable
        steps in place of the shell."""
        return self.required_of(account) and not await self.otp.enabled(account.name)


def qr_text(uri: str) -> str:
    """The QR code of ``uri`` in half blocks, two rows of modules per line (about 41
    columns and 21 lines for an ``otpauth://`` URI), light modules drawn: scannable on
    the usual dark terminal."""
    out = io.StringIO()
    segno.make(uri, error="l", micro=False).terminal(out=out, border=2, compact=True)
    return out.getvalue()


async def enable(factor: SecondFactor, name: str, write: Write, read: Read) -> bool:
    """Show a new secret (URI and QR code), take a current code to confirm it, store it with
    fresh recovery codes and print those once. False (said why) when not enabled."""
    if await factor.otp.enabled(name):
        write("otp: a second factor is already enabled; 'otp disable' first to replace it\n")
        return False
    secret = new_secret()
    uri = provisioning_uri(secret, name, factor.issuer)
    write(
        "Scan this QR code with an authenticator app (or enter the key by hand):\n"
        f"{qr_text(uri)}{uri}\n"
        f"Key: {secret}\n"
    )
    step = None
    for _ in range(ENABLE_TRIES):
        typed = await read(CODE_PROMPT, True)
        code = normal_code(typed)
        if not code:
            break
        step = matching_step(secret, code, factor.clock.seconds())
        if step is not None:
            break
        write("otp: wrong code; type the code the app shows now (Enter to give up)\n")
    if step is None:
        write("otp: second factor not enabled\n")
        return False
    codes = new_recovery_codes()
    if not await factor.otp.enable(name, secret, step, codes, factor.clock.seconds()):
        write("otp: a second factor is already enabled\n")
        return False
    log.info("{user} enabled a second factor", event="otp_enabled", user=name)
    listed = "".join(f"  {code}\n" for code in codes)
    write(
        "Second factor enabled: from now on a password login asks for a verification code.\n"
        "Recovery codes (each works once in place of a code; keep them safe, they are not "
        "shown again):\n" + listed
    )
    return True


async def enrol(factor: SecondFactor, account: Account, write: Write, read: Read) -> bool:
    """``--require-otp``: the enable steps before the first prompt; False ends the session."""
    write("This account must use a second factor: enable it now to continue.\n")
    if await enable(factor, account.name, write, read):
        return True
    write("A second factor is required for this account; logging out.\n")
    return False
