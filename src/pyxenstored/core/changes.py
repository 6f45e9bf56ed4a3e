"""The crash journal's hook in the core: committed changes, reported without I/O.

``Engine.report_changes(changes)`` makes the engine report to a :class:`Changes`:

* ``ops``: the live tree's own operation log (``Tree.sink``): every node created,
  written, given permissions or removed, in order, as tuples of ``store.tree``'s codes.
  Changes inside a transaction appear when it commits (a commit that fails leaves only
  the counters it moved), so what is there is committed.
* ``meta``: set when anything besides the tree changed that a restart must get back:
  a domain introduced, released, dead, retargeted or reset, a ring connection's watch
  added or removed, a domain's birth, SET_FEATURE values, quota tables (device
  allowances included). The runtime then records the engine's state without nodes.

The runtime drains both after each request (before the reply leaves), writes them, and
starts afresh (:meth:`take`). Nothing here costs more than a list append per change.
"""

from __future__ import annotations

__all__ = ["Changes"]


class Changes:
    """Committed changes not yet taken by the runtime."""

    __slots__ = ("meta", "ops")

    def __init__(self) -> None:
        self.ops: list[tuple[object, ...]] = []
        self.meta = False

    def __bool__(self) -> bool:
        return bool(self.ops) or self.meta

    def take(self) -> tuple[list[tuple[object, ...]], bool]:
        """The changes so far, emptied in place (the tree keeps appending to ``ops``)."""
        ops = self.ops[:]
        self.ops.clear()
        meta, self.meta = self.meta, False
        return ops, meta
