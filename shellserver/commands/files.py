"""Files in the user's sandboxed home (SPEC §5): ls, cd, pwd, cat, mkdir, rmdir, rm, touch,
mv, cp, echo."""

from __future__ import annotations

import stat
from collections.abc import Callable
from fnmatch import fnmatchcase

from shellserver.commands.registry import Context, UsageError, command
from shellserver.homefs import EISDIR, ENOENT, ENOTDIR, FsError, Home
from shellserver.listing import columns, long_line
from shellserver.sanitize import careful, careful_lines

CAT_LIMIT = 1024 * 1024
MAX_EXPANSION = 10_000


def home_of(ctx: Context) -> Home:
    homes = ctx.server.homes
    if homes is None:
        raise FsError("home directories are not available on this server")
    return homes.home(ctx.session.user)


def options(ctx: Context, args: list[str], allowed: str) -> tuple[set[str], list[str]]:
    """Single-letter flags (``-la``) before the operands; ``--`` ends them."""
    flags: set[str] = set()
    rest = list(args)
    while rest and rest[0].startswith("-") and rest[0] != "-":
        arg = rest.pop(0)
        if arg == "--":
            break
        for letter in arg[1:]:
            if letter not in allowed:
                raise UsageError(f"invalid option -- '{careful(letter)}'")
            flags.add(letter)
    return flags, rest


def operands(ctx: Context, args: list[str]) -> list[str]:
    """Expand unquoted glob words inside the home, sorted; an unmatched pattern stays as typed."""
    globs = ctx.line.globs[len(ctx.line.words) - len(args) :]  # args are the line's last words
    home = home_of(ctx)
    out: list[str] = []
    for arg, glob in zip(args, globs, strict=True):
        out.extend(expand(home, ctx.session.cwd, arg) if glob else [arg])
    return out


def expand(home: Home, cwd: str, word: str) -> list[str]:
    segments = word.split("/")
    candidates = [""]
    for i, seg in enumerate(segments):
        sep = "" if i == len(segments) - 1 else "/"
        if not any(c in seg for c in "*?["):
            candidates = [c + seg + sep for c in candidates]
            continue
        found = []
        for cand in candidates:
            try:
                names = home.listdir(home.resolve(cwd, cand or "."))
            except FsError:
                continue
            found += [
                cand + n + sep
                for n in names
                if (seg.startswith(".") or not n.startswith(".")) and fnmatchcase(n, seg)
            ]
        candidates = found[:MAX_EXPANSION]
    return sorted(candidates) or [word]


def _complain(ctx: Context, template: str, typed: str, error: FsError) -> None:
    ctx.fail(template.format(careful(typed)) + f": {error.reason}")


@command("pwd", usage="pwd", help="Print the current directory.")
def pwd(ctx: Context, args: list[str]) -> None:
    if args:
        raise UsageError()
    ctx.write(careful(home_of(ctx).shown([p for p in ctx.session.cwd.split("/") if p])) + "\n")


@command("cd", usage="cd [DIR]", help="Change directory; alone, go home.")
def cd(ctx: Context, args: list[str]) -> None:
    args = operands(ctx, args)
    if len(args) > 1:
        raise UsageError("too many arguments")
    home = home_of(ctx)
    typed = args[0] if args else "~"
    try:
        parts = home.resolve(ctx.session.cwd, typed)
        if not stat.S_ISDIR(home.lstat(parts).st_mode):
            raise FsError(ENOTDIR)
    except FsError as e:
        _complain(ctx, "{}", typed, e)
        return
    ctx.session.cwd = "/".join(parts)


@command("ls", usage="ls [-l] [-a] [PATH...]", help="List directory contents.")
def ls(ctx: Context, args: list[str]) -> None:
    flags, paths = options(ctx, args, "la")
    home = home_of(ctx)
    now = ctx.now()
    width = ctx.session.width
    files: list[tuple[str, list[str]]] = []
    dirs: list[tuple[str, list[str]]] = []
    for typed in operands(ctx, paths) or ["."]:
        try:
            parts = home.resolve(ctx.session.cwd, typed)
            is_dir = stat.S_ISDIR(home.lstat(parts).st_mode)
        except FsError as e:
            _complain(ctx, "cannot access '{}'", typed, e)
            continue
        (dirs if is_dir else files).append((typed, parts))

    def render(entries: list[tuple[str, list[str]]]) -> str:
        if "l" not in flags:
            return columns([careful(name) for name, _ in entries], width)
        lines = []
        for name, parts in entries:
            try:
                lines.append(long_line(careful(name), home.lstat(parts), now))
            except (FsError, OSError):
                continue
        return "".join(line + "\n" for line in lines)

    out = [render(files)] if files else []
    for typed, parts in dirs:
        try:
            names = home.listdir(parts)
        except FsError as e:
            _complain(ctx, "cannot open directory '{}'", typed, e)
            continue
        if "a" in flags:
            names = [".", "..", *names]
        else:
            names = [n for n in names if not n.startswith(".")]
        block = render([(n, parts if n == "." else parts[:-1] if n == ".." else [*parts, n])
                        for n in names])  # fmt: skip
        if len(dirs) + len(files) > 1:
            block = f"{careful(typed)}:\n{block}"
        out.append(block)
    ctx.write("\n".join(out))


