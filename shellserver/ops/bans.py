"""Bans: who may not connect or log in, kept in memory so checking one costs no store trip.

A ban names a user, an address (IPv4 or IPv6), a network (CIDR) or an SSH key
fingerprint (``SHA256:…``), for a time or for good. This module holds what a
ban is and how a target and a duration are read (pure functions, the clock
passed in), and :class:`BanList`, the server's in-memory copy that admission
asks for every new connection and the session start for every login.

Matching an address against many networks costs one dict lookup per prefix
length in use (at most 33 for IPv4, 129 for IPv6), whatever the number of
bans: networks are kept by (family, prefix length) and keyed by their first
address as an integer, so a peer's address masked to each length in use is
looked up directly. The list is bounded (:data:`MAX_BANS`), so neither the
store nor this copy grows without end.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import Any

from attrs import define, field, frozen

from shellserver.text.timefmt import format_login_time

#: Bans kept at most (the store refuses more): a bound on memory and on ``bans``' output.
MAX_BANS = 10_000
#: Characters of a ban's reason kept.
MAX_REASON = 200
#: The longest timed ban: ten years (longer is ``perm``).
MAX_DURATION = 3650 * 86400

USER, ADDRESS, NETWORK, KEY = "user", "address", "network", "key"
KINDS = (USER, ADDRESS, NETWORK, KEY)

DURATION_HELP = "use 90s, 30m, 12h, 7d or perm"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]{1,9})([smhd])")
#: What looks like an attempt at a duration (a digit first), so a typo is an error, not a reason.
_DURATION_LIKE = re.compile(r"[0-9]")
#: OpenSSH's SHA256 fingerprint: 32 bytes in unpadded base64.
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
#: Digits and dots: meant as an IPv4 address, so a malformed one is an error, not a user name.
_ADDRESS_LIKE = re.compile(r"[0-9.]+")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BadBan(ValueError):
    """A target or duration that cannot be a ban; its text is what the admin is told."""


def parse_duration(text: str) -> float | None:
    """``90s``, ``30m``, ``12h``, ``7d`` as seconds; ``perm`` as None (no end)."""
    if text == "perm":
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        raise BadBan(f"invalid duration '{text}' ({DURATION_HELP})")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise BadBan(f"invalid duration '{text}': it must be longer than 0")
    if seconds > MAX_DURATION:
        raise BadBan(f"invalid duration '{text}': at most 3650d (or perm)")
    return float(seconds)


def looks_like_duration(word: str) -> bool:
    """The word after the target is a duration if it starts with a digit or is ``perm``;
    anything else starts the reason (``ban bob spam`` is a permanent ban for spam)."""
    return word == "perm" or _DURATION_LIKE.match(word) is not None


def _address(text: str) -> Address:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:203.0.113.7 is 203.0.113.7
    return address


def parse_target(text: str) -> tuple[str, str]:
    """(kind, canonical target): a network keeps its first address (``203.0.113.7/24`` is
    ``203.0.113.0/24``), a one-address network is an address, an address is written as
    Python's ``ipaddress`` writes it. Anything else is a user name for the caller to check."""
    if text.startswith("SHA256:"):
        if _FINGERPRINT.fullmatch(text) is None:
            raise BadBan(f"invalid key fingerprint '{text}' (expected SHA256: and 43 characters)")
        return KEY, text
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise BadBan(f"invalid network '{text}'") from None
        if network.num_addresses == 1:
            return ADDRESS, str(_address(str(network.network_address)))
        return NETWORK, str(network)
    if "%" in text:  # fe80::1%eth0: a zone is this machine's, not a client's
        raise BadBan(f"invalid address '{text}' (no zone index)")
    if ":" in text or _ADDRESS_LIKE.fullmatch(text):
        try:
            return ADDRESS, str(_address(text))
        except ValueError:
            raise BadBan(f"invalid address '{text}'") from None
    return USER, text


