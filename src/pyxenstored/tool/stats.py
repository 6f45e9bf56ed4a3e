"""Reading the statistics nodes over a connection (``top`` and ``metrics``).

Every node below ``/tool/xenstored/stats/`` is read with DIRECTORY and READ, as any
privileged client can (dom0 over the socket, or a privileged guest over xenbus); a
node that goes away between the two (a domain released meanwhile) is skipped.
"""

from __future__ import annotations

import time

from ..client.sync import Client
from ..errors import NoEntry, PermissionDenied, XenstoreError
from ..metrics import STATS_PATH, Stats

__all__ = ["NoStatistics", "read_stats"]


class NoStatistics(Exception):
    """The daemon publishes no statistics we may read (one line for the user)."""


def read_stats(xs: Client) -> Stats:
    """All statistics nodes, read now.

    Raises:
        NoStatistics: there is no ``/tool/xenstored/stats`` (not a pyxenstored), or we
            may not read it (not the privileged domain).
    """
    try:
        top = xs.directory(STATS_PATH)
    except NoEntry:
        raise NoStatistics(f"{STATS_PATH} does not exist: is this a pyxenstored?") from None
    except PermissionDenied:
        raise NoStatistics(
            f"{STATS_PATH}: permission denied (statistics are for the privileged domain)"
        ) from None
    found: dict[str, str] = {}
    read_at: dict[str, float] = {}
    todo = list(top)
    while todo:
        rel = todo.pop()
        path = f"{STATS_PATH}/{rel}"
        try:
            # A domain's node is a leaf by its layout: one READ, no DIRECTORY first.
            children = [] if rel.startswith("domain/") else xs.directory(path)
            if children:
                todo.extend(f"{rel}/{c}" for c in children)
            else:
                found[rel] = xs.read(path).decode("ascii", "replace")
                read_at[rel] = time.monotonic()
        except XenstoreError:
            continue  # gone meanwhile (a released domain)
    stats = Stats.from_nodes(found)
    stats.read_at = read_at
    return stats
