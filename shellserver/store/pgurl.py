"""``--store postgresql://…``: the URL of a PostgreSQL store, and how it is shown.

The URL is libpq's (checked by libpq's own parser), kept whole for connecting; everything
that is logged or shown uses the URL without its password. Apart from ``postgres.py`` so the
options can name the type without loading the driver.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from attrs import field, frozen

EXPECTED = "expected postgresql://USER[:PASS]@HOST[:PORT]/DB[?sslmode=...]"


@frozen
class PostgresURL:
    """A PostgreSQL store: the libpq connection string (secret: it may hold the password) and
    the URL as shown (without it). ``str()`` is the shown form, so it can be logged."""

    conninfo: str = field(repr=False)
    shown: str

    def __str__(self) -> str:
        """The URL without its password: what log lines, ``status`` and errors show."""
        return self.shown


def is_postgres_url(text: str) -> bool:
    """Whether ``--store``/``--to`` names PostgreSQL (rather than a mistyped scheme)."""
    return text.split("://", 1)[0].lower() in ("postgresql", "postgres")


def parse_postgres_url(text: str) -> PostgresURL:
    """``postgresql://USER[:PASS]@HOST[:PORT]/DB[?param=value…]``, checked by libpq's own
    parser; ValueError with one line saying what is wrong (never the password)."""
    if not is_postgres_url(text):
        raise ValueError(f"not a PostgreSQL URL ({EXPECTED})")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as e:
        raise ValueError(f"{e} ({EXPECTED})") from None
    shown = _without_password(parts)
    import psycopg  # here, not at the top: only a --store or --to URL needs libpq
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(text)
    except psycopg.Error as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{shown}: {first} ({EXPECTED})") from None
    if not params.get("dbname"):
        raise ValueError(f"{shown}: no database named ({EXPECTED})")
    if parts.fragment:
        raise ValueError(f"{shown}: a fragment is not supported ({EXPECTED})")
    return PostgresURL(text, shown)


def _without_password(parts: SplitResult) -> str:
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"
