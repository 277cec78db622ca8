"""Files in the user's sandboxed home: ls, cd, pwd, cat, mkdir, rmdir, rm, touch,
mv, cp, echo, quota.

Every command that touches the disk hands one job (shellserver.files.jobs) to
its home's queue on the I/O pool and then streams the job's text to the
session in chunks, waiting for room between them (``Context.drain``).
"""

from __future__ import annotations

import codecs
import math
import os
from collections.abc import Callable
from typing import Any

from shellserver.files import jobs, transfer
from shellserver.files.expand import Word
from shellserver.files.homefs import FsError, Home
from shellserver.files.sandbox import MAX_ENTRIES
from shellserver.files.tree import Tree
from shellserver.shell.commands.registry import CHUNK, Context, UsageError, command
from shellserver.text.sanitize import careful, careful_lines

#: Output goes to the session in pieces this big, each after the last has drained.
#: ``cat > FILE`` writes what was typed whenever this much has gathered.
TYPED_FLUSH = 16 * 1024


def home_of(ctx: Context) -> Home:
    """The session's own home: file commands reach the disk only through it, so the logged-in name,
    never a typed path, decides whose files a command touches.
    """
    return ctx.server.homes.home(ctx.session.user)


def options(ctx: Context, args: list[str], allowed: str) -> tuple[set[str], list[Word]]:
    """Single-letter flags (``-la``) before the operands; ``--`` ends them."""
    flags: set[str] = set()
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("--"):  # no long options here; coreutils names the whole word
            raise UsageError(f"unrecognized option '{careful(arg)}'")
        for letter in arg[1:]:
            if letter not in allowed:
                raise UsageError(f"invalid option -- '{careful(letter)}'")
            flags.add(letter)
    return flags, words(ctx, len(args) - i)


def words(ctx: Context, count: int) -> list[Word]:
    """The line's last ``count`` words, with their glob and ``~`` marks."""
    line = ctx.line
    first = len(line.words) - count
    tildes = line.tildes or (False,) * len(line.words)
    return [Word(line.words[i], line.globs[i], tildes[i]) for i in range(first, len(line.words))]


async def send(ctx: Context, pieces: list[str]) -> None:
    """Write text in chunks, each once the session's output has room."""
    await ctx.write_all(pieces)


async def run(ctx: Context, job: Callable[..., list[str]], *args: Any) -> None:
    """One job for this command line on the home's queue; its text to the session.

    Long text (a big ``ls -l``) is not held while the client reads it: the
    job leaves it in an unlinked file in ``<data>/tmp``, streamed from there.
    """
    home = home_of(ctx)
    try:
        result, failed = await home.run(jobs.spilled, job, ctx.session.cwd, ctx.name, *args)
    except FsError as e:
        ctx.fail(e.reason)  # the line as a whole (Argument list too long), or the home itself
        return
    if failed:
        ctx.status = 1
    if isinstance(result, str):
        await send(ctx, [result])
        return
    try:
        await stream(ctx, home, result, careful_text=False)
    except OSError as e:  # reading back the spilled text failed (a disk error): one line
        ctx.fail(e.strerror or "Input/output error")


