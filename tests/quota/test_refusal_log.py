"""The refusal log: one line per refusal naming the domain, the quota (or permission, or
conflict fairness), the limit and the setting that raises it; rate-limited per (domain,
kind) so a guest hammering a limit cannot flood the log."""

from __future__ import annotations

import logging

import pytest
from kit.config import ConfigKit
from kit.engine import z

from pyxenstored.core.refusals import RefusalLog
from pyxenstored.protocol.wire import Op

LOGGER = "pyxenstored.quota"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_rate_limited_per_domain_and_quota(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    refusals = RefusalLog(interval=1.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(50):
            refusals.note(5, "nodes")
        assert lines(caplog) == ["domain 5: request refused by the nodes quota"]
        refusals.note(5, "watches")  # another quota, and another domain, log at once
        refusals.note(6, "nodes")
        assert len(lines(caplog)) == 3
        clock.now += 0.999
        refusals.note(5, "nodes")
        assert len(lines(caplog)) == 3
        clock.now += 0.001
        refusals.note(5, "nodes")
    assert lines(caplog)[-1] == "domain 5: request refused by the nodes quota (50 more not logged)"
    assert refusals.counts[(5, "nodes")] == 52
    assert refusals.counts[(5, "watches")] == refusals.counts[(6, "nodes")] == 1


def test_soft_limit_line_says_over(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(clock=Clock())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        refusals.note(9, "soft-memory", refused=False)
    assert lines(caplog) == ["domain 9: over the soft-memory quota"]


def test_engine_logs_a_refused_request_once(caplog: pytest.LogCaptureFixture) -> None:
    k = ConfigKit()
    clock = Clock()
    k.engine.refusals = RefusalLog(interval=10.0, clock=clock)
    guest = k.guest(5)
    k.set("quota/watches", 1)
    k.ok(guest, Op.WATCH, z("/a", "t"))
    k.ok(guest, Op.WATCH, z("/b", "t"))  # <=4.21: one more than the limit
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(20):
            assert k.error(guest, Op.WATCH, z(f"/c{i}", "t")) == "E2BIG"
        first = (
            "domain 5: request refused by the watches quota: limit 1 (quota/watches, or for "
            "this domain only: domain/5/quota/watches)"
        )
        assert lines(caplog) == [first]
        clock.now += 10
        k.error(guest, Op.WATCH, z("/d", "t"))
    assert lines(caplog)[1] == first + " (19 more not logged)"
    assert k.engine.refusals.counts[(5, "watches")] == 21


@pytest.mark.parametrize(
    "quota,setting",
    [
        ("nodes", ("quota/nodes", 1)),
        ("node-size", ("quota/node-size", 30)),
        ("memory", ("quota/memory", 60)),
        ("transactions", ("quota/transactions", 1)),  # 4.22: 0 + 1 >= 1 refuses
    ],
)
def test_each_quota_is_named(
    caplog: pytest.LogCaptureFixture, quota: str, setting: tuple[str, int]
) -> None:
    k = ConfigKit(rule="4.22")
    guest = k.guest(5)
    k.set(*setting)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        if quota == "transactions":
            k.error(guest, Op.TRANSACTION_START, z(""))
        else:
            k.write_error(guest, "/local/domain/5/x", "y" * 40)
    limit = setting[1]
    assert (
        f"domain 5: request refused by the {quota} quota: limit {limit} ({setting[0]}, "
        f"or for this domain only: domain/5/quota/{quota})"
    ) in lines(caplog)


def test_the_line_names_the_setting_in_force(caplog: pytest.LogCaptureFixture) -> None:
    """A domain's own override, or its class, is what raises its limit: the line says so."""
    k = ConfigKit()
    guest = k.guest(5)
    k.set("domain/5/quota/watches", 1)
    other = k.guest(6)
    k.set("class/small/quota/watches", 0)  # the class exists...
    k.set("class/small/quota/watches", 1)
    k.set("domain/6/class", "small")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for conn in (guest, other):
            for i in range(3):
                k.call(conn, Op.WATCH, z(f"/w{i}", "t"))
    assert lines(caplog) == [
        "domain 5: request refused by the watches quota: limit 1 (domain/5/quota/watches)",
        "domain 6: request refused by the watches quota: limit 1 (class/small/quota/watches, "
        "or for this domain only: domain/6/quota/watches)",
    ]


def test_permission_refusals_are_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    k = ConfigKit()
    clock = Clock()
    k.engine.refusals = RefusalLog(interval=10.0, clock=clock)
    guest = k.guest(5)
    k.write(k.dom0, "/secret", "x")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(5):
            assert k.error(guest, Op.READ, z("/secret")) == "EACCES"
        assert k.error(guest, Op.INTRODUCE, z("7", "1", "1")) == "EACCES"
        clock.now += 10
        k.error(guest, Op.WRITE, z("/secret", "y"))
    assert lines(caplog) == [
        "domain 5: request refused: permission denied: READ /secret",
        "domain 5: request refused: permission denied: WRITE /secret (5 more not logged)",
    ]
    assert k.engine.refusals.counts[(5, "permission")] == 7
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == LOGGER)


def test_conflict_throttling_is_logged_with_its_settings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A guest whose writes keep failing dom0's transactions is throttled, and the log
    says which domain, how often, and which settings govern it."""
    k = ConfigKit(settings={"conflict/burst-limit": 2.0})
    guest = k.guest(5)
    k.write(k.dom0, "/shared", "0")
    k.set_perms(k.dom0, "/shared", "n0", "b5")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(3):
            tx = k.start(k.dom0)
            k.read(k.dom0, "/shared", tx=tx)
            k.write(k.dom0, "/mine", str(i), tx=tx)
            k.write(guest, "/shared", f"guest {i}")
            assert k.end(k.dom0, tx) == "EAGAIN"
    assert k.engine.conflict_guard.paused(5)
    logged = lines(caplog)
    assert logged[0].startswith(
        "domain 5: throttled by conflict fairness: its changes failed 2 transactions"
    )
    assert "limit 2 conflicts: conflict/burst-limit" in logged[0]
    assert "conflict/replenish-seconds" in logged[0]
    assert len(logged) == 1  # once per interval, however often it is blamed again
    assert k.engine.refusals.counts[(5, "conflict")] == 2


def test_eagain_is_counted_per_domain_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    k = ConfigKit()
    guest = k.guest(5)
    k.write(k.dom0, "/local/domain/5/x", "0")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        tx = k.start(guest)
        k.read(guest, "/local/domain/5/x", tx=tx)
        k.write(guest, "/local/domain/5/y", "1", tx=tx)
        k.write(k.dom0, "/local/domain/5/x", "changed")
        assert k.end(guest, tx) == "EAGAIN"
    assert lines(caplog) == []
    assert k.engine.refusals.again == {5: 1}


def test_privileged_domain_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    k = ConfigKit()
    k.set("quota/nodes", 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(5):
            k.write(k.dom0, f"/x/{i}", "")
    assert lines(caplog) == []
    assert k.engine.refusals.counts == {}
