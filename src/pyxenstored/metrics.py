"""What the statistics nodes say, as Prometheus metrics (``pyxenstore metrics``, the
daemon's ``--metrics-listen``) and as rows (``pyxenstore top``).

Both read the same thing: the nodes under ``/tool/xenstored/stats/``, by their name
relative to it (``nodes``, ``requests/READ``, ``domain/5``). A daemon reads its own tree,
the command reads them over a connection; so the metrics of a scrape and of the command
are the same series. Nothing here does I/O or imports the rest of the package.

Per-domain series are bounded: at most ``max_domains`` domains have their own series
(the privileged domain first, then the busiest by requests); the others are summed
under ``domid="other"``, so a host with thousands of short-lived guests cannot blow up
a Prometheus server. The daemon takes the bound from the live setting
``metrics/domains``, the command from ``--max-domains``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        Metric,
    )

    Family = CounterMetricFamily | GaugeMetricFamily

__all__ = [
    "STATS_PATH",
    "DomainRow",
    "Stats",
    "exposition",
    "families",
    "parse_figures",
]

#: Where the statistics nodes live.
STATS_PATH = "/tool/xenstored/stats"

#: Global statistics with a metric of their own: name, type, help.
_GLOBAL: dict[str, tuple[str, str, str]] = {
    "connections": ("xenstored_connections", "gauge", "Connections (sockets and rings)"),
    "domains": ("xenstored_domains", "gauge", "Introduced domains"),
    "nodes": ("xenstored_nodes", "gauge", "Nodes in the store"),
    "watches": ("xenstored_watches", "gauge", "Registered watches"),
    "transactions/open": ("xenstored_transactions_open", "gauge", "Open transactions"),
    "transactions/committed": (
        "xenstored_transactions_committed",
        "counter",
        "Transactions committed",
    ),
    "transactions/refused": (
        "xenstored_transactions_eagain",
        "counter",
        "Transactions told to retry (EAGAIN)",
    ),
    "events/sent": ("xenstored_watch_events", "counter", "Watch events queued"),
    "events/dropped": (
        "xenstored_watch_events_dropped",
        "counter",
        "Watch events dropped for readers that stopped reading",
    ),
    "memory/store": (
        "xenstored_store_bytes",
        "gauge",
        "Bytes the nodes cost their owners (the memory quota's measure)",
    ),
    "memory/rss": ("xenstored_resident_memory_bytes", "gauge", "Resident memory of the daemon"),
}

#: Per-domain figures: metric name, type, help (see liveconfig.stats.DOMAIN_FIGURES).
_DOMAIN: dict[str, tuple[str, str, str]] = {
    "requests": ("xenstored_domain_requests", "counter", "Requests received from the domain"),
    "connections": ("xenstored_domain_connections", "gauge", "Connections of the domain"),
    "nodes": ("xenstored_domain_nodes", "gauge", "Nodes the domain owns"),
    "memory": ("xenstored_domain_memory_bytes", "gauge", "Bytes charged to the domain"),
    "watches": ("xenstored_domain_watches", "gauge", "Watches of the domain"),
    "transactions": ("xenstored_domain_transactions", "gauge", "Open transactions"),
    "outstanding": (
        "xenstored_domain_outstanding",
        "gauge",
        "Replies and events queued for the domain",
    ),
    "eagain": ("xenstored_domain_eagain", "counter", "Transactions told to retry"),
    "refused": ("xenstored_domain_quota_refusals", "counter", "Requests refused by a quota"),
    "denied": (
        "xenstored_domain_permission_refusals",
        "counter",
        "Requests refused for permission",
    ),
    "blamed": (
        "xenstored_domain_conflicts_caused",
        "counter",
        "Commits of other domains its changes failed",
    ),
    "throttled": (
        "xenstored_domain_throttled",
        "gauge",
        "1 while conflict fairness holds the domain's requests back",
    ),
    "events-dropped": (
        "xenstored_domain_watch_events_dropped",
        "counter",
        "Watch events dropped for the domain",
    ),
}
_QUOTA_SUFFIX = "-quota"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def parse_figures(text: str) -> dict[str, int]:
    """A ``stats/domain/<domid>`` value (``name=value ...``) as a dict; pairs that are
    not ``name=decimal`` are skipped (a newer daemon may say more)."""
    figures: dict[str, int] = {}
    for pair in text.split():
        name, sep, value = pair.partition("=")
        if sep and name and value.isdigit():
            figures[name] = int(value)
    return figures


@dataclass
class DomainRow:
    """One domain's figures (``quotas``: the limits in force, 0 for none)."""

    domid: int
    figures: dict[str, int]
    quotas: dict[str, int] = field(default_factory=dict)

    def get(self, name: str) -> int:
        return self.figures.get(name, 0)


