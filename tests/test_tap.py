"""Command-line options become a Config; bad values are usage errors naming the option."""

from __future__ import annotations

import pytest
from twisted.python.usage import UsageError

from shellserver.app.tap import Options


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults_follow_the_spec() -> None:
    cfg = parse().config
    assert cfg.telnet == ("tcp:2323",)
    assert cfg.data == "./shellserver-data"
    assert cfg.registration and cfg.on_max == "refuse" and cfg.max_sessions == 10
    assert (cfg.max_unauth, cfg.max_unauth_per_addr, cfg.max_registrations) == (200, 20, 5)
    assert (cfg.idle_timeout, cfg.quota, cfg.max_output) == (3600, 10 * 1024**2, 256 * 1024)
    assert (cfg.cmd_burst, cfg.cmd_rate, cfg.hash_cost) == (40, 10.0, 14)
    assert cfg.control is None and cfg.hostname
    assert cfg.ssh == ()
    assert cfg.metrics is None  # off unless asked for


def test_metrics_endpoint() -> None:
    assert parse("--metrics", "tcp:9100:interface=127.0.0.1").config.metrics == (
        "tcp:9100:interface=127.0.0.1"
    )


def test_values_are_parsed() -> None:
    cfg = parse(
        "--telnet", "tcp:1", "--telnet", "unix:/tmp/x.sock", "--registration", "closed",
        "--max-sessions", "2", "--on-max", "replace", "--idle-timeout", "0", "--quota", "5K",
        "--max-output", "1M", "--cmd-rate", "0.5", "--hash-cost", "4", "--hostname", "box",
        "--ssh", "tcp:2222", "--ssh", "tcp6:2222", "--max-registrations", "0",
    ).config  # fmt: skip
    assert cfg.ssh == ("tcp:2222", "tcp6:2222")
    assert cfg.telnet == ("tcp:1", "unix:/tmp/x.sock")
    assert not cfg.registration and cfg.max_sessions == 2 and cfg.on_max == "replace"
    assert (cfg.idle_timeout, cfg.quota, cfg.max_output) == (0, 5120, 1024**2)
    assert (cfg.cmd_rate, cfg.hash_cost, cfg.hostname) == (0.5, 4, "box")
    assert cfg.max_registrations == 0


@pytest.mark.parametrize(
    "args, option",
    [
        (["--max-sessions", "-1"], "--max-sessions"),
        (["--max-registrations", "x"], "--max-registrations"),
        (["--idle-timeout", "soon"], "--idle-timeout"),
        (["--on-max", "kill"], "--on-max"),
        (["--registration", "yes"], "--registration"),
        (["--quota", "10X"], "--quota"),
        (["--max-output", ""], "--max-output"),
        (["--cmd-rate", "nan"], "--cmd-rate"),
        (["--hash-cost", "0"], "--hash-cost"),
        (["--telnet", "nonsense:1"], "--telnet"),
        (["--ssh", "tcp:notaport"], "--ssh"),
        (["--control", "tcp:notaport"], "--control"),
        (["--metrics", "http://x"], "--metrics"),
    ],
)
def test_bad_values(args: list[str], option: str) -> None:
    with pytest.raises(UsageError, match=option):
        parse(*args)


def test_shellserver_data_sets_the_default_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELLSERVER_DATA", "/srv/shell")
    assert parse().config.data == "/srv/shell"
    assert parse("--data", "/elsewhere").config.data == "/elsewhere"
    assert "[default: /srv/shell]" in " ".join(str(Options()).split())  # --help shows it
    monkeypatch.delenv("SHELLSERVER_DATA")
    assert parse().config.data == "./shellserver-data"


def test_cluster_and_node() -> None:
    from shellserver.hub.cluster.url import RedisURL

    cfg = parse().config
    assert cfg.cluster is None and cfg.node  # alone, named after the host
    cfg = parse("--cluster", "redis://127.0.0.1:6390/1", "--node", "Web1").config
    assert cfg.cluster == RedisURL("127.0.0.1", 6390, 1)
    assert cfg.node == "web1"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cluster", "localhost:6379"], "--cluster: not a Redis URL"),
        (["--cluster", "redis://u@h/0"], "--cluster: a user needs a password"),
        (["--cluster", "rediss://h/0?ca=/nonexistent/ca.pem"], "--cluster: cannot read the CA"),
        (["--cluster", "redis://h:99999"], "--cluster: the port"),
        (["--node", "a/b"], "--node: not a node name: 'a/b'"),
        (["--node", ""], "--node: not a node name"),
    ],
)
def test_bad_cluster_and_node(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(*args)


def test_cluster_password_is_kept_but_never_shown() -> None:
    cfg = parse("--cluster", "redis://node:hunter2@h:6390/1").config
    assert cfg.cluster is not None and cfg.cluster.auth() == ("node", "hunter2")
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.cluster)
    with pytest.raises(UsageError) as e:
        parse("--cluster", "redis://node:hunter2@h:99999/1")
    assert "hunter2" not in str(e.value) and "node:***@h" in str(e.value)


def test_a_host_name_that_is_no_node_name_needs_node_when_clustered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shellserver.app.tap.default_hostname", lambda: "my_box.")
    assert parse().config.node == "my_box."  # alone, the name is only shown
    monkeypatch.setattr("shellserver.app.tap.default_hostname", lambda: "Box")
    assert parse().config.node == "Box"
    assert parse("--cluster", "redis://h").config.node == "box"  # clustered: one case
    monkeypatch.setattr("shellserver.app.tap.default_hostname", lambda: "my_box.")
    with pytest.raises(UsageError, match=r"the host name 'my_box\.' is not a node name"):
        parse("--cluster", "redis://h")
    assert parse("--cluster", "redis://h", "--node", "b").config.node == "b"
