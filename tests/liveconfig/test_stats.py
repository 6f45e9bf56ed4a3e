"""Statistics under /tool/xenstored/stats/: readable by dom0 as decimal counters (a
domain's node: one line of name=decimal pairs), computed at read time (so they follow
activity), and read-only (EACCES)."""

from __future__ import annotations

import pytest
from kit.config import ConfigKit
from kit.engine import z

from pyxenstored.liveconfig.stats import DOMAIN_FIGURES, DOMAIN_QUOTAS
from pyxenstored.protocol.wire import Op

STATS = "/tool/xenstored/stats"


def stat(k: ConfigKit, name: str) -> int:
    text = k.read(k.dom0, f"{STATS}/{name}")
    assert text.isdigit(), (name, text)
    return int(text)


def figures(k: ConfigKit, domid: int) -> dict[str, int]:
    """A domain's statistics node, every pair name=decimal, in the documented order."""
    text = k.read(k.dom0, f"{STATS}/domain/{domid}").decode()
    pairs = [p.split("=") for p in text.split(" ")]
    assert all(len(p) == 2 and p[1].isdigit() for p in pairs), text
    names = [n for n, _ in pairs]
    assert names == [*DOMAIN_FIGURES, *(f"{q}-quota" for q in DOMAIN_QUOTAS)]
    return {n: int(v) for n, v in pairs}


def domain_ids(k: ConfigKit) -> list[int]:
    listing = k.ok(k.dom0, Op.DIRECTORY, z(STATS + "/domain"))
    return sorted(int(d) for d in listing.split(b"\0")[:-1])


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
        if name.startswith("domain/"):
            figures(skit, int(name[7:]))
        else:
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


def test_a_node_per_domain_while_it_lives(skit: ConfigKit) -> None:
    k = skit
    assert domain_ids(k) == [0]  # the privileged domain, from the start
    k.guest(5)
    k.guest(7)
    assert domain_ids(k) == [0, 5, 7]
    k.ok(k.dom0, Op.RELEASE, z("5"))
    assert domain_ids(k) == [0, 7]
    assert k.error(k.dom0, Op.READ, z(f"{STATS}/domain/5")) == "ENOENT"
    assert k.write_error(k.dom0, f"{STATS}/domain/7", "x") == "EACCES"
    assert k.write_error(k.dom0, f"{STATS}/domain/9", "x") == "EACCES"
    guest = k.guest(5)  # the same id again starts from zero
    assert figures(k, 5)["requests"] == 0
    assert k.error(guest, Op.READ, z(f"{STATS}/domain/5")) == "EACCES"


def test_domain_figures_follow_activity(skit: ConfigKit) -> None:
    k = skit
    guest = k.guest(5)
    k.set("quota/nodes", 50)
    k.set("domain/5/quota/watches", 3)
    f = figures(k, 5)
    assert (f["nodes-quota"], f["watches-quota"], f["memory-quota"]) == (50, 3, 2621440)
    assert figures(k, 0)["nodes-quota"] == 0  # the privileged domain has no quota
    nodes = f["nodes"]

    for i in range(4):
        k.write(guest, f"/local/domain/5/n{i}", "v" * 100)
    for i in range(4):  # <=4.21: one more than the limit
        k.ok(guest, Op.WATCH, z(f"/local/domain/5/n{i}", "t"))
    assert k.error(guest, Op.WATCH, z("/local/domain/5/n9", "t")) == "E2BIG"
    assert k.error(guest, Op.READ, z("/tool/xenstored/quota/nodes")) == "EACCES"
    tx = k.start(guest)
    f = figures(k, 5)
    assert f["nodes"] == nodes + 4
    assert f["memory"] >= 400
    assert (f["watches"], f["transactions"], f["refused"], f["denied"]) == (4, 1, 1, 1)
    assert f["requests"] == 4 + 5 + 1 + 1
    k.read(guest, "/local/domain/5/n0", tx=tx)
    k.write(guest, "/local/domain/5/n9", "x", tx=tx)
    k.write(k.dom0, "/local/domain/5/n0", "changed")
    assert k.end(guest, tx) == "EAGAIN"
    f = figures(k, 5)
    assert (f["eagain"], f["transactions"], f["blamed"], f["throttled"]) == (1, 0, 0, 0)

    # requests outlive a connection: dom0's socket tools come and go
    before = figures(k, 0)["requests"]
    tool = k.engine.connect(k.dom0.caller, "socket")
    for _ in range(3):
        k.ok(tool, Op.READ, z("/local/domain/5/n0"))
    k.engine.disconnect(tool)
    assert figures(k, 0)["requests"] == before + 3 + 1  # + the READ of the figures


def test_conflicts_caused_and_throttling(skit: ConfigKit) -> None:
    k = skit
    k.set("conflict/burst-limit", 1)
    guest = k.guest(5)
    k.write(k.dom0, "/shared", "0")
    k.set_perms(k.dom0, "/shared", "n0", "b5")
    tx = k.start(k.dom0)
    k.read(k.dom0, "/shared", tx=tx)
    k.write(k.dom0, "/other", "1", tx=tx)
    k.write(guest, "/shared", "guest")
    assert k.end(k.dom0, tx) == "EAGAIN"
    f = figures(k, 5)
    assert (f["blamed"], f["throttled"]) == (1, 1)
    assert figures(k, 0)["eagain"] == 1
