"""Read-only statistics nodes: their value is computed when it is read.

A :class:`LiveNode` is a tree node whose ``value`` is produced by a function, so the
counters cost nothing until someone reads them (no tree write per request). They are
created under ``/tool/xenstored/stats/`` with the privileged owner's ``n`` permission.

Per-domain statistics: ``stats/domain/<domid>`` exists for the privileged domain and
for every introduced domain (it goes when the domain does). Its value is one line of
``name=value`` pairs, every value a decimal (:data:`DOMAIN_FIGURES` in that order, then
``<quota>-quota`` for each of :data:`DOMAIN_QUOTAS`: the limit in force, 0 for none),
so that one READ gives a whole row of ``pyxenstore top``::

    requests=52 connections=1 nodes=13 memory=2171 watches=2 transactions=0 ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..protocol.perms import Perms
from ..store.node import Node

if TYPE_CHECKING:
    from ..core.engine import Engine

__all__ = ["DOMAIN_FIGURES", "DOMAIN_QUOTAS", "LiveNode", "domain_figures", "format_figures"]

#: Figures of ``stats/domain/<domid>``, in order. requests: requests received from the
#: domain (since it was introduced; for the privileged domain, since the start);
#: memory: bytes charged to it as the memory quota counts them; outstanding: replies
#: and events queued for it; eagain: transactions told to retry; refused: requests
#: refused by a quota; denied: requests refused for permission; blamed: other domains'
#: commits its changes failed; throttled: 1 while conflict fairness holds its requests
#: back.
DOMAIN_FIGURES: tuple[str, ...] = (
    "requests",
    "connections",
    "nodes",
    "memory",
    "watches",
    "transactions",
    "outstanding",
    "eagain",
    "refused",
    "denied",
    "blamed",
    "throttled",
    "events-dropped",
)
#: Quotas whose limit in force follows the figures, as ``<quota>-quota``.
DOMAIN_QUOTAS: tuple[str, ...] = ("nodes", "memory", "watches", "transactions", "outstanding")


class LiveNode(Node):
    """A node whose value is ``compute()`` at the time of each read."""

    __slots__ = ("compute",)

    def __init__(self, compute: Callable[[], str], perms: Perms) -> None:
        self.compute = compute
        super().__init__(b"", perms)

    @property
    def value(self) -> bytes:
        return self.compute().encode("ascii")

    @value.setter
    def value(self, _: bytes) -> None:
        # Statistics are read-only; the config tree refuses writes before they get here.
        pass

    def copy(self) -> Node:
        """A plain node holding the value as computed now (Node.copy builds a Node)."""
        return Node.copy(self)


def domain_figures(engine: Engine, domid: int) -> dict[str, int]:
    """What ``domid`` uses and has met, by :data:`DOMAIN_FIGURES` and quota limits.

    Costs one pass over the connections (read-time only)."""
    conns = [c for c in engine.connections.values() if c.caller.domid == domid]
    refusals = engine.refusals
    guard = engine.conflict_guard
    figures = {
        "requests": engine.past_requests.get(domid, 0) + sum(c.requests for c in conns),
        "connections": len(conns),
        "nodes": engine.tree.owner_count.get(domid, 0),
        "memory": engine.tree.owner_bytes.get(domid, 0)
        + sum(
            c.watch_bytes + c.out_bytes + sum(t.bytes for t in c.transactions.values())
            for c in conns
        ),
        "watches": sum(len(c.watches) for c in conns),
        "transactions": sum(len(c.transactions) for c in conns),
        "outstanding": sum(len(c.out) for c in conns),
        "eagain": refusals.again.get(domid, 0),
        "refused": refusals.refused(domid),
        "denied": refusals.counts.get((domid, "permission"), 0),
        "blamed": guard.blamed.get(domid, 0),
        "throttled": int(guard.paused(domid)),
        "events-dropped": sum(c.events_dropped for c in conns),
    }
    exempt = domid == engine.priv_domid
    for quota in DOMAIN_QUOTAS:
        figures[f"{quota}-quota"] = 0 if exempt else engine.quota(domid, quota)
    return figures


def format_figures(figures: dict[str, int]) -> str:
    """The one-line value of a ``stats/domain/<domid>`` node."""
    return " ".join(f"{name}={value}" for name, value in figures.items())
