"""Administrators' commands: kick, useradd, userdel, lock, unlock."""

from __future__ import annotations

from shellserver.accounts import ROLE_ADMIN, ROLE_USER, NoSuchUser, UserExists, username_problem
from shellserver.commands.account import ask_new_password
from shellserver.commands.registry import Context, UsageError, command
from shellserver.hub import Message
from shellserver.sanitize import careful


def _where(ctx: Context) -> str:
    return f"{ctx.session.tty} from {ctx.session.peer}"


@command(
    "kick",
    usage="kick USER [REASON...]",
    admin=True,
    help="End all of USER's sessions; each is told who did it and why.",
)
async def kick(ctx: Context, args: list[str]) -> None:
    if not args:
        raise UsageError()
    user = args[0]
    reason = " ".join(args[1:]) or "no reason given"
    me = ctx.session.user
    notice = Message.of(f"You have been logged out by {me}: {careful(reason)}")
    count = await ctx.server.hub.logout_user(user, notice)
    if not count:
        ctx.fail(f"{careful(user)} is not logged in")
        return
    ctx.write(f"kick: ended {count} session{'s' if count != 1 else ''} of {user}\n")
    ctx.server.admin_action(me, _where(ctx), "kick", user=user, reason=reason, sessions=count)


@command(
    "useradd",
    usage="useradd NAME [--admin]",
    admin=True,
    help="Create an account; asks for its password twice.",
)
async def useradd(ctx: Context, args: list[str]) -> None:
    flags = [a for a in args if a.startswith("-")]
    names = [a for a in args if not a.startswith("-")]
    if len(names) != 1 or any(f != "--admin" for f in flags):
        raise UsageError()
    name, role = names[0], ROLE_ADMIN if flags else ROLE_USER
    problem = username_problem(name)
    if problem is not None:
        ctx.fail(problem)
        return
    store = ctx.server.store
    if await store.get(name) is not None:
        ctx.fail(f"user '{name}' already exists")
        return
    password = await ask_new_password(ctx)
    if password is None:
        return
    try:
        account = await store.create_user(name, password, role)
    except UserExists:
        ctx.fail(f"user '{name}' already exists")
        return
    me = ctx.session
    await ctx.server.account_created(account, by=me.user, peer=me.peer)
    ctx.write(f"useradd: created {role} account {name}\n")
    ctx.server.admin_action(me.user, _where(ctx), "useradd", user=name, role=role)


async def _end_sessions(ctx: Context, user: str, what: str) -> None:
    notice = Message.of(f"Your account has been {what} by {ctx.session.user}.")
    await ctx.server.hub.logout_user(user, notice)


def _one_other_user(ctx: Context, args: list[str]) -> str | None:
    if len(args) != 1:
        raise UsageError()
    if args[0] == ctx.session.user:
        ctx.fail("you cannot do that to your own account")
        return None
    return args[0]


@command("userdel", usage="userdel NAME", admin=True, help="Delete an account (logs it out).")
async def userdel(ctx: Context, args: list[str]) -> None:
    name = _one_other_user(ctx, args)
    if name is None:
        return
    try:
        await ctx.server.store.delete(name)
    except NoSuchUser:
        ctx.fail(f"user '{careful(name)}' does not exist")
        return
    await _end_sessions(ctx, name, "deleted")
    await ctx.server.account_deleted(name)
    ctx.write(f"userdel: deleted {name}\n")
    ctx.server.admin_action(ctx.session.user, _where(ctx), "userdel", user=name)


async def _set_locked(ctx: Context, args: list[str], locked: bool) -> None:
    name = _one_other_user(ctx, args)
    if name is None:
        return
    try:
        await ctx.server.store.set_locked(name, locked)
    except NoSuchUser:
        ctx.fail(f"user '{careful(name)}' does not exist")
        return
    action = "lock" if locked else "unlock"
    if locked:
        await _end_sessions(ctx, name, "locked")
    ctx.write(f"{action}: {name} is {'locked' if locked else 'unlocked'}\n")
    ctx.server.admin_action(ctx.session.user, _where(ctx), action, user=name)


@command("lock", usage="lock NAME", admin=True, help="Lock an account and log it out.")
async def lock(ctx: Context, args: list[str]) -> None:
    await _set_locked(ctx, args, True)


@command("unlock", usage="unlock NAME", admin=True, help="Unlock a locked account.")
async def unlock(ctx: Context, args: list[str]) -> None:
    await _set_locked(ctx, args, False)
