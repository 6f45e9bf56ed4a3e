"""The quota refusal log: every refusal is logged with the domain and the quota's name,
rate-limited so that a guest hammering a limit cannot flood the daemon's log.

At most one line per (domain, quota) per ``interval`` seconds; the lines say how many
refusals were not logged since the previous one. Counts are kept for statistics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RefusalLog"]

log = logging.getLogger("pyxenstored.quota")


class RefusalLog:
    """Counts quota refusals and logs them, rate-limited."""

    __slots__ = ("clock", "counts", "interval", "last", "suppressed")

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        #: (domid, quota) -> refusals so far.
        self.counts: dict[tuple[int, str], int] = {}
        self.last: dict[tuple[int, str], float] = {}
        self.suppressed: dict[tuple[int, str], int] = {}

    def note(self, domid: int, quota: str, refused: bool = True) -> None:
        """Count and (rate-limited) log one refusal, or one soft-limit warning."""
        key = (domid, quota)
        self.counts[key] = self.counts.get(key, 0) + 1
        now = self.clock()
        last = self.last.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return
        self.last[key] = now
        skipped = self.suppressed.pop(key, 0)
        more = f" ({skipped} more not logged)" if skipped else ""
        what = "request refused by" if refused else "over"
        log.warning("domain %d: %s the %s quota%s", domid, what, quota, more)
