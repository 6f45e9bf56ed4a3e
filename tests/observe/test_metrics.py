"""Metrics: ``--metrics-listen`` serves the statistics over HTTP while clients are served,
``pyxenstore metrics`` prints the same series, both are valid exposition text (checked
with prometheus_client's own parsers), and per-domain series are bounded."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pytest
from daemon.helpers import run
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as _parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse

from pyxenstored.client import SyncClient
from pyxenstored.metrics import Stats, exposition, parse_figures

from .helpers import bootstorm, pyxenstore

if TYPE_CHECKING:
    from conftest import DaemonFactory, DaemonProcess

#: The OpenMetrics parser, typed here (the library leaves it unannotated).
parse_openmetrics: Callable[[str], Iterable[Any]] = _parse_openmetrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of exposition ``text``, parsed by prometheus_client."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse(text)
        for s in family.samples
    }


def domids(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {
        dict(labels)["domid"] for name, labels in found if name == "xenstored_domain_requests_total"
    }


def nodes(n_domains: int) -> dict[str, str]:
    """Statistics nodes as a daemon with ``n_domains`` domains publishes them."""
    out = {"nodes": "40", "requests/READ": "7", "requests/total": "9", "memory/rss": "1000"}
    for d in range(n_domains):
        out[f"domain/{d}"] = f"requests={100 - d} nodes={d} nodes-quota=1000 memory=5"
    out["domain/x"] = "requests=1"  # not a domid: ignored
    return out


def test_figures_parse_and_skip_what_they_do_not_know() -> None:
    assert parse_figures("requests=3 nodes=4 odd new=x =5 eagain=0") == {
        "requests": 3,
        "nodes": 4,
        "eagain": 0,
    }


def test_per_domain_series_are_bounded_and_the_rest_summed() -> None:
    stats = Stats.from_nodes(nodes(10))
    found = samples(exposition(stats, max_domains=3).decode())
    # dom0 first, then the busiest; everyone else in "other", summed.
    assert domids(found) == {"0", "1", "2", "other"}
    other = found[("xenstored_domain_requests_total", (("domid", "other"),))]
    assert other == sum(100 - d for d in range(3, 10))
    assert found[("xenstored_domain_nodes", (("domid", "other"),))] == sum(range(3, 10))
    assert found[("xenstored_domain_quota", (("domid", "1"), ("quota", "nodes")))] == 1000
    assert found[("xenstored_requests_total", (("type", "READ"),))] == 7
    assert found[("xenstored_nodes", ())] == 40
    assert ("xenstored_resident_memory_bytes", ()) in found
    assert domids(samples(exposition(stats, max_domains=0).decode())) == {"other"}
    assert domids(samples(exposition(stats, max_domains=100).decode())) == {
        str(d) for d in range(10)
    }
    # OpenMetrics too, as its own parser sees it (it insists on the final # EOF).
    text = exposition(stats, max_domains=3, openmetrics=True).decode()
    assert text.endswith("# EOF\n")
    assert any(f.name == "xenstored_domain_requests" for f in parse_openmetrics(text))


def metrics_url(daemon: DaemonProcess) -> str:
    """The endpoint the daemon logged (it was given port 0)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = re.search(r"metrics on (http://\S+/metrics)", daemon.stderr())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no metrics endpoint logged:\n{daemon.stderr()}")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return str(reply.read().decode())


def test_endpoint_during_a_bootstorm(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(
        "--no-journal", "--metrics-listen", "127.0.0.1:0", "--set", "metrics/domains=8"
    )
    url = metrics_url(daemon)
    assert url.startswith("http://127.0.0.1:")
    storm = bootstorm(daemon.socket, vms=24)
    scraped: list[str] = []
    failures: list[BaseException] = []

    def scraper() -> None:
        while storm.poll() is None:
            try:
                scraped.append(scrape(url))
            except BaseException as err:  # reported below
                failures.append(err)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        _, err = storm.communicate(timeout=240)
    finally:
        storm.kill()
        thread.join(60)
    assert storm.returncode == 0, err.decode()
    assert not failures, failures
    scraped.append(scrape(url))
    assert len(scraped) >= 2
    for text in scraped:
        found = samples(text)  # every scrape parses
        assert len(domids(found) - {"other"}) <= 8
    last = samples(scraped[-1])
    assert last[("xenstored_domains", ())] == 24
    assert "0" in domids(last) and "other" in domids(last) and len(domids(last)) == 9
    assert last[("xenstored_requests_total", (("type", "TRANSACTION_START"),))] >= 24 * 3
    total = sum(v for (n, _), v in last.items() if n == "xenstored_domain_requests_total")
    assert total > 0
    # The command prints the same families from the same nodes.
    out = pyxenstore(daemon.socket, "metrics", "--max-domains", "8")
    assert out.returncode == 0, out.stderr
    names = {f.name for f in parse(out.stdout)}
    assert names == {f.name for f in parse(scraped[-1])}
    assert "xenstored_domain_quota" in names


def test_a_stuck_scraper_does_not_hold_clients(daemon_factory: DaemonFactory) -> None:
    """A scraper that connects and never sends its request holds one HTTP thread; the
    daemon goes on answering its clients, and other scrapes."""
    daemon = daemon_factory("--no-journal", "--metrics-listen", "127.0.0.1:0")
    url = metrics_url(daemon)
    host, port = url.split("/")[2].split(":")
    stuck = [socket.create_connection((host, int(port))) for _ in range(3)]
    try:
        with SyncClient(daemon.socket, timeout=10) as xs:
            for i in range(50):
                xs.write(f"/busy/{i}", b"x")
        assert "xenstored_nodes" in scrape(url)
    finally:
        for s in stuck:
            s.close()


def test_bad_listen_addresses_are_one_line(daemon_factory: DaemonFactory) -> None:
    bad = run("-N", "--metrics-listen", "localhost:http")
    assert bad.returncode == 1
    assert bad.stderr == (
        "pyxenstored: --metrics-listen 'localhost:http': want HOST:PORT or PORT\n"
    )


@pytest.mark.parametrize(
    "text,expected",
    [("9100", ("localhost", 9100)), ("0.0.0.0:9100", ("0.0.0.0", 9100)), ("[::1]:1", ("::1", 1))],
)
def test_listen_address_forms(text: str, expected: tuple[str, int]) -> None:
    from pyxenstored.runtime.metrics import parse_listen

    assert parse_listen(text) == expected
