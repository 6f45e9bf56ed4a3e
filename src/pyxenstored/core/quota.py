"""Quota limits and the boundary rule they are checked with (xenstore-protocol.md §6).

Quotas bind only unprivileged domain connections; the privileged domain and sockets are
exempt. C xenstored changed every boundary in 4.22 (``>=`` where ≤4.21 had ``>``); we
default to the 4.17-4.21 rule, which deployed guests and toolstacks were tuned against,
and ``rule = "4.22"`` selects the newer one. A limit of 0 means "no limit".
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["QUOTA_NAMES", "Limits"]


@dataclass(slots=True)
class Limits:
    """Global quota values; per-domain overrides build on these."""

    nodes: int = 1000
    watches: int = 128
    transactions: int = 10
    outstanding: int = 20
    memory: int = 2621440
    soft_memory: int = 2097152
    transaction_nodes: int = 1024
    node_permissions: int = 5
    path_max: int = 2048
    node_size: int = 2048
    #: "4.21": refuse when count > limit; "4.22": refuse when count >= limit.
    rule: str = "4.21"

    def exceeded(self, count: int, limit: int) -> bool:
        """Whether ``count`` (the size after the operation) breaks ``limit``."""
        if not limit:
            return False
        return count >= limit if self.rule == "4.22" else count > limit


#: The names GET_QUOTA lists, in C's enum order.
QUOTA_NAMES: tuple[str, ...] = tuple(
    f.name.replace("_", "-") for f in fields(Limits) if f.name != "rule"
)
