"""Saved messages: ``write`` to someone with no session saves the message;
``messages`` lists, reads and removes them; ``ignore``/``unignore`` keep pests out."""

from __future__ import annotations

import re

from shellserver.shell import people
from shellserver.shell.commands.registry import Context, UsageError, command
from shellserver.shell.people import FULL, IGNORED, MESSAGE_LIMIT, NO_USER, SAVED, SavedMessage
from shellserver.text.sanitize import careful, careful_lines
from shellserver.text.timefmt import format_login_time
from shellserver.text.wrap import char_width, display_width

_NUMBER = re.compile(r"[1-9][0-9]{0,8}")


async def write_offline(ctx: Context, user: str, words: list[str]) -> None:
    """``write`` found no session of ``user``: save the message if they exist and allow it."""
    shown = careful(user)
    if not people.valid_user(user):
        ctx.fail(f"{shown} is not logged in")
        return
    me, store = ctx.session.user, ctx.server.store
    if words:
        body = people.to_blob(" ".join(words))
    else:
        state = await people.run(store, people.mailbox_state, user, me)
        if state != SAVED:
            _report(ctx, shown, state)
            return
        composed = await _compose(ctx)
        if composed is None:
            return
        body = composed
    if len(body) > MESSAGE_LIMIT:
        ctx.fail(f"message too long to save (at most {MESSAGE_LIMIT} bytes)")
        return
    if ctx.refuse_if_muted():  # muted while composing
        return
    _report(ctx, shown, await people.run(store, people.save_message, user, me, body, ctx.now()))


def _report(ctx: Context, shown: str, state: str) -> None:
    if state == SAVED:
        ctx.fail(f"{shown} is not logged in; message saved")
    elif state == IGNORED:  # the same answer as mesg n: ignoring is not revealed
        ctx.fail(f"{shown} has messages disabled")
    elif state == FULL:
        ctx.fail(f"{shown}'s mailbox is full")
    else:
        assert state == NO_USER
        ctx.fail(f"{shown} is not logged in")


async def _compose(ctx: Context) -> bytes | None:
    """Lines until "." or ^D (^C and a hang-up end it too, as for an online ``write``).

    Past the size limit the rest is read and dropped, so it never runs as commands.
    """
    parts: list[bytes] = []
    size = 0
    async for line in ctx.typed_lines():
        await ctx.pace()  # paced like the online form
        if size <= MESSAGE_LIMIT:
            data = people.to_blob(line)
            parts.append(data)
            size += len(data) + 1
    if not parts:
        return None
    return b"\n".join(parts)


@command(
    "messages",
    usage="messages [read N|all] [rm N|all]",
    help="""
Messages saved for you while you were not logged in.

Alone, list them: N for a message not read yet (as mail does), number,
sender, when, the start of the text. "messages read N" (or "all") shows
them and marks them read; "messages rm N" (or "all") deletes them. Numbers
are positions in the list. At most 100 are kept for you; when the box is
full, senders are told so.
""",
)
async def messages(ctx: Context, args: list[str]) -> None:
    """Saved messages, marked as mail(1) marks them (N for not read yet); the numbers are
    positions in the list just shown. Reading never deletes: only ``rm`` does (or ignoring
    the sender), so a message is not lost by looking at it.
    """
    if len(args) not in (0, 2) or (args and args[0] not in ("read", "rm")):
        raise UsageError()
    store, me = ctx.server.store, ctx.session.user
    if args and args[1] != "all" and not _NUMBER.fullmatch(args[1]):
        raise UsageError()
    saved: list[SavedMessage] = await people.run(store, people.saved_messages, me)
    if not args:
        if not saved:
            ctx.write("No saved messages.\n")
            return
        width = ctx.session.width
        ctx.write(_listing(saved, width))
        return
    action, which = args
    if which == "all":
        chosen = list(enumerate(saved, 1))
    else:
        n = int(which)
        if n > len(saved):
            ctx.fail(f"{n}: no such message")
            return
        chosen = [(n, saved[n - 1])]
    ids = [m.id for _, m in chosen]
    if action == "rm":
        await people.run(store, people.delete_messages, me, ids)
        return
    for n, m in chosen:
        ctx.write(
            f"Message {n} from {m.sender} at {format_login_time(m.sent)}:\n"
            f"{careful_lines(m.text).rstrip(chr(10))}\n"
        )
        await ctx.drain()
    unread = [m.id for _, m in chosen if not m.read]
    if unread:
        await people.run(store, people.mark_read, me, unread)


