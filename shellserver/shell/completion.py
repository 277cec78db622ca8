"""Tab completion for the shell: command names, online users, file names in the home.

The editor asks with the line up to the cursor; the answer is where the word
being completed starts and the words that may replace it. File names come
from the home on the I/O runner (never a directory listing on the reactor
thread), users from the hub, commands from the registry.
"""

from __future__ import annotations

import os
import re
import stat
from typing import TYPE_CHECKING

from shellserver.files.sandbox import FsError
from shellserver.files.tree import Tree

if TYPE_CHECKING:
    from shellserver.files.homefs import Homes
    from shellserver.hub.local import IHub
    from shellserver.hub.session import Session
    from shellserver.shell.commands.registry import Registry


#: Commands whose first argument is a user online now.
USER_COMMANDS = frozenset({"write", "finger", "kick", "ignore", "unignore", "mute", "unmute"})
#: Commands whose arguments are files in the home.
FILE_COMMANDS = frozenset(
    {"ls", "cd", "cat", "mkdir", "rmdir", "rm", "touch", "mv", "cp", "echo", "more", "less"}
)
#: Commands whose first argument is a room (``who`` only when the word starts with ``#``).
ROOM_COMMANDS = frozenset({"join", "part", "say", "topic", "who"})
MAX_CANDIDATES = 10_000
_SPECIAL = re.compile(r"([\s'\"\\*?\[\]>|;&$])")


def escape(name: str) -> str:
    """A name as it must be typed so the shell splits it back into itself."""
    return _SPECIAL.sub(r"\\\1", name)


async def complete(
    registry: Registry, hub: IHub, homes: Homes, session: Session, before: str
) -> tuple[int, list[str]]:
    """Where the word being completed starts and what may replace it: the editor needs both
    to redraw the line (the three sources are the only things Tab reads)."""
    start = before.rfind(" ") + 1
    while start > 1 and before[start - 2] == "\\":  # an escaped space is part of the word
        start = before.rfind(" ", 0, start - 2) + 1
    word = before[start:]
    words = before[:start].split()
    if not words:
        return start, [
            name
            for cmd in registry
            if not cmd.admin or session.is_admin
            for name in (cmd.name, *cmd.aliases)
        ]
    room_word = word.startswith("#") or (word == "" and words[0] != "who")
    if words[0] in ROOM_COMMANDS and len(words) == 1 and room_word:
        return start, hub.room_names()
    if words[0] in USER_COMMANDS and len(words) == 1:
        online = await hub.sessions()
        return start, sorted({s.user for s in online})
    if words[0] in FILE_COMMANDS or words[-1] in (">", ">>"):
        home = homes.home(session.user)
        cut = word.rfind("/") + 1
        folder, prefix = word[:cut], word[cut:]
        shown: list[str] = await home.run(_names, session.cwd, _unescape(folder))
        hide = not prefix.startswith(".")
        return start, [
            folder + escape(name[:-1]) + "/" if name.endswith("/") else folder + escape(name)
            for name in shown
            if not (hide and name.startswith("."))
        ]
    return start, []


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _names(tree: Tree, cwd: str, folder: str) -> list[str]:
    """Entries of ``folder`` (as typed), directories with a ``/``; [] when it cannot be read.

    Runs on the I/O pool in the home's queue, like every file command."""
    try:
        target = tree.path(tree.resolve(cwd, folder or "."))
        names: list[str] = []
        with os.scandir(target) as entries:
            for entry in entries:
                if len(names) >= MAX_CANDIDATES:
                    break
                is_dir = stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
                names.append(entry.name + "/" if is_dir else entry.name)
        return names
    except (FsError, OSError):
        return []
