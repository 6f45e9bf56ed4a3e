"""``--metrics-listen HOST:PORT``: the statistics as Prometheus metrics over HTTP.

prometheus_client serves HTTP in threads of its own (one per scrape), so a slow or
stuck scraper holds one thread, never the event loop nor a client. The engine is not
thread-safe: a scrape asks the event loop for a copy of the statistics nodes (a fast
walk of ``/tool/xenstored/stats``, run between two requests) and builds the exposition
in its own thread from that copy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..metrics import STATS_PATH, Stats, families

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..core.engine import Engine

__all__ = ["MetricsServer", "parse_listen", "read_stats"]

log = logging.getLogger("pyxenstored.metrics")

#: How long a scrape waits for the event loop before it answers 500.
SCRAPE_TIMEOUT = 10.0


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (host: localhost). Raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "localhost", text
    host = host.strip("[]") or "localhost"
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--metrics-listen {text!r}: want HOST:PORT or PORT")
    return host, int(port)


def read_stats(engine: Engine) -> Stats:
    """Every node below the statistics directory of ``engine``'s tree, now."""
    nodes = engine.tree.nodes
    found: dict[str, str] = {}
    stack = [STATS_PATH]
    while stack:
        path = stack.pop()
        node = nodes.get(path)
        if node is None:
            continue
        if node.children:
            stack.extend(node.children)
        elif path != STATS_PATH:
            found[path[len(STATS_PATH) + 1 :]] = node.value.decode("ascii", "replace")
    return Stats.from_nodes(found)


class _LoopCollector:
    """Collects on the event loop's thread, hands the families to the HTTP thread."""

    def __init__(self, owner: MetricsServer) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        owner = self.owner
        future: concurrent.futures.Future[tuple[Stats, int, int]] = concurrent.futures.Future()

        def take() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(owner.snapshot())
                except Exception as err:  # reported to the scraper as a 500
                    future.set_exception(err)

        if owner.loop is None:
            raise RuntimeError("the metrics server is not started")
        owner.loop.call_soon_threadsafe(take)
        stats, max_domains, priv = future.result(timeout=SCRAPE_TIMEOUT)
        return iter(families(stats, max_domains, priv))


class MetricsServer:
    """The HTTP endpoint; :meth:`start` binds (errors are OSError), :meth:`close` stops."""

    def __init__(self, engine: Engine, registry: Any, host: str, port: int) -> None:
        self.engine = engine
        #: the live settings (``metrics/domains`` is read at every scrape)
        self.settings = registry
        self.host = host
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._httpd: Any = None
        self._thread: threading.Thread | None = None

    def snapshot(self) -> tuple[Stats, int, int]:
        """The statistics, the per-domain bound and the privileged domid (loop thread)."""
        return (
            read_stats(self.engine),
            int(self.settings.get("metrics/domains")),
            self.engine.priv_domid,
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> tuple[str, int]:
        """Serve ``/metrics`` (any path, as prometheus_client does); return the address
        bound. Raises OSError, or RuntimeError when prometheus_client is missing."""
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise RuntimeError(
                "--metrics-listen needs the prometheus_client package (pip install "
                "prometheus_client)"
            ) from None
        self.loop = loop
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_LoopCollector(self))
        self._httpd, self._thread = start_http_server(self.port, self.host, registry)
        address = self._httpd.server_address
        return str(address[0]), int(address[1])

    def close(self) -> None:
        """Stop serving (waits for the serving thread; a scrape in flight gets no
        answer if the loop is gone)."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
