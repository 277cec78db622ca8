"""Administrators' bans in a session: ban, unban, bans (the work is in ``shell/bans.py``)."""

from __future__ import annotations

from shellserver.ops.bans import BadBan
from shellserver.shell.bans import bans_table
from shellserver.shell.commands.registry import Context, UsageError, command
from shellserver.store.bans import TooManyBans


@command(
    "ban",
    usage="ban TARGET [DURATION] [REASON...]",
    admin=True,
    help="Ban a user, address, network or SSH key; its sessions end.",
)
async def ban(ctx: Context, args: list[str]) -> None:
    """A ban holds on every node and outlives restarts (it is in the store); banning a target
    again replaces its ban, so a ban is lengthened or shortened by banning again."""
    if not args:
        raise UsageError()
    try:
        made = await ctx.server.bans.ban(ctx.session.user, ctx.where(), args)
    except BadBan as e:
        raise UsageError(str(e)) from None
    except TooManyBans as e:
        ctx.fail(str(e))
        return
    ctx.write(made.answer() + "\n")


@command("unban", usage="unban TARGET", admin=True, help="Lift the ban of TARGET.")
async def unban(ctx: Context, args: list[str]) -> None:
    """The target is read as ``ban`` reads it, so ``unban 203.0.113.7/24`` lifts the ban of
    ``203.0.113.0/24``."""
    if len(args) != 1:
        raise UsageError()
    try:
        lifted = await ctx.server.bans.unban(ctx.session.user, ctx.where(), args[0])
    except BadBan as e:
        raise UsageError(str(e)) from None
    if lifted is None:
        ctx.fail(f"{args[0]} is not banned")
        return
    ctx.write(f"unbanned {lifted.target}\n")


@command("bans", usage="bans", admin=True, help="List the bans: target, by, when, until, reason.")
async def bans(ctx: Context, args: list[str]) -> None:
    """Expired bans are not listed (and are pruned from the store as they are read)."""
    if args:
        raise UsageError()
    await ctx.write_all([bans_table(await ctx.server.bans.listing())])
