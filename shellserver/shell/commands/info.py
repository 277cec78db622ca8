"""Who is here and what the server is doing: help, who, w, whoami, id, finger, last, date,
uptime."""

from __future__ import annotations

import os
import time

from shellserver.hub.record import SessionInfo, key_of
from shellserver.shell.commands.registry import Context, UsageError, command
from shellserver.shell.commands.rooms import member_ids
from shellserver.text.sanitize import careful
from shellserver.text.timefmt import format_idle, format_login_time, format_uptime
from shellserver.text.words import counted
from shellserver.text.wrap import display_width


def _loadavg() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def uptime_line(ctx: Context, sessions: int, users: int) -> str:
    """procps uptime's line, shared by ``uptime`` and the first line of ``w``; it counts sessions
    as well as users, since one user may hold several.
    """
    now = time.strftime("%H:%M:%S", time.localtime(ctx.now()))
    return (
        f" {now} up {format_uptime(ctx.server.uptime())},  "
        f"{counted(sessions, 'session')},  "
        f"{counted(users, 'user')},  load average: {_loadavg()}\n"
    )


def session_rows(ctx: Context, sessions: list[SessionInfo], what: bool) -> str:
    """The table ``who`` and ``w`` share. FROM (where each session connects from) is shown to
    administrators only, as addresses are personal; NODE, also for administrators, appears only in
    a cluster, where it tells which server holds the session.
    """
    admin = ctx.session.is_admin
    nodes = admin and ctx.server.clustered
    now = ctx.now()
    header = f"{'USER':<12} {'TTY':<8} {'LOGIN':<12} {'IDLE':>5} MESG"
    if what:
        header += f" {'WHAT':<20}"
    if nodes:
        header += f" {'NODE':<12}"
    if admin:
        header += " FROM"
    lines = [header.rstrip()]
    for s in sessions:
        login = time.strftime("%b %d %H:%M", time.localtime(s.login_time))
        tty = f"{s.tty} (detached)" if s.detached else s.tty
        row = f"{s.user:<12} {tty:<8} {login:<12} {format_idle(s.idle(now)):>5} "
        row += "+   " if s.mesg else "-   "
        if what:
            row += f" {s.doing[:20]:<20}"
        if nodes:
            row += f" {s.node:<12}"
        if admin:
            row += f" {careful(s.peer)}"
        lines.append(row.rstrip())
    return "\n".join(lines) + "\n"


@command(
    "who",
    usage="who [#ROOM]",
    help="List the sessions online (or in a room): user, tty, login time, idle, mesg.",
)
async def who(ctx: Context, args: list[str]) -> None:
    """who(1), and ``who #ROOM`` for a room's members. Written with ``write_all``, so thousands of
    rows wait for a slow client instead of piling up in memory.
    """
    if len(args) > 1:
        raise UsageError()
    sessions = await ctx.server.hub.sessions()
    if args:
        ids = await member_ids(ctx, args[0])
        if ids is None:
            return
        sessions = [s for s in sessions if key_of(s) in ids]
    await ctx.write_all([session_rows(ctx, sessions, what=False)])


@command("w", usage="w", help="Show uptime, then who is online and what they are doing.")
async def w(ctx: Context, args: list[str]) -> None:
    """procps w: the uptime line, then who's table with WHAT, the line each session is
    running now.
    """
    if args:
        raise UsageError()
    sessions = await ctx.server.hub.sessions()
    users = len({s.user for s in sessions})
    await ctx.write_all(
        [uptime_line(ctx, len(sessions), users), session_rows(ctx, sessions, what=True)]
    )


@command("uptime", usage="uptime", help="How long the server has run, and how many are online.")
async def uptime(ctx: Context, args: list[str]) -> None:
    """procps uptime, for the server process: how long since it started, not since the machine
    booted; the load average is the machine's.
    """
    if args:
        raise UsageError()
    sessions = await ctx.server.hub.sessions()
    ctx.write(uptime_line(ctx, len(sessions), len({s.user for s in sessions})))


@command("date", usage="date", help="Print the server's date and time.")
def date(ctx: Context, args: list[str]) -> None:
    """date(1)'s default format in the server's time zone: the time ``shutdown HH:MM`` and the
    login times are given in.
    """
    if args:
        raise UsageError()
    ctx.write(time.strftime("%a %b %d %H:%M:%S %Z %Y", time.localtime(ctx.now())) + "\n")


@command("whoami", usage="whoami", help="Print your user name.")
def whoami(ctx: Context, args: list[str]) -> None:
    """whoami(1): only the name, on its own line, so ``ssh host whoami`` gives a value a script can
    use.
    """
    if args:
        raise UsageError()
    ctx.write(ctx.session.user + "\n")