@command("cat", usage="cat FILE...", help="Show files (the first 1 MiB of each).")
async def cat(ctx: Context, args: list[str]) -> None:
    if not args:
        raise UsageError()
    home = home_of(ctx)
    for typed in operands(ctx, args):
        try:
            data = await home.read(home.resolve(ctx.session.cwd, typed), CAT_LIMIT)
        except FsError as e:
            _complain(ctx, "{}", typed, e)
            continue
        if len(data) > CAT_LIMIT:
            ctx.fail(f"{careful(typed)}: file too large to show (over 1 MiB)")
            continue
        text = careful_lines(data.decode("utf-8", "surrogateescape"))
        ctx.write(text if not text or text.endswith("\n") else text + "\n")


def _each(
    ctx: Context,
    paths: list[str],
    template: str,
    op: Callable[[Home, list[str]], None],
    quiet_missing: bool = False,
) -> None:
    """Apply ``op`` to each operand, complaining Unix-style about each one that fails."""
    home = home_of(ctx)
    for typed in operands(ctx, paths):
        try:
            op(home, home.resolve(ctx.session.cwd, typed))
        except FsError as e:
            if not (quiet_missing and e.reason == ENOENT):
                _complain(ctx, template, typed, e)


def _make_parents(home: Home, parts: list[str]) -> None:
    for i in range(1, len(parts) + 1):
        if not home.is_dir(parts[:i]):
            home.mkdir(parts[:i])


@command("mkdir", usage="mkdir [-p] DIR...", help="Make directories (-p: parents too).")
def mkdir(ctx: Context, args: list[str]) -> None:
    flags, paths = options(ctx, args, "p")
    if not paths:
        raise UsageError()
    op = _make_parents if "p" in flags else Home.mkdir
    _each(ctx, paths, "cannot create directory '{}'", op)


@command("rmdir", usage="rmdir DIR...", help="Remove empty directories.")
def rmdir(ctx: Context, args: list[str]) -> None:
    if not args:
        raise UsageError()
    _each(ctx, args, "failed to remove '{}'", Home.rmdir)


@command("rm", usage="rm [-r] [-f] FILE...", help="Remove files (-r: directories too).")
def rm(ctx: Context, args: list[str]) -> None:
    flags, paths = options(ctx, args, "rRf")
    if not paths and "f" not in flags:
        raise UsageError()
    recursive = bool(flags & {"r", "R"})
    _each(
        ctx,
        paths,
        "cannot remove '{}'",
        lambda home, parts: home.remove(parts, recursive),
        quiet_missing="f" in flags,
    )


@command("touch", usage="touch FILE...", help="Create empty files, or update their time.")
def touch(ctx: Context, args: list[str]) -> None:
    if not args:
        raise UsageError()
    _each(ctx, args, "cannot touch '{}'", Home.touch)


def _targets(
    ctx: Context, args: list[str]
) -> tuple[Home, list[tuple[str, list[str]]], list[str], bool] | None:
    """Sources and destination for mv/cp; whether the destination is a directory."""
    paths = operands(ctx, args)
    if len(paths) < 2:
        raise UsageError("missing destination file operand")
    home = home_of(ctx)
    *sources, dest = paths
    try:
        dest_parts = home.resolve(ctx.session.cwd, dest)
    except FsError as e:
        _complain(ctx, "cannot access '{}'", dest, e)
        return None
    into = home.is_dir(dest_parts)
    if len(sources) > 1 and not into:
        ctx.fail(f"target '{careful(dest)}' is not a directory")
        return None
    resolved = []
    for typed in sources:
        try:
            parts = home.resolve(ctx.session.cwd, typed)
            home.lstat(parts)
        except FsError as e:
            _complain(ctx, "cannot stat '{}'", typed, e)
            continue
        resolved.append((typed, parts))
    return home, resolved, dest_parts, into


@command("mv", usage="mv SOURCE... DEST", help="Move or rename files and directories.")
def mv(ctx: Context, args: list[str]) -> None:
    found = _targets(ctx, args)
    if found is None:
        return
    home, sources, dest, into = found
    for typed, parts in sources:
        target = [*dest, parts[-1]] if into and parts else dest
        try:
            home.rename(parts, target)
        except FsError as e:
            _complain(ctx, "cannot move '{}'", typed, e)


@command("cp", usage="cp SOURCE... DEST", help="Copy files.")
async def cp(ctx: Context, args: list[str]) -> None:
    found = _targets(ctx, args)
    if found is None:
        return
    home, sources, dest, into = found
    for typed, parts in sources:
        if home.is_dir(parts):
            ctx.fail(f"-r not supported; omitting directory '{careful(typed)}'")
            continue
        target = [*dest, parts[-1]] if into and parts else dest
        try:
            await home.copy(parts, target)
        except FsError as e:
            _complain(ctx, "cannot copy '{}'", typed, e)


@command(
    "echo",
    usage="echo [TEXT...] [> FILE | >> FILE]",
    redirect=True,
    help="Print TEXT; with > FILE write it to a file, with >> FILE add it to the end.",
)
async def echo(ctx: Context, args: list[str]) -> None:
    text = " ".join(operands(ctx, args)) + "\n"
    if ctx.line.redirect is None:
        ctx.write(careful(text[:-1]) + "\n")
        return
    op, typed = ctx.line.redirect
    home = home_of(ctx)
    try:
        parts = home.resolve(ctx.session.cwd, typed)
        if not parts:
            raise FsError(EISDIR)
        await home.write(parts, text.encode("utf-8", "surrogateescape"), append=op == ">>")
    except FsError as e:
        _complain(ctx, "{}", typed, e)
