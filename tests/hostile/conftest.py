"""The hostile suite's fixture: one real server per module (see arena.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import RealServer

from hostile.arena import Arena


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    work: Path = tmp_path_factory.mktemp("hostile")
    motd = work / "motd"
    motd.write_bytes(b"Welcome\x1b[2J\x1b]0;pwned\x07 \xe2\x80\xae \xc2\x9b31m \xff end\n")
    server = RealServer(work, "--motd", str(motd), "--max-registrations", "0").start()
    try:
        yield Arena(server)
    finally:
        server.stop()
