"""``twistd shellserver`` / ``twist shellserver``: options and the service they make."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService
from twisted.internet.testing import MemoryReactor
from twisted.python import usage

from shellserver.app.config import (
    DATA_ENV,
    DEFAULT_DATA,
    DEFAULT_MAX_CONNECTIONS,
    Config,
    default_data,
    default_hostname,
    parse_node,
    parse_size,
)
from shellserver.hub.cluster.url import RedisURL, parse_redis_url
from shellserver.ops.proxyheader import listen_endpoint
from shellserver.store.passwords import MAX_COST, MIN_COST
from shellserver.store.pgurl import PostgresURL, parse_postgres_url


def _count(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise usage.UsageError(f"--{option} takes a whole number >= 0, not {text!r}")
        return value

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise usage.UsageError(
            f"--cmd-rate takes a number of commands per second >= 0, not {text!r}"
        )
    return value


def _store_wait(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise usage.UsageError(
            f"--store-wait takes a number of seconds from 0.1 to 3600, not {text!r}"
        )
    return value


def _size(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return parse_size(text)
        except ValueError as e:
            raise usage.UsageError(f"--{option}: {e}") from None

    return parse


def _choice(option: str, *choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise usage.UsageError(f"--{option} takes {' or '.join(choices)}, not {text!r}")
        return text

    return parse


def _endpoint(option: str, text: str) -> str:
    try:
        listen_endpoint(MemoryReactor(), text)
    except Exception as e:
        raise usage.UsageError(f"--{option}: not a listen endpoint: {text!r} ({e})") from None
    return text


def _cluster(text: str) -> RedisURL:
    """The URL, and for ``rediss://…?ca=FILE`` the CA file read now: a file that is missing
    or holds no certificate is a usage error at start, not an outage after it."""
    from shellserver.hub.cluster.link import tls_options

    try:
        url = parse_redis_url(text)
        if url.tls:
            tls_options(url)
    except ValueError as e:
        raise usage.UsageError(f"--cluster: {e}") from None
    return url


def _store(text: str) -> PostgresURL:
    try:
        return parse_postgres_url(text)
    except ValueError as e:
        raise usage.UsageError(f"--store: {e}") from None


def _node(text: str) -> str:
    try:
        return parse_node(text)
    except ValueError as e:
        raise usage.UsageError(f"--node: {e}") from None


def _hash_cost(text: str) -> int:
    cost = _count("hash-cost")(text)
    if not MIN_COST <= cost <= MAX_COST:
        raise usage.UsageError(f"--hash-cost takes {MIN_COST} to {MAX_COST}, not {text!r}")
    return cost


class Options(usage.Options):
    """Every option of docs/admin.md, checked as it is parsed so a bad value is one line
    naming it."""

    synopsis = "[options]"
    longdesc = "A multi-user shell server: telnet in, see who is online, write, wall."

    optParameters: list[list[Any]] = [
        [
            "data",
            None,
            DEFAULT_DATA,
            f"Data directory (store, homes); created 0700. ${DATA_ENV} sets the default.",
        ],
        [
            "homes",
            None,
            None,
            "Where the homes live, if not <data>/home: a shared filesystem with working flock "
            "for nodes on several machines; created 0700.",
        ],
        [
            "control",
            None,
            None,
            "Admin control endpoint [default: unix:<data>/control.sock:mode=600; "
            "clustered: unix:<data>/control-<node>.sock:mode=600].",
        ],
        [
            "cluster",
            None,
            None,
            "Join a cluster of nodes through Redis: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], "
            "rediss://…[?ca=FILE] (TLS) or unix:///PATH?db=N [off].",
            _cluster,
        ],
        [
            "store",
            None,
            None,
            "Keep the store in PostgreSQL, shared by nodes on many machines: "
            "postgresql://USER[:PASS]@HOST[:PORT]/DB[?sslmode=...] "
            "[default: the embedded SQLite file in the data dir].",
            _store,
        ],
        [
            "store-wait",
            None,
            5.0,
            "Seconds a store call waits for PostgreSQL before the store counts as down (a "
            "login is then refused), and between two checks of the store.",
            _store_wait,
        ],
        [
            "node",
            None,
            None,
            "This node's name in a cluster [default: the short host name].",
            _node,
        ],
        [
            "metrics",
            None,
            None,
            "Prometheus text at /metrics, e.g. tcp:9323 (on loopback unless interface= is "
            "given) [off].",
        ],
        [
            "hostname",
            None,
            None,
            "Host name shown in prompts and banners [default: the short host name].",
        ],
        [
            "registration",
            None,
            "open",
            "open|closed: may 'new' create accounts?",
            _choice("registration", "open", "closed"),
        ],
        ["max-sessions", None, 10, "Sessions per user (0 = unlimited).", _count("max-sessions")],
        [
            "on-max",
            None,
            "refuse",
            "refuse|replace: a login over --max-sessions.",
            _choice("on-max", "refuse", "replace"),
        ],
        [
            "idle-timeout",
            None,
            3600,
            "Seconds before idle sessions are logged out (0 = off).",
            _count("idle-timeout"),
        ],
        [
            "linger",
            None,
            300,
            "Seconds a session whose connection was lost stays detached, resumable at the "
            "user's next login (0 = off: it ends with its connection).",
            _count("linger"),
        ],
        ["motd", None, None, "File shown after login."],
        ["quota", None, "10M", "Per-user home quota (bytes, or K/M/G).", _size("quota")],
        [
            "max-connections",
            None,
            None,
            "All connections (0 = unlimited) [default: 20000, or fewer if the file "
            "descriptor hard limit allows fewer].",
            _count("max-connections"),
        ],
        [
            "max-unauth",
            None,
            200,
            "Connections not yet logged in (0 = unlimited).",
            _count("max-unauth"),
        ],
        [
            "max-unauth-per-addr",
            None,
            20,
            "The same, per client address (0 = unlimited).",
            _count("max-unauth-per-addr"),
        ],
        ["cmd-burst", None, 40, "Command lines allowed at once.", _count("cmd-burst")],
        ["cmd-rate", None, 10.0, "Command lines per second after the burst (0 = off).", _rate],
        [
            "max-output",
            None,
            "256K",
            "Pending output per session before messages are dropped.",
            _size("max-output"),
        ],
        [
            "max-registrations",
            None,
            5,
            "Accounts made with 'new' per client address per hour (0 = unlimited).",
            _count("max-registrations"),
        ],
        ["hash-cost", None, 14, "scrypt cost (log2 n) for new password hashes.", _hash_cost],
        [
            "require-otp",
            None,
            "none",
            "none|admin|all: who must enable a second factor (TOTP) at their next login.",
            _choice("require-otp", "none", "admin", "all"),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["telnet"] = []
        self["ssh"] = []
        self["web"] = []
        self["web-origin"] = []
        self["pages"] = []
        # Read when parsing, not at import, so --help shows the default in force.
        self["data"] = self.defaults["data"] = default_data()

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Under twistd/twist, a bad option is one line and exit 1, not 40 lines of usage.

        Both runners print their whole usage text before the error (twistd: then
        exit 1; twist: exit 64); an operator needs the one line naming the option. Parsed
        on its own (no parent runner), the UsageError is raised as usual.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            runner = "twist" if type(self.parent).__name__ == "TwistOptions" else "twistd"
            print(
                f"{runner} shellserver: {e} (see '{runner} shellserver --help')", file=sys.stderr
            )
            raise SystemExit(1) from None

    def opt_telnet(self, endpoint: str) -> None:
        """Telnet listen endpoint, e.g. tcp:2323, or haproxy:tcp:2323 behind a load balancer
        sending the PROXY header (repeatable) [default: tcp:2323]."""
        self["telnet"].append(_endpoint("telnet", endpoint))

    def opt_ssh(self, endpoint: str) -> None:
        """SSH listen endpoint, e.g. tcp:2222, or haproxy:tcp:2222 behind a load balancer
        (repeatable) [default: none]."""
        self["ssh"].append(_endpoint("ssh", endpoint))

    def opt_web(self, endpoint: str) -> None:
        """Browser terminal (page and WebSocket), e.g. tcp:8080, or haproxy:tcp:8080 behind a
        load balancer (repeatable) [off]."""
        self["web"].append(_endpoint("web", endpoint))

    def opt_web_origin(self, url: str) -> None:
        """Origin or host name the page is served under, e.g. https://shell.example.org
        (repeatable) [default: the listener's address and this machine's host name]."""
        from shellserver.wires.web.hosts import parse_web_origin

        try:
            parse_web_origin(url)
        except ValueError as e:
            raise usage.UsageError(f"--web-origin: {e}") from None
        self["web-origin"].append(url)

    def opt_pages(self, endpoint: str) -> None:
        """Personal pages: each user's ~/public_html at /~USER/, e.g. tcp:8081; never the
        --web endpoint (repeatable) [off]."""
        self["pages"].append(_endpoint("pages", endpoint))

    def postOptions(self) -> None:
        """Checks that need all the options at once, then the frozen ``Config``."""
        from shellserver.wires.pages.endpoints import shared_with_web

        shared = shared_with_web(tuple(self["pages"]), tuple(self["web"]))
        if shared is not None:
            raise usage.UsageError(
                f"--pages {shared[0]} and --web {shared[1]} share an address; personal pages "
                "need an origin of their own (another port or address), so a user's page can "
                "never script the browser terminal"
            )
        if self["control"] is not None:
            _endpoint("control", self["control"])
        if self["metrics"] is not None:
            _endpoint("metrics", self["metrics"])
        if isinstance(self["quota"], str):
            self["quota"] = parse_size(self["quota"])
        if isinstance(self["max-output"], str):
            self["max-output"] = parse_size(self["max-output"])
        node = self["node"]
        if node is None and self["cluster"] is None:
            node = default_hostname()  # alone, the name is only shown (who --json), as it is
        elif node is None:
            try:
                node = parse_node(default_hostname())
            except ValueError:
                raise usage.UsageError(
                    f"the host name {default_hostname()!r} is not a node name; give --node NAME"
                ) from None
        self.config = Config(
            data=self["data"],
            homes=self["homes"],
            cluster=self["cluster"],
            store=self["store"],
            store_wait=float(self["store-wait"]),
            node=node,
            telnet=tuple(self["telnet"]) or ("tcp:2323",),
            ssh=tuple(self["ssh"]),
            control=self["control"],
            web=tuple(self["web"]),
            web_origins=tuple(self["web-origin"]),
            pages=tuple(self["pages"]),
            metrics=self["metrics"],
            hostname=self["hostname"] or default_hostname(),
            registration=self["registration"] == "open",
            max_sessions=self["max-sessions"],
            on_max=self["on-max"],
            idle_timeout=self["idle-timeout"],
            linger=self["linger"],
            motd=self["motd"],
            quota=self["quota"],
            max_connections=(
                DEFAULT_MAX_CONNECTIONS
                if self["max-connections"] is None
                else self["max-connections"]
            ),
            max_connections_given=self["max-connections"] is not None,
            max_unauth=self["max-unauth"],
            max_unauth_per_addr=self["max-unauth-per-addr"],
            cmd_burst=self["cmd-burst"],
            cmd_rate=float(self["cmd-rate"]),
            max_output=self["max-output"],
            max_registrations=self["max-registrations"],
            hash_cost=self["hash-cost"],
            require_otp=self["require-otp"],
        )


def makeService(options: Options) -> IService:
    """twistd's entry: everything that can fail at start-up fails here, before the reactor runs."""
    from twisted.internet import reactor

    from shellserver.app.service import ShellService

    service = ShellService(options.config, reactor)
    service.prepare()
    return service
