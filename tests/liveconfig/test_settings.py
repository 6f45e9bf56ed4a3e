"""Every setting of the registry through its node under /tool/xenstored/: the default is
readable, a valid value takes effect (observed where the daemon uses it), an invalid
one is EINVAL and changes nothing, RM resets to the default, a watch fires on change,
and a write inside a transaction takes effect at commit only, never on abort.

The table below must name every setting of ``SETTINGS``: a new setting fails
:func:`test_every_setting_is_covered` until it gets a case here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kit.config import CONFIG, ConfigKit
from kit.engine import z

from pyxenstored.liveconfig.registry import QUOTAS, SETTINGS
from pyxenstored.protocol.wire import Op
from pyxenstored.runtime.metrics import MetricsServer
from pyxenstored.runtime.server import Server, ServerConfig

DRIVER = 3
DEVICE = f"/local/domain/{DRIVER}/backend/vbd/10/51712"


def with_access_log(k: ConfigKit, what: Callable[[Any], Any]) -> Any:
    """``what(server.access_log)`` while the access log is on (switched on for the look
    if needed, then back to its previous state)."""
    was_on = k.registry.get("log/access")
    if not was_on:
        k.set("log/access", "on")
    try:
        assert k.server is not None and k.server.access_log is not None
        return what(k.server.access_log)
    finally:
        if not was_on:
            k.ok(k.dom0, Op.RM, z(CONFIG + "log/access"))


def get_quota(name: str) -> Callable[[ConfigKit], int]:
    return lambda k: int(k.ok(k.dom0, Op.GET_QUOTA, z(name))[:-1])


def driver_limit(name: str) -> Callable[[ConfigKit], int]:
    """The limit of a driver domain serving one device (base + one allowance)."""
    return lambda k: k.engine.quota(DRIVER, name)


@dataclass(frozen=True)
class Case:
    valid: str  #: a valid value other than the default
    expect: Any  #: what ``observe`` gives once ``valid`` is in force
    observe: Callable[[ConfigKit], Any]  #: the value as the daemon uses it
    bad: tuple[bytes, ...]


INT_BAD = (b"-1", b"abc", b"1.5", b"4294967296", b"", b"0x10", b"\xff")
CHOICE_BAD = (b"bogus", b"", b"INFO ")

CASES: dict[str, Case] = {
    "log/level": Case(
        "debug", logging.DEBUG, lambda k: logging.getLogger("pyxenstored").level, CHOICE_BAD
    ),
    "log/access": Case(
        "on", True, lambda k: k.engine.on_request is not None, (b"maybe", b"2", b"")
    ),
    "log/access-file": Case(
        "access-test.log",  # relative: the fixture runs in a temporary directory
        "access-test.log",
        lambda k: with_access_log(k, lambda log: log.path),
        (b"a\0b", b"caf\xc3\xa9"),
    ),
    "log/access-ops": Case(
        "WRITE READ",
        frozenset({"READ", "WRITE"}),
        lambda k: with_access_log(k, lambda log: log.ops),
        (b"READ BOGUS", b"read", b"WATCH_EVENTS"),
    ),
    "log/access-replies": Case(
        "OK ENOENT",
        frozenset({"OK", "ENOENT"}),
        lambda k: with_access_log(k, lambda log: log.replies),
        (b"OK ENOPE", b"ok"),
    ),
    "log/access-format": Case(
        "c", "c", lambda k: with_access_log(k, lambda log: log.format), CHOICE_BAD
    ),
    "log/refusal-seconds": Case(
        "2.5", 2.5, lambda k: k.engine.refusals.interval, (b"nan", b"-1", b"inf", b"abc", b"")
    ),
    "metrics/domains": Case(
        "7",
        7,
        # What a scrape of --metrics-listen bounds its per-domain series by.
        lambda k: MetricsServer(k.engine, k.registry, "localhost", 0).snapshot()[1],
        INT_BAD,
    ),
    **{
        f"quota/{q}": Case("1500", 1500, get_quota(q), INT_BAD)
        for q in QUOTAS  # 1500 keeps path-max above the config paths' length
    },
    "quota-soft/memory": Case("4096", 4096, get_quota("soft-memory"), INT_BAD),
    "quota/rule": Case("4.22", "4.22", lambda k: k.engine.limits.rule, (b"4.20", b"", b"4.2")),
    "driver/nodes": Case("99", 1000 + 99, driver_limit("nodes"), INT_BAD),
    "driver/watches": Case("99", 128 + 99, driver_limit("watches"), INT_BAD),
    "driver/memory": Case("99", 2621440 + 99, driver_limit("memory"), INT_BAD),
    "transaction/conflicts": Case(
        "generation", "generation", lambda k: k.engine.conflicts, CHOICE_BAD
    ),
    "conflict/burst-limit": Case(
        "2.5",
        2.5,
        lambda k: k.engine.conflict_guard.burst,
        (b"nan", b"-1", b"inf", b"abc", b""),
    ),
    "conflict/replenish-seconds": Case(
        "0.2",
        0.2,
        lambda k: k.server.rings.tick if k.server and k.server.rings else None,
        (b"nan", b"-0.5", b"inf", b"soon"),
    ),
    "conflict/aggregate": Case(
        "off", False, lambda k: k.engine.conflict_guard.aggregate, (b"maybe", b"")
    ),
    "features": Case(
        "3",
        3,
        # What a domain introduced from now on is offered (GET_FEATURE before INTRODUCE).
        lambda k: int(k.ok(k.dom0, Op.GET_FEATURE, z("77"))[:-1]),
        (b"16", b"-1", b"all", b""),
    ),
    "limits/event-queue-bytes": Case(
        "4096", 4096, lambda k: k.engine.event_queue_max, (b"1023", *INT_BAD)
    ),
    "limits/socket-buffer-bytes": Case(
        "8192",
        8192,
        lambda k: k.server.socket_buffer_max if k.server else None,
        (b"4095", *INT_BAD),
    ),
}
NAMES = [s.name for s in SETTINGS]


@pytest.fixture
def k(rkit: ConfigKit, monkeypatch: pytest.MonkeyPatch) -> ConfigKit:
    """A daemon with rings (simulated Xen), so every runtime consumer of a setting exists."""
    assert rkit.tmp is not None
    monkeypatch.chdir(rkit.tmp)
    # A driver domain serving one device, for the driver/* allowances.
    rkit.ok(rkit.dom0, Op.MKDIR, z(DEVICE))
    rkit.ok(rkit.dom0, Op.SET_PERMS, z(DEVICE, f"n{DRIVER}"))
    return rkit


def test_every_setting_is_covered() -> None:
    assert set(CASES) == set(NAMES)
    assert len(NAMES) == len(set(NAMES))


@pytest.mark.parametrize("name", NAMES)
def test_default_is_readable(k: ConfigKit, name: str) -> None:
    spec = k.registry.spec(name)
    assert k.setting(name) == spec.kind.format(spec.default)
    assert k.registry.get(name) == spec.default
    assert CASES[name].valid != k.setting(name)


@pytest.mark.parametrize("name", NAMES)
def test_write_takes_effect(k: ConfigKit, name: str) -> None:
    case = CASES[name]
    before = case.observe(k)
    assert before != case.expect
    k.set(name, case.valid)
    assert k.setting(name) == case.valid
    assert k.registry.get(name) == k.registry.parse(name, case.valid)
    assert case.observe(k) == case.expect


@pytest.mark.parametrize("name", NAMES)
def test_invalid_value_is_einval_and_changes_nothing(k: ConfigKit, name: str) -> None:
    case = CASES[name]
    before = (k.setting(name), k.registry.get(name), case.observe(k))
    for bad in case.bad:
        payload = (CONFIG + name).encode() + b"\0" + bad
        reply = k.request(k.dom0, Op.WRITE, payload).reply
        assert (reply.op, reply.payload) == (Op.ERROR, b"EINVAL\0"), bad
        assert (k.setting(name), k.registry.get(name), case.observe(k)) == before, bad


@pytest.mark.parametrize("name", NAMES)
def test_rm_resets_to_default(k: ConfigKit, name: str) -> None:
    case = CASES[name]
    before = case.observe(k)
    default = k.setting(name)
    k.set(name, case.valid)
    k.ok(k.dom0, Op.RM, z(CONFIG + name))
    assert k.setting(name) == default
    assert k.registry.get(name) == k.registry.spec(name).default
    assert case.observe(k) == before
    k.ok(k.dom0, Op.RM, z(CONFIG + name))  # again: still there, still the default
    assert k.setting(name) == default


@pytest.mark.parametrize("name", NAMES)
def test_watch_fires_on_change(k: ConfigKit, name: str) -> None:
    watcher = k.engine.connect(k.dom0.caller, "socket")
    path = CONFIG + name
    k.ok(watcher, Op.WATCH, z(path, "tok"))
    assert k.take_events(watcher) == [(path, "tok")]  # the initial event
    k.set(name, CASES[name].valid)
    assert (path, "tok") in k.take_events(watcher)
    k.ok(k.dom0, Op.RM, z(path))
    assert (path, "tok") in k.take_events(watcher)
    k.request(k.dom0, Op.WRITE, path.encode() + b"\0" + CASES[name].bad[0])  # refused
    assert k.take_events(watcher) == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("commit", [True, False], ids=["commit", "abort"])
def test_transaction_write_applies_at_commit_only(k: ConfigKit, name: str, commit: bool) -> None:
    case = CASES[name]
    before = (k.setting(name), k.registry.get(name), case.observe(k))
    tx = k.start(k.dom0)
    k.write(k.dom0, CONFIG + name, case.valid, tx=tx)
    assert k.read(k.dom0, CONFIG + name, tx=tx) == case.valid.encode()
    assert (k.setting(name), k.registry.get(name), case.observe(k)) == before
    k.commit(k.dom0, tx, keep=commit)
    if commit:
        assert k.setting(name) == case.valid
        assert case.observe(k) == case.expect
    else:
        assert (k.setting(name), k.registry.get(name), case.observe(k)) == before


@pytest.mark.parametrize("name", NAMES)
def test_transaction_rm_resets_at_commit(k: ConfigKit, name: str) -> None:
    k.set(name, CASES[name].valid)
    tx = k.start(k.dom0)
    k.ok(k.dom0, Op.RM, z(CONFIG + name), tx=tx)
    assert k.setting(name) == CASES[name].valid
    k.commit(k.dom0, tx)
    spec = k.registry.spec(name)
    assert k.setting(name) == spec.kind.format(spec.default)
    assert k.registry.get(name) == spec.default


@pytest.mark.parametrize("name", NAMES)
def test_invalid_value_in_a_transaction_is_refused_at_once(k: ConfigKit, name: str) -> None:
    tx = k.start(k.dom0)
    payload = (CONFIG + name).encode() + b"\0" + CASES[name].bad[0]
    assert k.request(k.dom0, Op.WRITE, payload, tx=tx).reply.payload == b"EINVAL\0"
    k.commit(k.dom0, tx)
    spec = k.registry.spec(name)
    assert k.registry.get(name) == spec.default


def test_settings_listing_matches_the_registry(k: ConfigKit) -> None:
    """Every setting is a node, and every node under a settings directory is a setting."""
    dirs = {n.rsplit("/", 1)[0] for n in NAMES if "/" in n}
    for d in dirs:
        listed = k.ok(k.dom0, Op.DIRECTORY, z(CONFIG + d)).split(b"\0")[:-1]
        assert sorted(f"{d}/{c.decode()}" for c in listed) == sorted(
            n for n in NAMES if n.startswith(d + "/")
        )
    assert k.error(k.dom0, Op.READ, z(CONFIG + "domid")) == "ENOENT"  # libxl's stubdom probe


def test_unknown_setting_is_einval(k: ConfigKit) -> None:
    for path in ("quota/bogus", "log/bogus", "bogus", "quota-soft/nodes", "domain/5/x"):
        assert k.write_error(k.dom0, CONFIG + path, "1") == "EINVAL", path
        assert k.error(k.dom0, Op.READ, z(CONFIG + path)) == "ENOENT"
    assert k.error(k.dom0, Op.MKDIR, z(CONFIG + "quota/newdir")) == "EINVAL"


def test_config_roots_and_permissions_are_fixed(k: ConfigKit) -> None:
    for path in ("/tool", "/tool/xenstored", CONFIG + "quota", CONFIG + "stats"):
        assert k.error(k.dom0, Op.RM, z(path)) == "EACCES", path
    assert k.error(k.dom0, Op.SET_PERMS, z(CONFIG + "quota/nodes", "n0", "r5")) == "EINVAL"
    assert k.ok(k.dom0, Op.GET_PERMS, z(CONFIG + "quota/nodes")) == b"n0\0"


def test_start_values_are_in_the_tree() -> None:
    """Command-line start values (ServerConfig.settings) are what the nodes show."""
    server = Server(ServerConfig(socket_path=None, settings={"quota/nodes": 2222}))
    k = ConfigKit(server=server)
    assert k.setting("quota/nodes") == "2222"
    assert k.ok(k.dom0, Op.GET_QUOTA, z("nodes")) == b"2222\0"


def test_statistics_prefix_is_a_whole_component(k: ConfigKit) -> None:
    assert k.write_error(k.dom0, CONFIG + "stats2/x", "1") == "EINVAL"
