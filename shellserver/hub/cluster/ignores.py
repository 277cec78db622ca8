"""Every user's ignore list, as every node knows it.

A ``write`` or a room line is checked against the recipient's list at once, so each node
keeps a copy of the whole cluster's lists (Redis's ``ign`` hash, followed by its ``ign``
events), and this node's users' lists are put back in Redis when the node (re)joins.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define, field

from shellserver.hub.cluster.calls import Calls, quietly
from shellserver.hub.local import Hub


@define(eq=False)
class IgnoreLists:
    """The cluster's ignore lists, read without a round trip."""

    calls: Calls
    local: Hub
    _lists: dict[str, frozenset[str]] = field(init=False, factory=dict)

    def set(self, user: str, names: frozenset[str] | None) -> None:
        """``user`` changed their list here: every node must refuse for them from now on."""
        self.local.set_ignores(user, names)
        if names:
            self._lists[user] = names
        else:
            self._lists.pop(user, None)
        if self.calls.available:
            value = json.dumps(sorted(names)) if names else ""
            quietly(self.calls.run("SET_IGNORES", user, value), "ignore list")

    def of(self, user: str) -> frozenset[str]:
        """Whom ``user`` ignores, wherever they are logged in."""
        return self._lists.get(user) or self.local.ignores(user)

    def local_lists(self) -> dict[str, frozenset[str]]:
        """This node's users' lists: what this node puts back in Redis after an outage."""
        return {
            u: self.local.ignores(u) for u in self.local.local_users() if self.local.ignores(u)
        }

    async def republish(self) -> None:
        """Put this node's users' lists (back) in Redis, which may have lost them."""
        for user, names in self.local_lists().items():
            await self.calls.run("SET_IGNORES", user, json.dumps(sorted(names)))

    async def load(self) -> None:
        """Take every node's lists from Redis (joining: events missed while away)."""
        raw = await self.calls.link.call("HGETALL", self.calls.names.prefix + "ign")
        self._lists = {
            raw[i].decode(): frozenset(json.loads(raw[i + 1])) for i in range(0, len(raw), 2)
        }
        self._lists.update(self.local_lists())

    def on_change(self, event: dict[str, Any]) -> None:
        """Another node's user (or ours, heard back) changed their list."""
        user, names = event["u"], event["v"]
        if names:
            self._lists[user] = frozenset(json.loads(names))
        else:
            self._lists.pop(user, None)
