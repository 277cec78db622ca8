"""`--cluster redis://HOST[:PORT][/DB]` and `--node NAME`: parsed, or one line saying why."""

from __future__ import annotations

import pytest

from shellserver.app.config import parse_node
from shellserver.hub.cluster.url import RedisURL, parse_redis_url


@pytest.mark.parametrize(
    "text, url, canonical",
    [
        ("redis://127.0.0.1:6380/2", RedisURL("127.0.0.1", 6380, 2), "redis://127.0.0.1:6380/2"),
        ("redis://localhost", RedisURL("localhost", 6379, 0), "redis://localhost:6379/0"),
        ("redis://localhost/", RedisURL("localhost", 6379, 0), "redis://localhost:6379/0"),
        ("redis://cache.example.org/5", RedisURL("cache.example.org", 6379, 5), None),
        ("REDIS://h:1", RedisURL("h", 1, 0), "redis://h:1/0"),
        ("redis://[::1]", RedisURL("::1", 6379, 0), "redis://[::1]:6379/0"),
        ("redis://[::1]:7000/3", RedisURL("::1", 7000, 3), "redis://[::1]:7000/3"),
    ],
)
def test_good_urls(text: str, url: RedisURL, canonical: str | None) -> None:
    assert parse_redis_url(text) == url
    if canonical is not None:
        assert str(url) == canonical
    assert parse_redis_url(str(url)) == url  # the canonical form reads back the same


@pytest.mark.parametrize(
    "text, why",
    [
        ("127.0.0.1:6379", "not a Redis URL"),
        ("rediss://h:6379/0", "not a Redis URL: rediss://"),
        ("http://h/", "not a Redis URL: http://"),
        ("unix:///tmp/redis.sock", "not a Redis URL"),
        ("redis://", "no host"),
        ("redis://:6379/0", "no host"),
        ("redis://user:secret@h:6379/0", "user or password"),
        ("redis://h:6379/0?timeout=1", "query"),
        ("redis://h:6379/0#x", "query or fragment"),
        ("redis://h:0/0", "port"),
        ("redis://h:65536/0", "port"),
        ("redis://h:http/0", "port"),
        ("redis://h:/0", "port"),
        ("redis://h/x", "database"),
        ("redis://h/-1", "database"),
        ("redis://h/0/1", "database"),
        ("redis://ho st/0", "not a host name"),
        ("redis://-h/0", "not a host name"),
        ("redis://[::1/0", "IPv6"),
        ("redis://[nothex]/0", "IPv6"),
        ("redis://[::1]x/0", "after the address"),
        ("redis://::1/0", "IPv6 address goes in brackets, as redis://[::1]:6379/0"),
    ],
)
def test_bad_urls_are_one_line_saying_what_is_expected(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"redis://") as e:
        parse_redis_url(text)
    assert why in str(e.value)
    assert "\n" not in str(e.value)


def test_node_names() -> None:
    assert parse_node("web1") == "web1"
    assert parse_node("Web-1_a") == "web-1_a"  # host names are case-blind, so are node names
    assert parse_node("x" * 63) == "x" * 63
    for bad in ("", "-a", "_a", "a.b", "a/b", "a b", "x" * 64, "é", "a\n", "..", "a:b"):
        with pytest.raises(ValueError, match="not a node name"):
            parse_node(bad)
