"""``pyxenstore metrics``: the statistics in the Prometheus text format, once.

For node_exporter's textfile collector, say from a timer::

    pyxenstore metrics > /var/lib/node_exporter/xenstored.prom.$$ &&
        mv /var/lib/node_exporter/xenstored.prom.$$ /var/lib/node_exporter/xenstored.prom

The series are those a daemon started with ``--metrics-listen`` serves (the same nodes,
turned into metrics by the same code, ``pyxenstored.metrics``); ``--openmetrics``
prints the OpenMetrics format instead. Per-domain series are bounded by
``--max-domains`` (the privileged domain, then the busiest; the rest summed as
``domid="other"``).
"""

from __future__ import annotations

import argparse
import sys

from ..metrics import exposition
from .common import SubParsers, warn
from .connect import contact
from .stats import NoStatistics, read_stats

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    if args.max_domains < 0:
        warn(args, "--max-domains must be 0 or more")
        return 1
    xs = contact(args)
    if xs is None:
        return 1
    with xs:
        try:
            stats = read_stats(xs)
        except NoStatistics as err:
            warn(args, str(err))
            return 1
    text = exposition(stats, args.max_domains, openmetrics=args.openmetrics)
    sys.stdout.flush()
    sys.stdout.buffer.write(text)
    sys.stdout.buffer.flush()
    return 0


def register(subparsers: SubParsers) -> None:
    """Add ``metrics``."""
    p = subparsers.add_parser(
        "metrics",
        help="print the statistics as Prometheus metrics (node_exporter textfile format)",
        description="Print xenstored's statistics (/tool/xenstored/stats) in the Prometheus "
        "text exposition format.",
    )
    p.add_argument(
        "--max-domains",
        type=int,
        default=100,
        metavar="N",
        help='domains with series of their own (the rest summed as domid="other"; '
        "default 100, as the daemon's metrics/domains setting)",
    )
    p.add_argument("--openmetrics", action="store_true", help="OpenMetrics text format")
    p.set_defaults(func=_run)
