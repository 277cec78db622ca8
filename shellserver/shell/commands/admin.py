"""Administrators' commands in a session: kick, useradd, userdel, lock, unlock, mute, unmute,
shutdown."""

from __future__ import annotations

import time

from shellserver.shell import adminops
from shellserver.shell.commands.account import ask_new_password
from shellserver.shell.commands.registry import Context, UsageError, command
from shellserver.shell.shutdown import USAGE, invalid_time, parse_when
from shellserver.store.accounts import (
    ROLE_ADMIN,
    ROLE_USER,
    LastAdmin,
    NoSuchUser,
    UserExists,
    username_problem,
)
from shellserver.text.durations import DURATION_FORMS, format_until, parse_duration
from shellserver.text.sanitize import careful
from shellserver.text.words import counted


@command(
    "kick",
    usage="kick USER [REASON...]",
    admin=True,
    help="End all of USER's sessions; each is told who did it and why.",
)
async def kick(ctx: Context, args: list[str]) -> None:
    """No Unix command ends a user's remote logins by name (``pkill -u`` comes closest): each
    session of USER is told who ended it and why, and the admin log says who did it from where. The
    work is in adminops, shared with the control socket.
    """
    if not args:
        raise UsageError()
    user = args[0]
    reason = " ".join(args[1:]) or "no reason given"
    count = await adminops.kick(ctx.server.admin, ctx.session.user, ctx.where(), user, reason)
    if not count:
        ctx.fail(f"{careful(user)} is not logged in")
        return
    ctx.write(f"kick: ended {counted(count, 'session')} of {careful(user)}\n")


@command(
    "useradd",
    usage="useradd NAME [--admin]",
    admin=True,
    help="Create an account; asks for its password twice.",
)
async def useradd(ctx: Context, args: list[str]) -> None:
    """useradd(8) and passwd in one step, since an account is of no use without a password. The
    name is checked and looked up before the password is asked, so a typo does not cost typing it
    twice; ``UserExists`` still covers another administrator creating the same name meanwhile.
    """
    flags = [a for a in args if a.startswith("-")]
    names = [a for a in args if not a.startswith("-")]
    if len(names) != 1 or any(f != "--admin" for f in flags):
        raise UsageError()
    name, role = names[0], ROLE_ADMIN if flags else ROLE_USER
    problem = username_problem(name, registering=True)
    if problem is not None:
        ctx.fail(problem)
        return
    if await ctx.server.store.get(name) is not None:
        ctx.fail(f"user '{careful(name)}' already exists")
        return
    password = await ask_new_password(ctx)
    if password is None:
        return
    try:
        await adminops.add_user(
            ctx.server.admin, ctx.session.user, ctx.where(), name, password, role
        )
    except UserExists:
        ctx.fail(f"user '{careful(name)}' already exists")
        return
    ctx.write(f"useradd: created {role} account {name}\n")


def _other_user(ctx: Context, args: list[str]) -> str | None:
    if len(args) != 1:
        raise UsageError()
    if args[0] == ctx.session.user:
        ctx.fail("you cannot do that to your own account")
        return None
    return args[0]


@command(
    "userdel",
    usage="userdel NAME",
    admin=True,
    help="Delete an account (logs it out). The last administrator is never deleted.",
)
async def userdel(ctx: Context, args: list[str]) -> None:
    """userdel(8) for the server's accounts: the user is logged out and the home goes with the
    account, all or nothing. Never your own account, never the last administrator, so the server
    always keeps someone who can administer it.
    """
    name = _other_user(ctx, args)
    if name is None:
        return
    try:
        await adminops.delete_user(ctx.server.admin, ctx.session.user, ctx.where(), name)
    except NoSuchUser:
        ctx.fail(f"user '{careful(name)}' does not exist")
        return
    except LastAdmin as e:
        ctx.fail(str(e))
        return
    ctx.write(f"userdel: deleted {careful(name)}\n")


async def _set_locked(ctx: Context, args: list[str], locked: bool) -> None:
    name = _other_user(ctx, args)
    if name is None:
        return
    try:
        await adminops.set_locked(ctx.server.admin, ctx.session.user, ctx.where(), name, locked)
    except NoSuchUser:
        ctx.fail(f"user '{careful(name)}' does not exist")
        return
    except LastAdmin as e:
        ctx.fail(str(e))
        return
    ctx.write(f"{ctx.name}: {careful(name)} is {'locked' if locked else 'unlocked'}\n")


