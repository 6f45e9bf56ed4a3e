"""Conflict fairness: blame the domains whose changes make others' commits fail, and
throttle them (XSA-206 class; oxenstored's conflict credit, lineage §A.7).

Design note
-----------
Every change an *unprivileged domain* makes to the live tree (a plain WRITE, MKDIR, RM,
SET_PERMS, or the replay of its committed transaction) is recorded in a short history
as ``(change counter, domid, paths changed)``. The privileged domain and sockets are
never recorded: they are free to conflict.

When a commit fails validation, the paths whose observations no longer hold are known.
Every history entry newer than the failing transaction's start that changed one of those
paths blames its domain (once per failure, never the failing connection's own domain):
its credit drops by one, to at least -1. A domain whose credit is <= 0 is *paused*: the
runtime stops reading its ring until credit returns, so its requests simply wait.

Credit returns on :meth:`ConflictGuard.replenish`, which the runtime calls every
``conflict/replenish-seconds``: in aggregate mode one point goes to one domain (the
longest-paused first), capping the blamed conflicts of all guests together at about
1/interval per second; otherwise every domain gains a point, up to the burst limit.

Changes are recorded only while some transaction is open (no other can be blamed), and
the history is trimmed to the oldest open transaction and bounded in entries and bytes.
"""

from __future__ import annotations

from collections import deque

from ..protocol.paths import ancestors

__all__ = ["ConflictGuard"]

_MAX_HISTORY = 4096
_MAX_BYTES = 1 << 20


class ConflictGuard:
    """History, blame and credit for transaction conflicts."""

    __slots__ = ("aggregate", "blamed", "burst", "bytes", "credit", "history", "paused_queue")

    def __init__(self, burst: float = 5.0, aggregate: bool = True) -> None:
        self.burst = burst
        self.aggregate = aggregate
        #: (change counter after the change, domid, paths changed)
        self.history: deque[tuple[int, int, frozenset[str]]] = deque()
        #: bytes of path names held by the history
        self.bytes = 0
        #: credit of each domain that has been blamed (absent: full credit).
        self.credit: dict[int, float] = {}
        #: paused domains, oldest first (a dict used as an ordered set).
        self.paused_queue: dict[int, None] = {}
        #: conflicts caused, per domain (statistics).
        self.blamed: dict[int, int] = {}

    def record(self, counter: int, domid: int, paths: list[str]) -> None:
        """An unprivileged domain changed ``paths`` (a removed subtree as its root plus
        "/"); the tree's counter is now ``counter``. The history is bounded in entries
        and in bytes: the oldest entries go first (a transaction that old is not
        protected, as in oxenstored)."""
        if not paths:
            return
        size = sum(len(p) for p in paths)
        self.history.append((counter, domid, frozenset(paths)))
        self.bytes += size
        while len(self.history) > _MAX_HISTORY or self.bytes > _MAX_BYTES:
            self.bytes -= sum(len(p) for p in self.history.popleft()[2])

    def trim(self, oldest_start: int | None) -> None:
        """Forget entries no open transaction can be blamed for."""
        history = self.history
        if oldest_start is None:
            history.clear()
            self.bytes = 0
            return
        while history and history[0][0] <= oldest_start:
            self.bytes -= sum(len(p) for p in history.popleft()[2])

    def blame(self, start: int, victim: int, failed: list[str]) -> list[int]:
        """A commit of domain ``victim`` that started at ``start`` failed on ``failed``
        paths: charge the domains responsible; return them."""
        culprits: list[int] = []
        failed_set = set(failed)
        # A failed path is also explained by the removal of any of its ancestors.
        removed_roots = {a + "/" for p in failed for a in ancestors(p)}
        for counter, domid, paths in self.history:
            if counter <= start or domid == victim or domid in culprits:
                continue
            if not failed_set.isdisjoint(paths) or not removed_roots.isdisjoint(paths):
                culprits.append(domid)
        for domid in culprits:
            credit = max(-1.0, self.credit.get(domid, self.burst) - 1.0)
            self.credit[domid] = credit
            self.blamed[domid] = self.blamed.get(domid, 0) + 1
            if credit <= 0:
                self.paused_queue[domid] = None
        return culprits

    def paused(self, domid: int) -> bool:
        """Whether the domain's requests must wait (its ring is not read)."""
        return domid in self.paused_queue

    def replenish(self) -> list[int]:
        """One interval passed: return credit; return the domains that may run again."""
        resumed: list[int] = []
        if not self.credit:
            return resumed
        if self.aggregate:
            target = next(iter(self.paused_queue), None)
            if target is None:
                target = min(self.credit, key=self.credit.__getitem__)
            targets = [target]
        else:
            targets = list(self.credit)
        for domid in targets:
            credit = self.credit[domid] + 1.0
            if credit >= self.burst:
                del self.credit[domid]
            else:
                self.credit[domid] = credit
            if credit > 0 and domid in self.paused_queue:
                del self.paused_queue[domid]
                resumed.append(domid)
        return resumed

    @property
    def idle(self) -> bool:
        """True when every domain has full credit (no timer needed)."""
        return not self.credit

    def forget(self, domid: int) -> None:
        """A domain is gone: drop its credit and pause."""
        self.credit.pop(domid, None)
        self.paused_queue.pop(domid, None)