def peer_address(peer: str) -> Address | None:
    """A connection's peer as an address (None for a unix socket's "local" and the like)."""
    try:
        return _address(peer)
    except ValueError:
        return None


@frozen
class Ban:
    """One ban as the store keeps it: plain data, so it travels to other nodes as JSON."""

    target: str
    kind: str
    by: str
    created: float
    #: None: permanent.
    expires: float | None
    reason: str = ""

    def active(self, now: float) -> bool:
        """A timed ban ends by itself: from its end on it is ignored (and pruned)."""
        return self.expires is None or now < self.expires

    def until(self) -> str:
        """``until Thu Dec 10 14:02``, or ``permanently``."""
        if self.expires is None:
            return "permanently"
        return f"until {format_login_time(self.expires)}"

    def _why(self) -> str:
        return f" ({self.reason})" if self.reason else ""

    def answer(self) -> str:
        """``banned 203.0.113.0/24 until Thu Dec 10 14:02 (spam)``: the ban command's answer,
        and what a session it ends is told."""
        return f"banned {self.target} {self.until()}{self._why()}"

    def address_refusal(self) -> str:
        """What a connection from a banned address is told before it is closed."""
        return f"Your address is banned {self.until()}."

    def login_refusal(self) -> str:
        """What a banned user (or a login with a banned key) is told instead of a session."""
        return f"Login refused: banned {self.until()}{self._why()}"

    def network(self) -> Network | None:
        """The addresses an address or network ban covers; None for a user or key ban."""
        if self.kind not in (ADDRESS, NETWORK):
            return None
        return ipaddress.ip_network(self.target)

    def matches(self, user: str, peer: str, key: str) -> bool:
        """Does this ban cover a session of ``user`` from ``peer``, logged in with ``key``
        (its fingerprint, "" for a password)?"""
        if self.kind == USER:
            return user == self.target
        if self.kind == KEY:
            return bool(key) and key == self.target
        address = peer_address(peer)
        network = self.network()
        return address is not None and network is not None and address in network

    def to_fields(self) -> dict[str, Any]:
        """As JSON fields (another node's announcement)."""
        return {
            "target": self.target,
            "kind": self.kind,
            "by": self.by,
            "created": self.created,
            "expires": self.expires,
            "reason": self.reason,
        }

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Ban:
        """The inverse of :meth:`to_fields`; a malformed one raises ValueError."""
        try:
            expires = fields["expires"]
            ban = cls(
                target=str(fields["target"]),
                kind=str(fields["kind"]),
                by=str(fields["by"]),
                created=float(fields["created"]),
                expires=None if expires is None else float(expires),
                reason=str(fields.get("reason", "")),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed ban: {e}") from None
        if ban.kind not in KINDS:
            raise ValueError(f"malformed ban: kind {ban.kind!r}")
        return ban


def make_ban(target: str, duration: str | None, reason: str, by: str, now: float) -> Ban:
    """A ban from what an admin typed (the target already checked by the caller for a user
    name): BadBan says what is wrong."""
    kind, canonical = parse_target(target)
    seconds = parse_duration(duration) if duration is not None else None
    reason = " ".join(reason.split())[:MAX_REASON]
    return Ban(canonical, kind, by, now, None if seconds is None else now + seconds, reason)


@define
class BanIndex:
    """Every ban, indexed for the checks: users and keys by name, networks by (IP version,
    prefix length) and first address, with the prefix lengths in use, longest first."""

    users: dict[str, Ban] = field(factory=dict)
    keys: dict[str, Ban] = field(factory=dict)
    nets: dict[tuple[int, int], dict[int, Ban]] = field(factory=dict)
    #: Per IP version, the prefix lengths with at least one ban, longest first.
    lengths: dict[int, list[int]] = field(factory=dict)
    #: Stored bans that could not be indexed (malformed rows), left out.
    skipped: int = 0

    @classmethod
    def of(cls, bans: Iterable[Ban]) -> BanIndex:
        """Built in one pass (on the store's thread when loaded from the store). A row no ban
        could have made (a store edited by hand) is left out rather than stop the server."""
        index = cls()
        for ban in bans:
            try:
                index.add(ban)
            except ValueError:
                index.skipped += 1
        return index

    def get(self, target: str) -> Ban | None:
        """The ban of ``target`` (canonical), if any."""
        found = self.users.get(target) or self.keys.get(target)
        if found is not None or ("." not in target and ":" not in target):
            return found
        try:
            network = ipaddress.ip_network(target)
        except ValueError:
            return None
        table = self.nets.get((network.version, network.prefixlen), {})
        return table.get(int(network.network_address))

    def bans(self) -> Iterator[Ban]:
        """Every ban in the index."""
        yield from self.users.values()
        yield from self.keys.values()
        for table in self.nets.values():
            yield from table.values()

    def add(self, ban: Ban) -> None:
        """Put ``ban`` in (replacing a ban of the same target)."""
        self.remove(ban.target)
        if ban.kind == USER:
            self.users[ban.target] = ban
        elif ban.kind == KEY:
            self.keys[ban.target] = ban
        else:
            network = ipaddress.ip_network(ban.target)
            slot = (network.version, network.prefixlen)
            table = self.nets.get(slot)
            if table is None:
                table = self.nets[slot] = {}
                lengths = self.lengths.setdefault(network.version, [])
                lengths.append(network.prefixlen)
                lengths.sort(reverse=True)
            table[int(network.network_address)] = ban

    def remove(self, target: str) -> Ban | None:
        """Take the ban of ``target`` (canonical) out; the ban, or None."""
        found = self.users.pop(target, None) or self.keys.pop(target, None)
        if found is not None or ("." not in target and ":" not in target):
            return found
        try:
            network = ipaddress.ip_network(target)
        except ValueError:
            return None
        slot = (network.version, network.prefixlen)
        table = self.nets.get(slot)
        if table is None:
            return None
        found = table.pop(int(network.network_address), None)
        if not table:
            del self.nets[slot]
            self.lengths[network.version].remove(network.prefixlen)
        return found

    def address(self, address: Address, now: float) -> Ban | None:
        """The most specific active ban covering ``address``: one lookup per prefix length."""
        lengths = self.lengths.get(address.version)
        if not lengths:
            return None
        bits = address.max_prefixlen
        value = int(address)
        nets, version = self.nets, address.version
        for length in lengths:
            masked = value >> (bits - length) << (bits - length)
            ban = nets[version, length].get(masked)
            if ban is not None and ban.active(now):
                return ban
        return None

    def __len__(self) -> int:
        return len(self.users) + len(self.keys) + sum(len(t) for t in self.nets.values())


@define
class BanList:
    """The server's copy of the bans: replaced whole when loaded from the store, changed in
    place when a ban is made here or heard from another node. Admission asks it about every
    new connection, the session start about every login; neither waits for the store."""

    index: BanIndex = field(factory=BanIndex)

    def replace(self, index: BanIndex) -> None:
        """The store's bans, loaded (a new index, so a check never sees half a load)."""
        self.index = index

    def add(self, ban: Ban) -> None:
        """A ban made here or on another node, in effect at once."""
        self.index.add(ban)

    def remove(self, target: str) -> None:
        """An unban, in effect at once."""
        self.index.remove(target)

    def address(self, peer: str, now: float) -> Ban | None:
        """The active ban covering a connection's peer, if any (nothing parsed when no
        address is banned)."""
        if not self.index.nets:
            return None
        address = peer_address(peer)
        return None if address is None else self.index.address(address, now)

    def login(self, user: str, key: str, now: float) -> Ban | None:
        """The active ban of ``user``, or of the key (fingerprint) they log in with."""
        ban = self.index.users.get(user)
        if ban is not None and ban.active(now):
            return ban
        if key:
            ban = self.index.keys.get(key)
            if ban is not None and ban.active(now):
                return ban
        return None

    def __len__(self) -> int:
        return len(self.index)