async def stream(ctx: Context, home: Home, fd: int, careful_text: bool = True) -> None:
    """The bytes of ``fd`` as text, a chunk at a time as the client takes them; closes ``fd``.

    A character split between two chunks stays whole; a last line without a
    newline gets one, so the prompt starts on its own line.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    ended = True
    try:
        while ctx.terminal.connected:
            data = await home.io(os.read, fd, CHUNK)
            text = decoder.decode(data, final=not data)
            if careful_text:
                text = careful_lines(text)
            if text:
                ctx.write(text)
                ended = text.endswith("\n")
            if not data:
                break
            await ctx.drain()
    finally:
        await home.io(os.close, fd)
    if not ended:
        ctx.write("\n")


@command("pwd", usage="pwd", help="Print the current directory.")
def pwd(ctx: Context, args: list[str]) -> None:
    """The home shows as ``/home/USER``, the absolute path the sandbox accepts for it, so what pwd
    prints can be typed back into ``cd``. No disk work: the directory is the session's own string.
    """
    if args:
        raise UsageError()
    parts = [p for p in ctx.session.cwd.split("/") if p]
    ctx.write(careful("/".join(["/home", ctx.session.user, *parts])) + "\n")


@command("cd", usage="cd [DIR]", help="Change directory; alone, go home.")
async def cd(ctx: Context, args: list[str]) -> None:
    """The directory is checked on the I/O thread but kept in the session as a path, not an open
    descriptor: one removed behind the session is reported by the next command and ``cd ..`` still
    works, as in a real shell.
    """
    home = home_of(ctx)
    try:
        cwd, pieces = await home.run(jobs.cd, ctx.session.cwd, ctx.name, words(ctx, len(args)))
    except FsError as e:
        ctx.fail(e.reason)
        return
    if cwd is not None:
        ctx.session.cwd = cwd
    if jobs.failed(pieces):
        ctx.status = 1
    await send(ctx, pieces)


@command("ls", usage="ls [-l] [-a] [PATH...]", help="List directory contents.")
async def ls(ctx: Context, args: list[str]) -> None:
    """coreutils ls with -l and -a only; the columns fit the session's terminal width, as ls does
    on a tty. A long listing is spilled to a file and streamed back (``run``).
    """
    flags, operands = options(ctx, args, "la")
    width = ctx.session.width
    await run(ctx, jobs.ls, operands, flags, width, ctx.now())


@command("mkdir", usage="mkdir [-p] DIR...", help="Make directories (-p: parents too).")
async def mkdir(ctx: Context, args: list[str]) -> None:
    """coreutils mkdir with -p; the home's entry limit and nesting limit are checked on the I/O
    thread in the same step as the creation.
    """
    flags, operands = options(ctx, args, "p")
    if not operands:
        raise UsageError("missing operand")
    await run(ctx, jobs.mkdir, operands, "p" in flags)


@command("rmdir", usage="rmdir DIR...", help="Remove empty directories.")
async def rmdir(ctx: Context, args: list[str]) -> None:
    """coreutils rmdir: empty directories only, with coreutils' error words
    (tests/test_coreutils_errors.py holds them against the real program).
    """
    if not args:
        raise UsageError("missing operand")
    await run(ctx, jobs.rmdir, words(ctx, len(args)))


@command("rm", usage="rm [-r] [-f] FILE...", help="Remove files (-r: directories too).")
async def rm(ctx: Context, args: list[str]) -> None:
    """coreutils rm with -r/-R and -f; ``rm -f`` with nothing to remove succeeds in silence, as
    coreutils does, so habits carried over from scripts work. Symbolic links are removed, never
    followed.
    """
    flags, operands = options(ctx, args, "rRf")
    if not operands:
        if "f" in flags:
            return
        raise UsageError("missing operand")
    await run(ctx, jobs.rm, operands, flags)


@command("touch", usage="touch FILE...", help="Create empty files, or update their time.")
async def touch(ctx: Context, args: list[str]) -> None:
    """coreutils touch without options: create each file or renew its time; a failure names the
    file, as touch does.
    """
    if not args:
        raise UsageError("missing file operand")
    await run(ctx, jobs.touch, words(ctx, len(args)))


def _two_operands(args: list[str]) -> None:
    if not args:
        raise UsageError("missing file operand")
    if len(args) == 1:
        raise UsageError(f"missing destination file operand after '{careful(args[0])}'")


@command("mv", usage="mv SOURCE... DEST", help="Move or rename files and directories.")
async def mv(ctx: Context, args: list[str]) -> None:
    """coreutils mv inside the home: both paths resolve in the same sandbox, so a rename can never
    move anything out of it.
    """
    _two_operands(args)
    await run(ctx, transfer.mv, words(ctx, len(args)))


@command("cp", usage="cp [-r] SOURCE... DEST", help="Copy files (-r: directories too).")
async def cp(ctx: Context, args: list[str]) -> None:
    """coreutils cp, taking -r and -R alike as coreutils does; copies count against the quota and
    never follow a link planted in the destination.
    """
    flags, operands = options(ctx, args, "rR")
    _two_operands([w.text for w in operands])
    await run(ctx, transfer.cp, operands, bool(flags))


@command(
    "echo",
    usage="echo [TEXT...] [> FILE | >> FILE]",
    redirect=True,
    help="Print TEXT; with > FILE write it to a file, with >> FILE add it to the end.",
)
async def echo(ctx: Context, args: list[str]) -> None:
    """The shell's echo plus ``>`` and ``>>``. With no glob, no ``~`` and no redirection it writes
    at once with no job on the I/O pool, so the cheapest command stays as cheap as the prompt (the
    hostile tests' bystander measures with it).
    """
    line = ctx.line
    if line.redirect is None and not any(line.globs) and not any(line.tildes):
        ctx.write(careful(" ".join(args)) + "\n")  # nothing to expand: no file work at all
        return
    home = home_of(ctx)
    try:
        expanded = await home.run(jobs.words_of, ctx.session.cwd, ctx.name, words(ctx, len(args)))
    except FsError as e:
        ctx.fail(e.reason)
        return
    text = " ".join(expanded) + "\n"
    if line.redirect is None:
        await send(ctx, [careful(text[:-1]) + "\n"])
        return
    op, typed = line.redirect
    try:
        data = text.encode("utf-8", "surrogateescape")
        await home.run(jobs.write_file, ctx.session.cwd, typed, data, op == ">>")
    except FsError as e:
        ctx.fail(f"{careful(typed)}: {e.reason}")


@command(
    "cat",
    usage="cat FILE... | cat [FILE...] > FILE | cat >> FILE",
    redirect=True,
    help="Show files. With > FILE (or >> FILE) and no input file, the lines you type go\n"
    "into FILE until a line with only '.' or ^D.",
)
async def cat(ctx: Context, args: list[str]) -> None:
    """cat, and with ``>`` or ``>>`` the way to put text in a file, as there is no editor: with
    input files the copy is one job on the I/O thread within the quota; without, the lines typed
    next go in until ``.`` or ^D.
    """
    home = home_of(ctx)
    redirect = ctx.line.redirect
    if not args and redirect is None:
        raise UsageError()
    try:
        sources = await home.run(jobs.words_of, ctx.session.cwd, ctx.name, words(ctx, len(args)))
    except FsError as e:
        ctx.fail(e.reason)
        return
    if redirect is not None:
        op, target = redirect
        if sources:
            try:
                pieces = await home.run(
                    jobs.concatenate, ctx.session.cwd, sources, target, op == ">>"
                )
            except FsError as e:  # the home itself failed (see Home.run): one line, as for ls
                ctx.fail(e.reason)
                return
            await send(ctx, pieces)
        else:
            await _cat_typed(ctx, home, target, op == ">>")
        return
    for typed in sources:
        await _cat_one(ctx, home, typed)


async def _cat_one(ctx: Context, home: Home, typed: str) -> None:
    try:
        fd = await home.run(_open, ctx.session.cwd, typed)
    except FsError as e:
        ctx.fail(f"{careful(typed)}: {e.reason}")
        return
    try:
        await stream(ctx, home, fd)
    except OSError as e:
        ctx.fail(f"{careful(typed)}: {e.strerror}")


def _open(tree: Tree, cwd: str, typed: str) -> int:
    return tree.open_read(tree.resolve(cwd, typed))


async def _cat_typed(ctx: Context, home: Home, target: str, append: bool) -> None:
    """``cat > FILE``: the lines that follow, until ``.`` or ^D, within the quota.

    A connection that drops ends it as ^D would: the lines already entered
    are written, as cat on a terminal that hangs up has written them.
    """
    cwd = ctx.session.cwd
    try:
        await home.run(jobs.start_file, cwd, target, append)
    except FsError as e:
        ctx.fail(f"{careful(target)}: {e.reason}")
        return
    buffered: list[bytes] = []
    size = 0
    failed: FsError | None = None
    async for line in ctx.typed_lines():
        if failed is not None:
            continue  # keep reading to the end, so typed text never runs as commands
        data = (line + "\n").encode("utf-8", "surrogateescape")
        buffered.append(data)
        size += len(data)
        if size >= TYPED_FLUSH:
            failed = await _flush(home, cwd, target, buffered)
            buffered, size = [], 0
            if failed is not None:
                ctx.fail(f"{careful(target)}: {failed.reason}")
    if failed is None and buffered:
        failed = await _flush(home, cwd, target, buffered)
        if failed is not None:
            ctx.fail(f"{careful(target)}: {failed.reason}")


async def _flush(home: Home, cwd: str, target: str, data: list[bytes]) -> FsError | None:
    try:
        await home.run(jobs.write_file, cwd, target, b"".join(data), True)
    except FsError as e:
        return e
    return None


def human(n: int) -> str:
    """Sizes as ``ls -h`` shows them: ``512``, ``1.2K``, ``10M`` (rounded up)."""
    if n < 1024:
        return str(n)
    value = float(n)
    for unit in "KMGTPE":
        value /= 1024
        if value < 1024 or unit == "E":
            if value < 10:
                return f"{math.ceil(value * 10) / 10:.1f}{unit}"
            return f"{math.ceil(value)}{unit}"
    raise AssertionError("unreachable")


@command("quota", usage="quota", help="Show how much of your home's space and files you use.")
async def quota(ctx: Context, args: list[str]) -> None:
    """quota(1)'s question for a sandboxed home: bytes against the home's quota and entries
    against the per-home limit, from the tally every write keeps up to date (measured when
    the home is first used), not from a walk per call.
    """
    if args:
        raise UsageError()
    home = home_of(ctx)
    try:
        used = await home.run(Tree.used)
    except FsError as e:
        ctx.fail(e.reason)
        return
    limit = home.tree.quota
    percent = used.bytes * 100 // limit if limit else 0
    ctx.write(
        f"Disk quota for {ctx.session.user}: {human(used.bytes)} of {human(limit)} used "
        f"({percent}%), {used.entries} of {MAX_ENTRIES} files\n"
    )
