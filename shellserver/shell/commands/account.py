"""Your own session and account: exit, passwd."""

from __future__ import annotations

from twisted.internet.task import deferLater

from shellserver.shell.commands.registry import Context, UsageError, command
from shellserver.store.accounts import password_problem


@command(
    "exit",
    usage="exit",
    aliases=("logout", "quit"),
    help="Log out (^D on an empty line does the same).",
)
def exit_(ctx: Context, args: list[str]) -> None:
    """Ends this session only (the user's other sessions stay), saying ``logout`` as a login shell
    does; ``logout`` and ``quit`` are aliases so every habit works.
    """
    ctx.write("logout\n")
    ctx.session.disconnect()


async def ask_new_password(ctx: Context) -> str | None:
    """Twice, echo off; None (after saying why) when unusable."""
    new = await ctx.read_line("New password: ", hidden=True)
    problem = password_problem(new)
    if problem is not None:
        ctx.fail(problem)
        return None
    if await ctx.read_line("Retype new password: ", hidden=True) != new:
        ctx.fail("passwords do not match")
        return None
    return new


@command("passwd", usage="passwd", help="Change your password.")
async def passwd(ctx: Context, args: list[str]) -> None:
    """passwd(1): the current password comes first, so a terminal left logged in cannot be used to
    take the account over; a wrong one costs a second, as PAM's fail delay does, and gets Linux
    passwd's own complaint. A new password also retires the first start's ``admin`` password file.
    """
    if args:
        raise UsageError()
    store, user = ctx.server.store, ctx.session.user
    old = await ctx.read_line("Current password: ", hidden=True)
    if not await store.check_password(user, old):
        await deferLater(ctx.server.clock, 1.0)
        ctx.fail("Authentication token manipulation error (wrong password)")
        return
    new = await ask_new_password(ctx)
    if new is None:
        return
    await store.set_password(user, new)
    ctx.write("passwd: password updated successfully\n")
    await ctx.server.initial_password_spent(user)
