"""write, wall and mesg: people talking to each other, as util-linux does it."""

from __future__ import annotations

import re
import time

from twisted.internet.task import deferLater

from shellserver.hub.local import Delivery, Message
from shellserver.hub.record import SessionInfo
from shellserver.shell import adminops
from shellserver.shell.commands.mailbox import write_offline
from shellserver.shell.commands.registry import Context, UsageError, command
from shellserver.terminal.discipline import Disconnected, EndOfInput, Interrupted
from shellserver.text.sanitize import careful

#: Only names of the tty kinds that exist are TTYs: ``write bob ab/12 hi`` sends "ab/12 hi".
#: (``tel/NODE.3``: a name a node gave while the cluster was unreachable.)
_TTY = re.compile(r"(?:tel|ssh|web)/(?:[a-z0-9][a-z0-9_-]{0,62}\.)?\d{1,9}")


@command(
    "write",
    usage="write USER [TTY] [TEXT...]",
    help="""
Send a message to another user's terminal.

With TEXT, that one line is sent. Without it, every line you type is sent
until a line with only "." or ^D; the other side then sees EOF. When USER
has several sessions, the least idle one that accepts messages is chosen;
name a TTY (as shown by who) to pick one. When USER has no session, the
message is saved for them (see help messages).
""",
)
async def write(ctx: Context, args: list[str]) -> None:
    """util-linux write: with TEXT one line, else every typed line until ``.`` or ^D, then EOF; the
    same choice of session (mesg y, least idle). It differs twice: to someone with no session the
    message is saved (``messages``), and each typed line costs a command token, so a paste is paced
    rather than flooding the other terminal.
    """
    if not args:
        raise UsageError()
    me = ctx.session
    if not me.mesg:
        ctx.fail("you have write permission turned off")
        return
    if ctx.refuse_if_muted():  # online or saved, nothing is sent while muted
        return
    user, rest = args[0], args[1:]
    tty = rest.pop(0) if rest and "/" in rest[0] and _TTY.fullmatch(rest[0]) else None
    sessions = ctx.server.hub.sessions_of_now(user)  # the hot path: no Deferred
    if not sessions:  # no session anywhere: the message is saved for them to read later
        await write_offline(ctx, user, rest)
        return
    target = _choose_target(ctx, user, tty, sessions)
    if target is None:
        return
    stamp = _STAMP.at(ctx.now())
    header = f"Message from {me.user}@{ctx.server.hostname} on {me.tty} at {stamp} ...\n"
    if rest:
        message = Message.of(header + careful(" ".join(rest)) + "\nEOF\n")
        outcome = ctx.server.hub.deliver_now(target, message, me.user)
        if outcome is None:  # on another node
            outcome = await ctx.server.hub.deliver(target, message, me.user)
        _report(ctx, target, outcome)
        return
    if not await _send(ctx, target, header):
        return
    while True:
        try:
            line = await ctx.read_line()
        except (EndOfInput, Interrupted, Disconnected):  # a hang-up ends it too, as in util-linux
            break
        if line == ".":
            break
        # Each line costs a command token: a paste is paced, not refused, and a
        # flood reaches the other terminal no faster than commands would.
        delay = me.bucket.wait(ctx.now())
        if delay:
            await deferLater(ctx.server.clock, delay)
        me.bucket.take(ctx.now())
        me.last_active = ctx.now()
        if ctx.refuse_if_muted():  # muted while typing: the rest is not sent
            break
        if not await _send(ctx, target, careful(line) + "\n"):
            return
    await _send(ctx, target, "EOF\n", gone_ok=True)


