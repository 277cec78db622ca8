"""The shell's commands. Importing this package registers them all in ``REGISTRY``."""

from shellserver.shell.commands import (
    account,
    admin,
    bans,
    files,
    info,
    mailbox,
    messaging,
    rooms,
    secondfactor,
)
from shellserver.shell.commands.registry import REGISTRY, Command, Context, Registry, UsageError

__all__ = [
    "REGISTRY",
    "Command",
    "Context",
    "Registry",
    "UsageError",
    "account",
    "admin",
    "bans",
    "files",
    "info",
    "mailbox",
    "messaging",
    "rooms",
    "secondfactor",
]
