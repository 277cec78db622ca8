"""The server's settings, parsed once from the command line and then passed around frozen."""

from __future__ import annotations

import os
import re
import socket

from attrs import field, frozen

from shellserver.hub.cluster.url import RedisURL
from shellserver.store.pgurl import PostgresURL

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)[bB]?\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from ``10M``-style text, as ``--quota`` and ``--max-output`` take it."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"not a size: {text!r} (use bytes or a K/M/G suffix, e.g. 10M)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


#: Where the server keeps its data and the CLI looks for it, unless ``--data`` says otherwise.
DATA_ENV = "SHELLSERVER_DATA"
DEFAULT_DATA = "./shellserver-data"


def default_data() -> str:
    """``$SHELLSERVER_DATA``, else ``./shellserver-data``: read by server and CLI alike."""
    return os.environ.get(DATA_ENV) or DEFAULT_DATA


DEFAULT_MAX_CONNECTIONS = 20000


def default_hostname() -> str:
    """The short host name: it appears in prompts and banners, where a domain is noise."""
    return socket.gethostname().split(".")[0] or "localhost"


#: A node's name is part of file names in the shared data dir (``lock-NAME``,
#: ``control-NAME.sock``) and of keys in Redis: short, plain, one case.
_NODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NODE_RULE = "1 to 63 letters, digits, '-' or '_', starting with a letter or digit"


def parse_node(text: str) -> str:
    """A node name, lower-cased (host names are case-blind): ``Web1`` and ``web1`` are one node."""
    name = text.lower()
    if not _NODE.fullmatch(name):
        raise ValueError(f"not a node name: {text!r} ({NODE_RULE})")
    return name


@frozen
class Config:
    """Everything tunable about a running server; defaults are those docs/admin.md lists."""

    data: str = field(factory=default_data)
    #: ``--homes``: where the homes live, if not ``<data>/home`` (a shared filesystem).
    homes: str | None = None
    telnet: tuple[str, ...] = ("tcp:2323",)
    #: ``--ssh`` listeners; none unless given.
    ssh: tuple[str, ...] = ()
    control: str | None = None
    #: ``--web``: the browser terminal's listeners; empty = off.
    web: tuple[str, ...] = ()
    #: ``--web-origin``: origins and host names the page is served under (empty: our own).
    web_origins: tuple[str, ...] = ()
    #: ``--pages``: the personal pages' listeners (``/~USER/``); empty = off.
    pages: tuple[str, ...] = ()
    #: ``--metrics``: where Prometheus scrapes ``/metrics``; None = off.
    metrics: str | None = None
    hostname: str = field(factory=default_hostname)
    #: ``--cluster``: the Redis the nodes of a cluster share; None = one server alone.
    cluster: RedisURL | None = None
    #: ``--store``: the PostgreSQL the store lives in; None = the embedded SQLite file in the
    #: data dir.
    store: PostgresURL | None = None
    #: ``--store-wait``: seconds a store call waits for PostgreSQL before the store counts as
    #: down (a login then hears "Service temporarily unavailable"), and between two checks of
    #: the store (the ``shellserver_store_up`` gauge, the log's outage and its end).
    store_wait: float = 5.0
    #: ``--node``: this server's name in who --json and, clustered, in the per-node files of the
    #: data dir (``lock-NODE``, ``control-NODE.sock``); one server alone is named after its host.
    node: str = field(factory=default_hostname)
    registration: bool = True
    max_sessions: int = 10
    on_max: str = "refuse"
    idle_timeout: int = 3600
    #: ``--linger``: seconds a session whose connection was lost waits, detached (0: off).
    linger: int = 300
    motd: str | None = None
    quota: int = 10 * 1024**2
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: False when ``max_connections`` is the default, which the service lowers to what the
    #: descriptor hard limit allows (quietly: a plain start must not warn).
    max_connections_given: bool = False
    max_unauth: int = 200
    max_unauth_per_addr: int = 20
    cmd_burst: int = 40
    cmd_rate: float = 10.0
    max_output: int = 256 * 1024
    max_registrations: int = 5
    hash_cost: int = 14
    #: ``--require-otp``: who must have a second factor (``none``, ``admin``, ``all``).
    require_otp: str = "none"
    login_timeout: float = 60.0
    max_line: int = 4096
