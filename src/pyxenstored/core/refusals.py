"""The refusal log: every request refused to a domain for a quota, for permission, or
held back by conflict fairness is counted, and logged with the domain, the limit and the
setting that raises it; rate-limited so that a guest hammering a limit cannot flood the
daemon's log.

At most one line per (domain, kind) per ``interval`` seconds (the live setting
``log/refusal-seconds``); a line says how many refusals of that kind were not logged
since the previous one. A *kind* is a quota's name (``nodes``, ``memory``, ...),
``soft-memory`` (a warning, nothing is refused), ``permission`` or ``conflict``.

EAGAIN answers (a transaction that must be retried) are counted per domain too, for the
statistics, but never logged: they are the protocol working as designed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RefusalLog"]

log = logging.getLogger("pyxenstored.quota")


class RefusalLog:
    """Counts refusals per (domain, kind) and logs them, rate-limited."""

    __slots__ = ("again", "clock", "counts", "interval", "last", "suppressed")

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        #: (domid, kind) -> refusals so far.
        self.counts: dict[tuple[int, str], int] = {}
        self.last: dict[tuple[int, str], float] = {}
        self.suppressed: dict[tuple[int, str], int] = {}
        #: domid -> EAGAIN answers so far (counted, not logged).
        self.again: dict[int, int] = {}

    def note(
        self,
        domid: int,
        kind: str,
        detail: str | Callable[[], str] = "",
        refused: bool = True,
        level: int = logging.WARNING,
    ) -> None:
        """Count and (rate-limited) log one refusal, or one soft-limit warning.

        ``detail`` says what limit was met and which setting raises it; it is appended
        to the line after a colon. A callable is called only when a line is written
        (a refused request costs no formatting while the log is quiet).
        """
        key = (domid, kind)
        self.counts[key] = self.counts.get(key, 0) + 1
        now = self.clock()
        last = self.last.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return
        self.last[key] = now
        skipped = self.suppressed.pop(key, 0)
        more = f" ({skipped} more not logged)" if skipped else ""
        if callable(detail):
            detail = detail()
        if kind == "permission":
            what = "request refused: permission denied"
        elif kind == "conflict":
            what = "throttled by conflict fairness"
        else:
            what = f"{'request refused by' if refused else 'over'} the {kind} quota"
        log.log(level, "domain %d: %s%s%s", domid, what, f": {detail}" if detail else "", more)

    def count_again(self, domid: int) -> None:
        """One EAGAIN answered to ``domid``."""
        self.again[domid] = self.again.get(domid, 0) + 1

    def refused(self, domid: int) -> int:
        """Requests refused to ``domid`` for any quota (warnings not included)."""
        return sum(
            n
            for (d, kind), n in self.counts.items()
            if d == domid and kind not in ("soft-memory", "permission", "conflict")
        )

    def forget(self, domid: int) -> None:
        """A domain is gone: a later one with its id starts from zero."""
        for table in (self.counts, self.last, self.suppressed):
            for key in [k for k in table if k[0] == domid]:
                del table[key]
        self.again.pop(domid, None)
