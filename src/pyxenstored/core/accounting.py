"""Quota accounting of the engine: limits in force, usage per domain, the stall rules,
the driver-domain device allowance and the store's consistency check.

A mixin of :class:`~pyxenstored.core.engine.Engine`, kept apart because it is one
concept (xenstore-protocol.md §6; core.quota has the limits themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import QuotaExceeded
from ..protocol.paths import parent_of
from ..store.node import PLAIN_NODES
from ..store.tree import Tree, node_bytes
from .caller import Caller
from .confighooks import ConfigHooks
from .conflicts import ConflictGuard
from .connection import Connection
from .domains import Domain
from .quota import Limits, QuotaTable
from .refusals import RefusalLog
from .watches import WatchRegistry

__all__ = ["QuotaAccounting"]


class QuotaAccounting:
    """What each domain may use and does use."""

    if TYPE_CHECKING:
        tree: Tree
        limits: Limits
        quotas: QuotaTable
        config: ConfigHooks | None
        domains: dict[int, Domain]
        connections: dict[int, Connection]
        refusals: RefusalLog
        conflict_guard: ConflictGuard
        watches: WatchRegistry

        def limits_changed(self) -> None: ...
        def after(self, effect: Callable[[], None]) -> None: ...

    def quota(self, domid: int, name: str) -> int:
        """The limit ``name`` in force for ``domid`` (0: no limit)."""
        return self.quotas.limit(domid, name)

    def set_quota(self, domid: int | None, name: str, value: int) -> None:
        """Change a global quota (domid None) or set a domain's override."""
        if self.config is not None:
            if domid is not None:
                rel = f"domain/{domid}/quota/{name}"
            elif name == "soft-memory":
                rel = "quota-soft/memory"
            else:
                rel = f"quota/{name}"
            self.config.write(rel, str(value))
        elif domid is not None:
            self.quotas.set_override(domid, name, value)
        else:
            setattr(self.limits, name.replace("-", "_"), value)

    def quota_detail(self, domid: int, name: str) -> str:
        """For the refusal log: the limit ``domid`` met and the setting that raises it."""
        quotas = self.quotas
        text = f"limit {self.quota(domid, name)} ({quotas.source(domid, name)}"
        devices = quotas.devices.get(domid, 0)
        if devices and name in quotas.per_device:
            text += f" + {devices} devices x driver/{name}"
        elif not quotas.source(domid, name).startswith("domain/"):
            text += f", or for this domain only: domain/{domid}/quota/{name}"
        return text + ")"

    def usage(self, domid: int) -> dict[str, int]:
        """What a domain uses of each countable quota (CONTROL quota, statistics)."""
        dom = self.domains.get(domid)
        conn = dom.conn if dom is not None else None
        used = {"nodes": self.tree.owner_count.get(domid, 0)}
        used["watches"] = len(conn.watches) if conn is not None else 0
        used["transactions"] = len(conn.transactions) if conn is not None else 0
        used["memory"] = self.memory_used(domid, conn)
        used["outstanding"] = len(conn.out) if conn is not None else 0
        return used

    def memory_used(self, domid: int, conn: Connection | None) -> int:
        """Bytes charged to a domain: its nodes, its watches and its queued output."""
        used = self.tree.owner_bytes.get(domid, 0)
        if conn is not None:
            used += conn.watch_bytes + conn.out_bytes
            for txn in conn.transactions.values():
                used += txn.bytes
        return used

    def check_memory(self, conn: Connection, extra: int) -> None:
        """Refuse (ENOMEM) an unprivileged request that would take the domain's memory
        to its hard limit; warn (rate-limited) past the soft limit."""
        caller = conn.caller
        if caller.privileged:
            return
        used = self.memory_used(caller.domid, conn) + extra
        hard = self.quota(caller.domid, "memory")
        if hard and used >= hard:
            raise QuotaExceeded("memory", "ENOMEM")
        soft = self.quota(caller.domid, "soft-memory")
        if soft and used >= soft:
            domid = caller.domid
            self.refusals.note(
                domid,
                "soft-memory",
                lambda: self.quota_detail(domid, "soft-memory"),
                refused=False,
            )

    def paused(self, conn: Connection, queued: int = 0) -> bool:
        """Whether a domain's ring must not be read for now: it has as many replies and
        events outstanding as its quota allows (``queued``: messages the transport holds
        besides ``conn.out``), is at its memory limit, or has caused too many conflicts.
        Its requests wait; none is failed."""
        caller = conn.caller
        if caller.privileged:
            return False
        domid = caller.domid
        outstanding = self.quota(domid, "outstanding")
        if outstanding and len(conn.out) + queued >= outstanding:
            return True
        memory = self.quota(domid, "memory")
        if memory and self.memory_used(domid, conn) >= memory:
            return True
        return self.conflict_guard.paused(domid)

    def memory_report(self) -> list[str]:
        """A summary of what the store holds (CONTROL memreport)."""
        nodes = self.tree.nodes
        value_bytes = sum(len(n.value) for n in nodes.values() if type(n) in PLAIN_NODES)
        path_bytes = sum(len(p) for p in nodes)
        return [
            f"nodes: {len(nodes)}",
            f"path bytes: {path_bytes}",
            f"value bytes: {value_bytes}",
            f"connections: {len(self.connections)}",
            f"domains: {len(self.domains)}",
            f"watches: {self.watches.count}",
            f"open transactions: {sum(len(c.transactions) for c in self.connections.values())}",
        ]

    def node_allowance(self, caller: Caller) -> int:
        """How many more nodes ``caller`` may own (-1: unlimited)."""
        if caller.privileged:
            return -1
        limit = self.quota(caller.domid, "nodes")
        if not limit:
            return -1
        return max(0, self.limits.most(limit) - self.tree.owner_count.get(caller.domid, 0))

    def size_check(self, caller: Caller) -> Callable[[int], bool] | None:
        """The node-size test for nodes ``caller`` creates (None: exempt)."""
        if caller.privileged:
            return None
        limit = self.quota(caller.domid, "node-size")
        if not limit:
            return None
        exceeded = self.limits.exceeded
        return lambda size: exceeded(size, limit)

    def check(self) -> list[str]:
        """Consistency check of the tree (CONTROL check); returns the problems found."""
        problems: list[str] = []
        nodes = self.tree.nodes
        counts: dict[int, int] = {}
        # Each child list once, into a set: a wide child list is a list, whose membership
        # test scans it (store.node).
        listed: set[str] = set()
        for path, node in nodes.items():
            for child in node.children:
                if child not in nodes:
                    problems.append(f"missing child {child}")
                elif path[:1] == "@" or parent_of(child) != path:
                    problems.append(f"child {child} listed under {path}")
                else:
                    listed.add(child)
        for path, node in nodes.items():
            if path[:1] != "/":
                continue
            counts[node.owner] = counts.get(node.owner, 0) + 1
            if path == "/":
                continue
            if parent_of(path) not in nodes or path not in listed:
                problems.append(f"orphan node {path}")
        sizes: dict[int, int] = {}
        for path, node in nodes.items():
            if path[:1] == "/":
                sizes[node.owner] = sizes.get(node.owner, 0) + node_bytes(path, node)
        for domid in set(sizes) | set(self.tree.owner_bytes):
            if self.tree.owner_bytes.get(domid, 0) != sizes.get(domid, 0):
                problems.append(f"memory count of domain {domid} is wrong")
        owned: dict[int, set[str]] = {}
        granted: dict[int, set[str]] = {}
        for path, node in nodes.items():
            if path[:1] != "/":
                continue
            parent = nodes.get(parent_of(path)) if path != "/" else None
            top = parent is None or parent.owner != node.owner
            if node.owner != self.tree.root_owner and top:
                owned.setdefault(node.owner, set()).add(path)
            for _, d in node.perms[1:]:
                granted.setdefault(d, set()).add(path)
        tree = self.tree
        if owned != {d: set(p) for d, p in tree.owned.items()} or granted != {
            d: set(p) for d, p in tree.granted.items()
        }:
            problems.append("the owner or grant index is wrong")
        for domid in set(counts) | set(self.tree.owner_count):
            if self.tree.owner_count.get(domid, 0) != counts.get(domid, 0):
                problems.append(f"node count of domain {domid} is wrong")
        return problems

    def created(self, paths: list[str]) -> None:
        """The privileged domain created ``paths`` in the live tree (device allowance)."""
        devices = [p for p in paths if p.startswith("/local/domain/")]
        if devices:
            quotas = self.quotas
            self.after(lambda: quotas.devices_added(devices))
