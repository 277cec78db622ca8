"""Rooms: join, part, say, rooms, topic, and the members for ``who #room``.

Every room line is sanitised and made into one ``Message`` for all members; the hub delivers
it under each member's output cap and leaves out those who ignore the sender. The sender's own
session gets its copy as command output, so it reads in order with the prompt.
"""

from __future__ import annotations

from shellserver.hub import rooms
from shellserver.hub.local import Message
from shellserver.hub.record import Key
from shellserver.hub.rooms import (
    BAD_NAME_HINT,
    MAX_MEMBERS,
    MAX_ROOMS_PER_SESSION,
    MAX_SAY,
    MAX_TOPIC,
    valid_room,
)
from shellserver.shell.commands.registry import Context, UsageError, command
from shellserver.text.sanitize import careful


def _room_arg(ctx: Context, name: str) -> bool:
    if valid_room(name):
        return True
    ctx.fail(f"bad room name: {careful(name)} ({BAD_NAME_HINT})")
    return False


async def _tell(ctx: Context, room: str, text: str, skip: bool = True) -> None:
    """``text`` to the room's sessions (others but this one, unless ``skip`` is False), and
    to this one as output; counted in ``shellserver_messages_total{kind="room"}``."""
    me = ctx.session
    reached, dropped = await ctx.server.hub.send_room(
        room, Message.of(text), me.user, me.id if skip else None
    )
    ctx.server.metrics.messages("room", reached, dropped)
    ctx.write(text + "\n")


@command(
    "join",
    usage="join #ROOM",
    help=f"""
Join a room, creating it if nobody is in it; its members are told. Room names
are # and 1-32 of a-z, 0-9, _ and -. A session may be in {MAX_ROOMS_PER_SESSION} rooms, a room
may hold {MAX_MEMBERS} sessions.
""",
)
async def join(ctx: Context, args: list[str]) -> None:
    """IRC's /join: the room is made by its first member and its members are told. The limits per
    session and per room bound how many copies one line can cost.
    """
    if len(args) != 1:
        raise UsageError()
    room = args[0]
    if not _room_arg(ctx, room):
        return
    me = ctx.session
    status = await ctx.server.hub.join_room(
        room, me.id, me.user, me.tty, MAX_ROOMS_PER_SESSION, MAX_MEMBERS
    )
    if status == rooms.ALREADY:
        ctx.fail(f"you are already in {room}")
    elif status == rooms.TOO_MANY:
        ctx.fail(f"you are in too many rooms (at most {MAX_ROOMS_PER_SESSION})")
    elif status == rooms.ROOM_FULL:
        ctx.fail(f"{room} is full (at most {MAX_MEMBERS} members)")
    else:
        await _tell(ctx, room, rooms.joined_text(room, me.user))
        info = await ctx.server.hub.room(room)
        if info is not None and info.topic:
            ctx.write(f"[{room}] topic: {info.topic}\n")


@command(
    "part",
    usage="part [#ROOM]",
    help="Leave a room (its members are told); without a name, leave every room you are in.",
)
async def part(ctx: Context, args: list[str]) -> None:
    """IRC's /part; without a name it leaves every room at once. The leaver gets the notice too, as
    the output of the command.
    """
    if len(args) > 1:
        raise UsageError()
    me, hub = ctx.session, ctx.server.hub
    if args:
        room = args[0]
        if not _room_arg(ctx, room):
            return
        if not await hub.part_room(room, me.id):
            ctx.fail(f"you are not in {room}")
            return
        left = [room]
    else:
        left = await hub.part_all_rooms(me.id)
        if not left:
            ctx.fail("you are not in any room")
            return
    for room in left:
        await _tell(ctx, room, rooms.left_text(room, me.user), skip=False)


@command(
    "say",
    usage="say #ROOM TEXT...",
    help=f"Send TEXT to everyone in a room you are in (at most {MAX_SAY} bytes).",
)
async def say(ctx: Context, args: list[str]) -> None:
    """A line to a room you are in, capped in bytes, since each line is copied into every member's
    output.
    """
    if len(args) < 2:
        raise UsageError()
    room = args[0]
    if not _room_arg(ctx, room) or ctx.refuse_if_muted():
        return
    text = " ".join(args[1:])
    if len(text.encode("utf-8", "surrogateescape")) > MAX_SAY:
        ctx.fail(f"message too long (at most {MAX_SAY} bytes)")
        return
    me = ctx.session
    if room not in await ctx.server.hub.rooms_of(me.id):
        ctx.fail(f"you are not in {room}")
        return
    await _tell(ctx, room, rooms.said_text(room, me.user, careful(text)))


@command("rooms", usage="rooms", help="List the rooms: name, members, topic.")
async def rooms_(ctx: Context, args: list[str]) -> None:
    """The list of rooms, through ``write_all``, so a server with many rooms waits for a slow
    client rather than buffering the answer.
    """
    if args:
        raise UsageError()
    found = await ctx.server.hub.room_list()
    if not found:
        ctx.write("No rooms.\n")
        return
    nw = max(4, *(len(r.name) for r in found))
    lines = [f"{'ROOM':<{nw}} {'MEMBERS':>7}  TOPIC"]
    lines += [f"{r.name:<{nw}} {r.members:>7}  {r.topic}".rstrip() for r in found]
    await ctx.write_all(line + "\n" for line in lines)


@command(
    "topic",
    usage="topic #ROOM [TEXT...]",
    help=f"""
Show a room's topic, or set it (the room's creator or an admin; at most
{MAX_TOPIC} bytes). Members are told of a new topic.
""",
)
async def topic(ctx: Context, args: list[str]) -> None:
    """IRC's topic: anyone may read it; only the room's creator or an administrator sets it, so
    members cannot retitle each other's rooms. The text is sanitised once, when set.
    """
    if not args:
        raise UsageError()
    room, hub = args[0], ctx.server.hub
    if not _room_arg(ctx, room):
        return
    info = await hub.room(room)
    if info is None:
        ctx.fail(f"no such room: {room}")
        return
    if len(args) == 1:
        ctx.write(f"[{room}] topic: {info.topic}\n" if info.topic else f"{room} has no topic\n")
        return
    me = ctx.session
    if me.user != info.creator and not me.is_admin:
        ctx.fail("permission denied")
        return
    if ctx.refuse_if_muted():
        return
    text = " ".join(args[1:])
    if len(text.encode("utf-8", "surrogateescape")) > MAX_TOPIC:
        ctx.fail(f"topic too long (at most {MAX_TOPIC} bytes)")
        return
    shown = careful(text)
    if not await hub.set_room_topic(room, shown):
        ctx.fail(f"no such room: {room}")
        return
    await _tell(ctx, room, rooms.topic_text(room, me.user, shown))


async def member_ids(ctx: Context, room: str) -> set[Key] | None:
    """The sessions in ``room``, for ``who #room``; None (and a line said) when there are
    none to show."""
    if not _room_arg(ctx, room):
        return None
    members = await ctx.server.hub.room_members(room)
    if not members:
        ctx.fail(f"no such room: {room}")
        return None
    return {(m.node, m.session_id) for m in members}
