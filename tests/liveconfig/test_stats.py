"""Statistics under /tool/xenstored/stats/: readable by dom0 as decimal counters,
computed at read time (so they follow activity), and read-only (EACCES)."""

from __future__ import annotations

import pytest
from kit.config import ConfigKit
from kit.engine import z

from pyxenstored.protocol.wire import Op

STATS = "/tool/xenstored/stats"


def stat(k: ConfigKit, name: str) -> int:
    text = k.read(k.dom0, f"{STATS}/{name}")
    assert text.isdigit(), (name, text)
    return int(text)


def all_stats(k: ConfigKit) -> list[str]:
    """Every leaf below stats/, found by DIRECTORY as a client would."""
    found, todo = [], [""]
    while todo:
        rel = todo.pop()
        children = k.ok(k.dom0, Op.DIRECTORY, z(STATS + rel)).split(b"\0")[:-1]
        if not children and rel:
            found.append(rel[1:])
        todo.extend(f"{rel}/{c.decode()}" for c in children)
    return sorted(found)


def test_every_counter_is_a_decimal_readable_by_dom0(skit: ConfigKit) -> None:
    names = all_stats(skit)
    for expected in (
        "connections",
        "domains",
        "nodes",
        "watches",
        "requests/total",
        "requests/READ",
        "requests/WRITE",
        "transactions/open",
        "transactions/committed",
        "transactions/refused",
        "events/sent",
        "events/dropped",
        "memory/store",
        "memory/rss",  # added by the runtime
    ):
        assert expected in names
    for name in names:
        stat(skit, name)
        assert skit.ok(skit.dom0, Op.GET_PERMS, z(f"{STATS}/{name}")) == b"n0\0"
    assert stat(skit, "memory/rss") > 0


def test_counters_follow_activity(skit: ConfigKit) -> None:
    k = skit
    reads, total, nodes = stat(k, "requests/READ"), stat(k, "requests/total"), stat(k, "nodes")
    for _ in range(5):
        k.read(k.dom0, "/tool")
    # Each READ of a counter is itself a READ, counted before it is answered.
    assert stat(k, "requests/READ") == reads + 5 + 3
    assert stat(k, "requests/total") == total + 5 + 3
    k.write(k.dom0, "/stats-test/a", "x")
    assert stat(k, "nodes") == nodes + 2
    assert stat(k, "requests/WRITE") >= 1

    watches, connections = stat(k, "watches"), stat(k, "connections")
    watcher = k.engine.connect(k.dom0.caller, "socket")
    k.ok(watcher, Op.WATCH, z("/stats-test", "t"))
    assert (stat(k, "watches"), stat(k, "connections")) == (watches + 1, connections + 1)
    sent = stat(k, "events/sent")
    k.write(k.dom0, "/stats-test/a", "y")
    assert stat(k, "events/sent") == sent + 1

    tx = k.start(k.dom0)
    assert stat(k, "transactions/open") == 1
    committed = stat(k, "transactions/committed")
    k.write(k.dom0, "/stats-test/a", "z", tx=tx)
    k.commit(k.dom0, tx)
    assert (stat(k, "transactions/open"), stat(k, "transactions/committed")) == (0, committed + 1)

    refused = stat(k, "transactions/refused")
    tx = k.start(k.dom0)
    k.read(k.dom0, "/stats-test/a", tx=tx)
    k.write(k.dom0, "/stats-test/b", "1", tx=tx)
    k.write(watcher, "/stats-test/a", "changed")  # invalidates what tx read
    assert k.error(k.dom0, Op.TRANSACTION_END, z("T"), tx=tx) == "EAGAIN"
    assert stat(k, "transactions/refused") == refused + 1

    domains, store = stat(k, "domains"), stat(k, "memory/store")
    k.guest(5)
    assert stat(k, "domains") == domains + 1
    k.write(k.dom0, "/stats-test/big", "x" * 3000)
    assert stat(k, "memory/store") >= store + 3000


@pytest.mark.parametrize("name", ["nodes", "requests/total", "memory/rss", "new-one", "x/y"])
def test_writes_are_eacces(skit: ConfigKit, name: str) -> None:
    k = skit
    path = f"{STATS}/{name}"
    existed = path in k.engine.tree.nodes
    assert k.write_error(k.dom0, path, "0") == "EACCES"
    tx = k.start(k.dom0)
    assert k.write_error(k.dom0, path, "0", tx=tx) == "EACCES"
    k.commit(k.dom0, tx)
    if existed:
        assert k.error(k.dom0, Op.RM, z(path)) == "EACCES"
        assert k.read(k.dom0, path).isdigit()
    else:
        assert path not in k.engine.tree.nodes
    assert k.error(k.dom0, Op.RM, z(STATS)) == "EACCES"
    assert k.error(k.dom0, Op.SET_PERMS, z(f"{STATS}/nodes", "n0", "r5")) == "EINVAL"


def test_writes_by_control_or_quota_cannot_touch_statistics(skit: ConfigKit) -> None:
    nodes = skit.engine.tree.nodes
    before = sorted(p for p in nodes if p.startswith(STATS))
    skit.control("quota", "set", "nodes", "5")
    skit.ok(skit.dom0, Op.SET_QUOTA, z("nodes", "6"))
    assert sorted(p for p in nodes if p.startswith(STATS)) == before
