"""``make test-fast`` runs the tests not marked ``integration``: none of them may start a real
process. conftest.py marks those that do by their fixtures, and fails one that slipped through."""

from __future__ import annotations

from pathlib import Path

import pytest
from realserver import RealServer
from redisserver import RedisServer


def test_an_unmarked_test_may_not_start_the_real_server(tmp_path: Path) -> None:
    server = RealServer(tmp_path)
    with pytest.raises(pytest.fail.Exception, match="not marked integration"):
        server.start()
    assert server.proc is None  # refused before anything was started


def test_an_unmarked_test_may_not_start_redis(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    with pytest.raises(pytest.fail.Exception, match="not marked integration"):
        redis.start()