@command("id", usage="id", help="Print your user name and role.")
def id_(ctx: Context, args: list[str]) -> None:
    """id(1) without uids or groups, which accounts here do not have: the name and the role, the
    one thing that decides what a session may run.
    """
    if args:
        raise UsageError()
    ctx.write(f"user={ctx.session.user} role={ctx.session.role}\n")


@command("clear", usage="clear", help="Clear the screen.")
def clear(ctx: Context, args: list[str]) -> None:
    """clear(1) without terminfo: cursor home and erase display, which every terminal served here
    (telnet and ssh clients, the browser's xterm.js) understands.
    """
    ctx.write("\x1b[H\x1b[2J")


@command(
    "help",
    usage="help [COMMAND]",
    help="List the commands, or show how to use one.",
)
def help_(ctx: Context, args: list[str]) -> None:
    """Reads the help strings given to ``command`` (not these docstrings). The list shows aliases
    too, so someone looking for ``logout`` finds it, hides commands the session may not run, and
    cuts each summary to the terminal's width so no line wraps.
    """
    registry = ctx.server.registry
    if not args:
        visible = [c for c in registry if not c.admin or ctx.session.is_admin]
        # Aliases are listed too: a user looking for "logout" finds it.
        names = sorted(((n, c) for c in visible for n in (c.name, *c.aliases)), key=lambda e: e[0])
        width = max(len(n) for n, _ in names)
        room = max(20, ctx.session.width - width - 5)
        rows = [
            f"  {n:<{width}}  {_fit(c.summary if n == c.name else f'Same as {c.name}.', room)}"
            for n, c in names
        ]
        ctx.write("Commands:\n" + "\n".join(rows) + "\nType 'help COMMAND' for more.\n")
        return
    if len(args) > 1:
        raise UsageError()
    cmd = registry.get(args[0])
    if cmd is None:
        ctx.fail(f"no help for {careful(args[0])}")
        return
    aliases = f" (also: {', '.join(cmd.aliases)})" if cmd.aliases else ""
    admin = " Administrators only." if cmd.admin else ""
    ctx.write(f"Usage: {cmd.usage}{aliases}\n{cmd.help}{admin}\n")


def _fit(text: str, columns: int) -> str:
    """``text`` cut at a word to ``columns``, with an ellipsis when cut."""
    if display_width(text) <= columns:
        return text
    cut = text[: columns - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > columns // 2 else cut).rstrip(" ,;:") + "…"


@command(
    "finger",
    usage="finger USER",
    help="Show a user's name, role, and online sessions or last login.",
)
async def finger(ctx: Context, args: list[str]) -> None:
    """finger(1) for the accounts here: role, lock, sessions or last login, and ``~/.plan``. Where
    someone connects from is shown only to administrators and to the user themself.
    """
    if len(args) != 1:
        raise UsageError()
    server = ctx.server
    account = await server.store.get(args[0])
    if account is None:
        ctx.fail(f"{careful(args[0])}: no such user.")
        return
    lines = [f"Login: {account.name:<24} Role: {account.role}"]
    if account.locked:
        lines.append("Account is locked.")
    show_peer = ctx.session.is_admin or ctx.session.user == account.name
    now = ctx.now()
    sessions = await server.hub.sessions_of(account.name)
    for s in sessions:
        where = f" from {careful(s.peer)}" if show_peer else ""
        lines.append(
            f"On since {format_login_time(s.login_time)} on {s.tty}{where}, "
            f"idle {format_idle(s.idle(now))}, messages {'on' if s.mesg else 'off'}"
        )
    if not sessions:
        last = await server.store.last_login(account.name)
        if last is None:
            lines.append("Never logged in.")
        else:
            where = f" from {careful(last.peer)}" if show_peer else ""
            lines.append(f"Last login {format_login_time(last.login)} on {last.tty}{where}")
    plan = await server.plan_of(account.name)
    if plan is not None:
        lines.append(plan)
    ctx.write("\n".join(lines) + "\n")


@command("last", usage="last [USER]", help="Show login history, newest first.")
async def last(ctx: Context, args: list[str]) -> None:
    """last(1), newest first and at most 50 rows, so the answer stays short; source addresses are
    shown only to administrators and for your own logins.
    """
    if len(args) > 1:
        raise UsageError()
    records = await ctx.server.store.history(args[0] if args else None, 50)
    me = ctx.session
    rows = []
    for r in records:
        peer = careful(r.peer) if me.is_admin or r.user == me.user else "-"
        start = format_login_time(r.login)
        if r.logout is None:
            span = "  still logged in"
        else:
            minutes = int((r.logout - r.login) // 60)
            end = time.strftime("%H:%M", time.localtime(r.logout))
            span = f" - {end}  ({minutes // 60:02d}:{minutes % 60:02d})"
        rows.append(f"{r.user:<12} {r.tty:<8} {peer:<16} {start}{span}")
    if not rows:
        rows.append("no logins recorded" + (f" for {careful(args[0])}" if args else ""))
    ctx.write("\n".join(rows) + "\n")