def _listing(saved: list[SavedMessage], width: int) -> str:
    """``N  1  alice  Thu Nov 26 14:02  text…``: one line each, cut to the terminal's width.

    ``N`` marks a message not read yet, as mail(1) does; a read one has a blank there.
    """
    nw = len(str(len(saved)))
    sw = max(len(m.sender) for m in saved)
    lines = []
    for n, m in enumerate(saved, 1):
        mark = " " if m.read else "N"
        head = f"{mark}  {n:>{nw}}  {m.sender:<{sw}}  {format_login_time(m.sent)}  "
        first, _, more = m.text.partition("\n")
        lines.append(head + _cut(careful(first), width - 1 - len(head), bool(more)))
    return "\n".join(lines) + "\n"


def _cut(text: str, room: int, more: bool) -> str:
    """``text`` in ``room`` columns, ending in ``…`` when anything is left out."""
    if not more and display_width(text) <= room:
        return text
    room = max(room - 1, 0)
    used, end = 0, 0
    for ch in text:
        w = char_width(ch)
        if used + w > room:
            break
        used += w
        end += 1
    return text[:end] + "…"


@command(
    "ignore",
    usage="ignore [USER]",
    help="""
Ignore USER: their write, saved messages and room lines no longer reach you,
and they are told you have messages disabled. Messages they saved for you
are discarded. Alone, list whom you ignore. wall and admin notices always
reach you.
""",
)
async def ignore(ctx: Context, args: list[str]) -> None:
    """IRC's /ignore, which Unix lacks: the ignored user is told what ``mesg n`` would tell them,
    so ignoring is never revealed. The hub's copy of the list changes at once, so the very next
    line from them is held back.
    """
    if len(args) > 1:
        raise UsageError()
    store, me = ctx.server.store, ctx.session.user
    if not args:
        names: list[str] = await people.run(store, people.ignore_list, me)
        ctx.write("".join(f"{n}\n" for n in names) or "You are not ignoring anyone.\n")
        return
    other = args[0]
    shown = careful(other)
    if other == me:
        ctx.fail("you cannot ignore yourself")
        return
    state = NO_USER
    if people.valid_user(other):
        state = await people.run(store, people.add_ignore, me, other)
    if state == NO_USER:
        ctx.fail(f"no such user: {shown}")
    elif state == people.ALREADY:
        ctx.fail(f"you are already ignoring {shown}")
    elif state == FULL:
        ctx.fail(f"your ignore list is full (at most {people.IGNORE_LIMIT})")
    else:
        ctx.server.hub.set_ignores(me, ctx.server.hub.ignores(me) | {other})
        ctx.write(f"Ignoring {shown}.\n")


@command("unignore", usage="unignore USER", help="Stop ignoring USER.")
async def unignore(ctx: Context, args: list[str]) -> None:
    """Undoes ``ignore``, in the store and in the hub at once, so their write and room lines reach
    you again from the next one.
    """
    if len(args) != 1:
        raise UsageError()
    me, other = ctx.session.user, args[0]
    removed = people.valid_user(other) and await people.run(
        ctx.server.store, people.remove_ignore, me, other
    )
    if not removed:
        ctx.fail(f"you are not ignoring {careful(other)}")
        return
    ctx.server.hub.set_ignores(me, ctx.server.hub.ignores(me) - {other})
    ctx.write(f"No longer ignoring {careful(other)}.\n")