@command(
    "lock",
    usage="lock NAME",
    admin=True,
    help="Lock an account and log it out. The last administrator is never locked.",
)
async def lock(ctx: Context, args: list[str]) -> None:
    """``usermod -L`` that also ends the user's sessions at once, so a lock takes effect now rather
    than at the next login. The same refusals as ``userdel``, for the same reason.
    """
    await _set_locked(ctx, args, True)


@command("unlock", usage="unlock NAME", admin=True, help="Unlock a locked account.")
async def unlock(ctx: Context, args: list[str]) -> None:
    """Undoes ``lock``; it shares lock's checks and words (``_set_locked``), so the pair reads
    alike in the shell and in the admin log.
    """
    await _set_locked(ctx, args, False)


@command(
    "mute",
    usage="mute USER DURATION [REASON...]",
    admin=True,
    help=f"""
Stop USER sending messages for DURATION ({DURATION_FORMS}).

USER keeps reading, but write (saved messages too), say and topic are refused
with the time the mute ends and REASON, on every node. 'unmute USER' ends it
early; a mute ends by itself.
""",
)
async def mute(ctx: Context, args: list[str]) -> None:
    """IRC's quiet for the shell: a muted user stays logged in and reads, but sends nothing to
    anyone until the mute ends. A bare number is a usage error, as for ``shutdown``: seconds or
    minutes would be a guess.
    """
    if len(args) < 2:
        raise UsageError()
    user, length = args[0], args[1]
    seconds = parse_duration(length)
    if seconds is None:
        raise UsageError(f"invalid duration '{careful(length)}' (use {DURATION_FORMS})")
    if user == ctx.session.user:
        ctx.fail("you cannot do that to your own account")
        return
    reason = " ".join(args[2:]) or None
    try:
        record = await adminops.mute(
            ctx.server.admin, ctx.session.user, ctx.where(), user, seconds, reason
        )
    except NoSuchUser:
        ctx.fail(f"user '{careful(user)}' does not exist")
        return
    why = f" ({careful(reason)})" if reason else ""
    until = format_until(record.until, ctx.now())
    ctx.write(f"muted {careful(user)} until {until}{why}\n")


@command("unmute", usage="unmute USER", admin=True, help="End USER's mute now.")
async def unmute(ctx: Context, args: list[str]) -> None:
    """Ends a mute before its time, on every node; saying so when there was none, so a typo in
    the name is not taken for success.
    """
    if len(args) != 1:
        raise UsageError()
    user = args[0]
    if not await adminops.unmute(ctx.server.admin, ctx.session.user, ctx.where(), user):
        ctx.fail(f"{careful(user)} is not muted")
        return
    ctx.write(f"unmuted {careful(user)}\n")


@command(
    "shutdown",
    usage=USAGE,
    admin=True,
    help="""
Stop the server in MIN minutes, at HH:MM, or now, telling everyone.

The time comes first: +MIN, HH:MM (server time, today or tomorrow) or now;
alone, shutdown means +1. TEXT is shown with every warning. Everyone is
warned at once and again at 180, 150, 130, 100, 70, 55, 40 and 25 minutes
left, then every minute for the last 10. New logins are refused in the last
5 minutes. 'shutdown -c' cancels and tells everyone.
""",
)
async def shutdown(ctx: Context, args: list[str]) -> None:
    """shutdown(8)'s time forms (+MIN, HH:MM, now) and ``-c``, for the server rather than the
    machine; the countdown, warnings and login refusal live in ``shell.shutdown``. A bare number is
    a usage error, not a message: taken as text it would stop the server in a minute.
    """
    schedule = ctx.server.shutdown
    me = ctx.session
    if args[:1] == ["-c"]:
        if len(args) > 1:
            raise UsageError()
        if not schedule.cancel(me.user, me.tty, ctx.where()):
            ctx.fail("no shutdown is scheduled")
            return
        await ctx.server.admin.audit(me.user, ctx.where(), "shutdown cancel")
        return
    minutes: float = 1
    if args:
        parsed = parse_when(args[0], ctx.now())
        if parsed is None:
            raise UsageError(invalid_time(args[0]))
        minutes = parsed
    text = " ".join(args[1:])
    # Recorded first: ``shutdown now`` stops the server right after scheduling.
    expires = ctx.now() + minutes * 60
    await ctx.server.admin.audit(me.user, ctx.where(), "shutdown", None, text or None, expires)
    at = schedule.schedule(minutes, text, me.user, me.tty, ctx.where())
    if minutes:
        stamp = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(at))
        ctx.write(f"Shutdown scheduled for {stamp}, use 'shutdown -c' to cancel.\n")