@dataclass
class Stats:
    """The statistics nodes, read at one moment."""

    #: global counters by relative name (``nodes``, ``requests/READ``), decimals only
    values: dict[str, int]
    #: per-domain figures, by domid
    domains: dict[int, DomainRow]
    #: when each node was read (monotonic seconds, by relative name), if known: a
    #: reading of hundreds of nodes under load takes a while, so rates use these
    read_at: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_nodes(cls, nodes: Mapping[str, str]) -> Stats:
        """From ``{relative name: value}`` of every node below ``stats/``."""
        values: dict[str, int] = {}
        domains: dict[int, DomainRow] = {}
        for name, text in nodes.items():
            if name.startswith("domain/"):
                domid = name[7:]
                if not domid.isdigit():
                    continue
                parsed = parse_figures(text)
                quotas = {
                    k[: -len(_QUOTA_SUFFIX)]: v
                    for k, v in parsed.items()
                    if k.endswith(_QUOTA_SUFFIX)
                }
                figures = {k: v for k, v in parsed.items() if not k.endswith(_QUOTA_SUFFIX)}
                domains[int(domid)] = DomainRow(int(domid), figures, quotas)
            elif text.strip().isdigit():
                values[name] = int(text.strip())
        return cls(values, domains)

    def bounded(self, max_domains: int, priv_domid: int = 0) -> tuple[list[DomainRow], DomainRow]:
        """The domains that get their own series, and the sum of the rest."""
        order = sorted(
            self.domains.values(),
            key=lambda r: (r.domid != priv_domid, -r.get("requests"), r.domid),
        )
        kept, rest = order[:max_domains], order[max_domains:]
        other = DomainRow(-1, {})
        for row in rest:
            for name, value in row.figures.items():
                other.figures[name] = other.figures.get(name, 0) + value
        return kept, other


def _metric_name(prefix: str, name: str) -> str:
    return prefix + _UNSAFE.sub("_", name)


def families(stats: Stats, max_domains: int, priv_domid: int = 0) -> list[Metric]:
    """The metric families of ``stats`` (prometheus_client objects)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def family(name: str, kind: str, text: str, labels: Iterable[str] = ()) -> Family:
        if kind == "counter":
            return CounterMetricFamily(name, text, labels=list(labels))
        return GaugeMetricFamily(name, text, labels=list(labels))

    out: list[Metric] = []
    requests = family("xenstored_requests", "counter", "Requests received, by type", ["type"])
    for name, value in sorted(stats.values.items()):
        if name.startswith("requests/"):
            if name != "requests/total":
                requests.add_metric([name[9:]], value)
            continue
        mname, kind, text = _GLOBAL.get(
            name, (_metric_name("xenstored_", name), "gauge", f"stats/{name}")
        )
        f = family(mname, kind, text)
        f.add_metric([], value)
        out.append(f)
    out.append(requests)

    kept, other = stats.bounded(max_domains, priv_domid)
    by_name: dict[str, Family] = {}
    for row in [*kept, other]:
        label = str(row.domid) if row.domid >= 0 else "other"
        if row.domid < 0 and not row.figures:
            continue
        for name, value in row.figures.items():
            metric = by_name.get(name)
            if metric is None:
                mname, kind, text = _DOMAIN.get(
                    name,
                    (_metric_name("xenstored_domain_", name), "gauge", f"per-domain {name}"),
                )
                metric = by_name[name] = family(mname, kind, text, ["domid"])
            metric.add_metric([label], value)
    out.extend(by_name.values())
    quota = family(
        "xenstored_domain_quota",
        "gauge",
        "Limit in force for the domain (0: no limit)",
        ["domid", "quota"],
    )
    for row in kept:
        for name, value in sorted(row.quotas.items()):
            quota.add_metric([str(row.domid), name], value)
    out.append(quota)
    return out


class _Collector:
    """A one-shot collector of ready-made families (for generate_latest)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def exposition(
    stats: Stats, max_domains: int, priv_domid: int = 0, openmetrics: bool = False
) -> bytes:
    """``stats`` in the Prometheus text format (or OpenMetrics, with its ``# EOF``)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics import exposition as om

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families(stats, max_domains, priv_domid)))
    if openmetrics:
        text: bytes = om.generate_latest(registry)  # type: ignore[no-untyped-call]
        return text
    return generate_latest(registry)