class _Stamp:
    """``HH:MM`` for a time, formatted once a minute, not once a message.

    Local time changes only at whole minutes (time zones and their changes
    are whole minutes), so a stamp holds for the rest of its minute.
    """

    def __init__(self) -> None:
        self._minute = -1
        self._text = ""

    def at(self, now: float) -> str:
        """``HH:MM`` of ``now``, formatted once a minute: a paste of many lines asks each time."""
        minute = int(now // 60)
        if minute != self._minute:
            self._text = time.strftime("%H:%M", time.localtime(minute * 60))
            self._minute = minute
        return self._text


_STAMP = _Stamp()


def _choose_target(
    ctx: Context, user: str, tty: str | None, sessions: list[SessionInfo]
) -> SessionInfo | None:
    """util-linux's choice: skip mesg n, prefer the least idle session."""
    shown = careful(user)
    if ctx.session.user in ctx.server.hub.ignores(user):
        ctx.fail(f"{shown} has messages disabled")  # as mesg n: ignoring is not revealed
        return None
    if tty is not None:
        for s in sessions:
            if s.tty == tty:
                if not s.mesg:
                    ctx.fail(f"{shown} has messages disabled")
                    return None
                return s
        ctx.fail(f"{shown} is not logged in on {tty}")
        return None
    open_ = [s for s in sessions if s.mesg]
    if not open_:
        ctx.fail(f"{shown} has messages disabled")
        return None
    if len(open_) == 1:
        target = open_[0]
    else:
        now = ctx.now()
        target = min(open_, key=lambda s: s.idle(now))
    if len(sessions) > 1:
        ctx.fail(f"{shown} is logged in more than once; writing to {target.tty}")
    return target


async def _send(ctx: Context, target: SessionInfo, text: str, gone_ok: bool = False) -> bool:
    """Through the hub, which knows whether ``target`` is here or on another node; False,
    and said, when it did not arrive (but the closing EOF to someone gone is not news)."""
    message, hub, sender = Message.of(text), ctx.server.hub, ctx.session.user
    outcome = hub.deliver_now(target, message, sender)
    if outcome is None:  # on another node
        outcome = await hub.deliver(target, message, sender)
    return _report(ctx, target, outcome, gone_ok)


def _report(ctx: Context, target: SessionInfo, outcome: Delivery, gone_ok: bool = False) -> bool:
    if outcome is Delivery.DELIVERED or outcome is Delivery.DROPPED:
        ctx.server.metrics.message("write", outcome is Delivery.DELIVERED)
    if outcome is Delivery.DELIVERED:
        return True
    if not (gone_ok and outcome is Delivery.GONE):
        ctx.fail(_FAILED[outcome].format(user=careful(target.user)))
    return False


_FAILED = {
    Delivery.DROPPED: "{user} is not reading; message dropped",
    Delivery.GONE: "{user} has logged out",
    Delivery.REFUSED: "{user} has messages disabled",
    Delivery.UNAVAILABLE: "cluster unavailable",
}


@command(
    "wall",
    usage="wall TEXT...",
    admin=True,
    help="Broadcast TEXT to every session, including those with messages off.",
)
async def wall(ctx: Context, args: list[str]) -> None:
    """wall(1) for administrators: it reaches every session, mesg n included, as root's wall does.
    The work is in adminops, so the control socket's wall is the same.
    """
    text = " ".join(args)
    if not text.strip():
        raise UsageError()
    me = ctx.session
    await adminops.wall(ctx.server.admin, me.user, me.tty, ctx.where(), text)


@command(
    "mesg",
    usage="mesg [y|n]",
    help="Allow (y) or refuse (n) messages from write on this session; alone, show the setting.",
)
async def mesg(ctx: Context, args: list[str]) -> None:
    """mesg(1) for this session, answering ``is y``/``is n`` as util-linux does. The hub is told
    before the prompt returns, so in a cluster no node still delivers after ``mesg n``.
    """
    if not args:
        ctx.write("is y\n" if ctx.session.mesg else "is n\n")
    elif len(args) == 1 and args[0] in ("y", "n"):
        ctx.session.mesg = args[0] == "y"
        await ctx.server.hub.changed(ctx.session)  # clustered: every node knows before the prompt
    else:
        raise UsageError()
