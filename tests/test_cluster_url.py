"""`--cluster URL` (redis://, rediss://, unix://, with a password or an ACL user) and
`--node NAME`: parsed, or one line saying why that never shows the password."""

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
        (
            "redis://:pw@h:1/2",
            RedisURL("h", 1, 2, password="pw"),
            "redis://:***@h:1/2",
        ),
        (
            "redis://alice:p%40ss%3Aw@h/0",
            RedisURL("h", 6379, 0, user="alice", password="p@ss:w"),
            "redis://alice:***@h:6379/0",
        ),
        (
            "rediss://:pw@cache.example.org:6380/1?ca=/etc/ssl/redis-ca.pem",
            RedisURL(
                "cache.example.org", 6380, 1, "rediss", password="pw", ca="/etc/ssl/redis-ca.pem"
            ),
            "rediss://:***@cache.example.org:6380/1?ca=/etc/ssl/redis-ca.pem",
        ),
        ("rediss://h", RedisURL("h", 6379, 0, "rediss"), "rediss://h:6379/0"),
        (
            "unix:///run/redis/redis.sock?db=3",
            RedisURL("", 6379, 3, "unix", "/run/redis/redis.sock"),
            "unix:///run/redis/redis.sock?db=3",
        ),
        (
            "unix://:pw@/run/redis.sock",
            RedisURL("", 6379, 0, "unix", "/run/redis.sock", password="pw"),
            "unix://:***@/run/redis.sock?db=0",
        ),
        (
            "unix:///run/redis.sock?db=1&password=pw&user=bob",
            RedisURL("", 6379, 1, "unix", "/run/redis.sock", "bob", "pw"),
            "unix://bob:***@/run/redis.sock?db=1",
        ),
    ],
)
def test_good_urls(text: str, url: RedisURL, canonical: str | None) -> None:
    assert parse_redis_url(text) == url
    if canonical is not None:
        assert str(url) == canonical
    assert parse_redis_url(url.show(hidden=False)) == url  # the canonical form reads back
    assert repr(url) == f"RedisURL({str(url)!r})"
    if url.password is not None:
        assert url.password not in str(url) + repr(url)


def test_auth_arguments() -> None:
    assert parse_redis_url("redis://h").auth() == ()
    assert parse_redis_url("redis://:pw@h").auth() == ("pw",)
    assert parse_redis_url("redis://u:pw@h").auth() == ("u", "pw")


@pytest.mark.parametrize(
    "text, why",
    [
        ("127.0.0.1:6379", "not a Redis URL"),
        ("http://h/", "not a Redis URL: http://"),
        ("redis+tls://h/", "not a Redis URL: redis+tls://"),
        ("redis://", "no host"),
        ("redis://:6379/0", "no host"),
        ("redis://user@h:6379/0", "a user needs a password"),
        ("redis://:@h:6379/0", "an empty password"),
        ("redis://h:6379/0?timeout=1", "unknown option ?timeout="),
        ("redis://h:6379/0?ca=/x.pem", "?ca= is for TLS (rediss://)"),
        ("rediss://h:6379/0?ca=", "?ca= names no file"),
        ("rediss://h:6379/0?ca=a&ca=b", "given twice"),
        ("redis://h:6379/0#x", "fragment"),
        ("unix://host/run/redis.sock", "has no host"),
        ("unix://run/redis.sock", "has no host"),
        ("unix:///run/redis.sock?db=x", "database"),
        ("unix:///run/redis.sock?timeout=1", "unknown option"),
        ("unix:///run/redis.sock?user=bob", "a user needs a password"),
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


@pytest.mark.parametrize(
    "text",
    [
        "redis://:hunter2@h/x",
        "redis://bob:hunter2@h:0/0",
        "redis://hunter2@h/0",
        "rediss://:hunter2@h/0?nope=1",
        "redis://:hun/ter2@h/0",
        "redis://:hunter2@",
        "unix://:hunter2@/s?db=x",
        "unix:///s?password=hunter2&db=x",
        "http://:hunter2@h/",
    ],
)
def test_errors_never_show_the_password(text: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_redis_url(text)
    assert "hunter2" not in str(e.value)
    assert "ter2" not in str(e.value)


def test_node_names() -> None:
    assert parse_node("web1") == "web1"
    assert parse_node("Web-1_a") == "web-1_a"  # host names are case-blind, so are node names
    assert parse_node("x" * 63) == "x" * 63
    for bad in ("", "-a", "_a", "a.b", "a/b", "a b", "x" * 64, "é", "a\n", "..", "a:b"):
        with pytest.raises(ValueError, match="not a node name"):
            parse_node(bad)
