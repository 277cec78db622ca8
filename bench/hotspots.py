"""Summarise a py-spy ``--format raw`` profile: the functions with the most samples.

Usage: ``python bench/hotspots.py PROFILE.txt [--top 25] [--under FUNC]``. ``--under``
keeps only the stacks that pass through FUNC (e.g. ``lineReceived``), so a phase's
hot spots can be read apart from the rest.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame)
    if m is None:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def main(argv: list[str] | None = None) -> int:
    """Print the functions with the most samples, inclusive and own, so a profile of a whole run
    reads as a short list."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--under", default=None)
    args = p.parse_args(argv)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_name(f) for f in stack.split(";")]
        if args.under and not any(f.startswith(args.under + " ") for f in frames):
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    print(f"{total} samples")
    print("\ninclusive:")
    for f, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("\nself:")
    for f, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
