"""The quota refusal log: one line per refusal naming the domain and the quota,
rate-limited per (domain, quota) so a guest hammering a limit cannot flood the log."""

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
        assert lines(caplog) == ["domain 5: request refused by the watches quota"]
        clock.now += 10
        k.error(guest, Op.WATCH, z("/d", "t"))
    assert lines(caplog)[1] == "domain 5: request refused by the watches quota (19 more not logged)"
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
    assert f"domain 5: request refused by the {quota} quota" in lines(caplog)


def test_privileged_domain_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    k = ConfigKit()
    k.set("quota/nodes", 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(5):
            k.write(k.dom0, f"/x/{i}", "")
    assert lines(caplog) == []
    assert k.engine.refusals.counts == {}
