"""The crash journal's hook in the core: committed changes, reported without I/O.

``Engine.report_changes(changes)`` makes the engine report to a :class:`Changes`:

* ``ops``: the live tree's own operation log (``Tree.sink``): every node created,
  written, given permissions or removed, in order, as tuples of ``store.tree``'s codes.
  Changes inside a transaction appear when it commits (a commit that fails leaves only
  the counters it moved), so what is there is committed.
* ``domains``: the domains that changed: introduced, released, dead, retargeted, shut
  down or resumed, their ring reset or broken, a watch of their ring added or removed.
  The runtime records each of them again (or its end).
* ``engine_ops``: engine-wide changes as operations: a domain's birth
  (:data:`BIRTH`, domid, generation) or end (:data:`DEATH`, domid, 0), a backend
  device starting or stopping to count for an allowance (:data:`DEVICE_ADD`,
  :data:`DEVICE_REMOVE`, path), a guest's transaction started or ended
  (:data:`TXN_START`, :data:`TXN_END`, domid, transaction id: after a crash it comes
  back doomed). Kept apart from ``ops``: a failed commit rolls the tree back, not
  these.
* ``meta``: set when other engine-wide state changed that a restart must get back:
  SET_FEATURE values, quota tables (overrides, classes), limits. The runtime then
  records the engine-wide state again.

The runtime drains both after each request (before the reply leaves), writes them, and
starts afresh (:meth:`take`). Nothing here costs more than a list append per change.
"""

from __future__ import annotations

__all__ = ["BIRTH", "DEATH", "DEVICE_ADD", "DEVICE_REMOVE", "TXN_END", "TXN_START", "Changes"]

#: Codes of ``Changes.engine_ops`` (after ``store.tree``'s operation codes).
BIRTH, DEATH, DEVICE_ADD, DEVICE_REMOVE, TXN_START, TXN_END = range(6, 12)


class Changes:
    """Committed changes not yet taken by the runtime."""

    __slots__ = ("domains", "engine_ops", "meta", "ops")

    def __init__(self) -> None:
        self.ops: list[tuple[object, ...]] = []
        self.domains: set[int] = set()
        self.engine_ops: list[tuple[object, ...]] = []
        self.meta = False

    def __bool__(self) -> bool:
        return bool(self.ops or self.domains or self.engine_ops) or self.meta

    def clear(self) -> None:
        """Taken: start afresh (``ops`` is emptied in place: the tree appends to it)."""
        self.ops.clear()
        self.domains = set()
        self.engine_ops = []
        self.meta = False
