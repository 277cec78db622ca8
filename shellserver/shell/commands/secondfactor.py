"""The second factor (TOTP): ``otp enable``, ``otp disable``, ``otp status``, ``otp reset``."""

from __future__ import annotations

from twisted.internet.task import deferLater

from shellserver.shell import adminops
from shellserver.shell.commands.registry import Context, UsageError, command
from shellserver.shell.secondfactor import CODE_PROMPT, enable
from shellserver.store.accounts import username_problem
from shellserver.store.otp import Verdict
from shellserver.text.sanitize import careful
from shellserver.text.timefmt import format_login_time


@command(
    "otp",
    usage="otp enable | otp disable | otp status | otp reset USER",
    help="""A second factor for password logins (TOTP, as authenticator apps make).

'otp enable' shows a QR code and a key for your app, asks for the code it shows, then
prints 10 recovery codes, each good for one login without the app. From then on a password
login asks for a verification code (a public-key SSH login does not). 'otp disable' asks
for a code (or a recovery code) and removes it; 'otp status' tells whether it is on.
Administrators: 'otp reset USER' removes a user's second factor (a lost phone).""",
)
async def otp(ctx: Context, args: list[str]) -> None:
    """One command with the subcommands people expect of it (as ``git``'s), so ``help`` lists
    the second factor once; ``reset`` alone is an administrator's."""
    if not args:
        raise UsageError()
    what, rest = args[0], args[1:]
    if what == "reset":
        await _reset(ctx, rest)
        return
    if rest or what not in ("enable", "disable", "status"):
        raise UsageError()
    factor, user = ctx.server.second_factor, ctx.session.user
    if what == "enable":
        if not await enable(factor, user, ctx.write, ctx.read_line):
            ctx.status = 1
        return
    if what == "status":
        status = await factor.otp.status(user)
        if not status.enabled or status.since is None:
            ctx.write("otp: second factor not enabled\n")
        else:
            since = format_login_time(status.since)
            ctx.write(
                f"otp: second factor enabled since {since}; "
                f"{status.recovery_left} recovery code(s) left\n"
            )
        return
    if not await factor.otp.enabled(user):
        ctx.fail("second factor not enabled")
        return
    typed = await ctx.read_line(CODE_PROMPT, hidden=True)
    verdict = await factor.otp.verify(user, typed, ctx.now())
    if not verdict.accepted:
        # As passwd's wrong password: a second's pause, so the command is no fast oracle.
        await deferLater(ctx.server.clock, 1.0)
        ctx.fail("wrong code; second factor still enabled")
        return
    await factor.otp.disable(user)
    if verdict is Verdict.RECOVERY:
        ctx.write("otp: (a recovery code was used)\n")
    ctx.write("otp: second factor disabled\n")


async def _reset(ctx: Context, args: list[str]) -> None:
    if not ctx.session.is_admin:
        ctx.fail("reset: permission denied")
        return
    if len(args) != 1:
        raise UsageError()
    name = args[0]
    if username_problem(name) is not None:
        ctx.fail(f"reset: no such user: {careful(name[:64])}")
        return
    if await adminops.reset_otp(ctx.server.admin, ctx.session.user, ctx.where(), name):
        ctx.write(f"otp: second factor of {name} removed\n")
    else:
        ctx.fail(f"reset: {name} has no second factor")
