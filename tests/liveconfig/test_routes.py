"""The three routes to a setting agree: its node under /tool/xenstored/, CONTROL
(``quota``, ``quota-soft``, ``log``, ``logfile``) and GET/SET_QUOTA. A change through
any of them shows through the other two, fires a watch on the node, and a bad value is
EINVAL with nothing changed (xenstore-protocol.md §6.1, §9.1)."""

from __future__ import annotations

import pytest
from kit.config import CONFIG, ConfigKit
from kit.engine import z

from pyxenstored.liveconfig.registry import QUOTAS
from pyxenstored.protocol.wire import Op

ALL_QUOTAS = (*QUOTAS, "soft-memory")


def node_of(name: str) -> str:
    return "quota-soft/memory" if name == "soft-memory" else f"quota/{name}"


def control_table(k: ConfigKit, name: str) -> int:
    """The value CONTROL ``quota`` (or ``quota-soft``) shows for ``name``."""
    text = k.control("quota-soft" if name == "soft-memory" else "quota").decode()
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key.strip() == name:
            return int(rest.split()[0])
    raise AssertionError(f"{name} missing from:\n{text}")


def views(k: ConfigKit, name: str) -> tuple[str, int, int, int]:
    """(node text, GET_QUOTA, CONTROL table, the engine's limit for a guest)."""
    return (
        k.setting(node_of(name)),
        int(k.ok(k.dom0, Op.GET_QUOTA, z(name))[:-1]),
        control_table(k, name),
        k.engine.quotas.limits.value(name),
    )


def set_via(k: ConfigKit, route: str, name: str, value: int) -> None:
    if route == "tree":
        k.set(node_of(name), value)
    elif route == "control":
        if name == "soft-memory":
            assert k.control("quota-soft", "set", "memory", str(value)) == b"OK\0"
        else:
            assert k.control("quota", "set", name, str(value)) == b"OK\0"
    else:
        assert k.ok(k.dom0, Op.SET_QUOTA, z(name, str(value))) == b"OK\0"


@pytest.fixture
def k() -> ConfigKit:
    return ConfigKit()


@pytest.mark.parametrize("route", ["tree", "control", "set_quota"])
@pytest.mark.parametrize("name", ALL_QUOTAS)
def test_quota_routes_agree_and_fire_the_watch(k: ConfigKit, name: str, route: str) -> None:
    value = 1777
    watcher = k.engine.connect(k.dom0.caller, "socket")
    path = CONFIG + node_of(name)
    k.ok(watcher, Op.WATCH, z(path, "w"))
    k.take_events(watcher)
    set_via(k, route, name, value)
    assert views(k, name) == (str(value), value, value, value)
    assert k.take_events(watcher) == [(path, "w")]


@pytest.mark.parametrize("name", ALL_QUOTAS)
def test_rm_of_the_node_resets_every_route(k: ConfigKit, name: str) -> None:
    default = views(k, name)
    set_via(k, "set_quota", name, 1777)
    k.ok(k.dom0, Op.RM, z(CONFIG + node_of(name)))
    assert views(k, name) == default


@pytest.mark.parametrize(
    "args",
    [
        ("quota", "set", "nodes", "0"),  # C: values are at least 1
        ("quota", "set", "nodes", "-3"),
        ("quota", "set", "nodes", "lots"),
        ("quota", "set", "nodes"),
        ("quota", "set", "bogus", "5"),
        ("quota", "set", "soft-memory", "5"),
        ("quota-soft", "set", "nodes", "5"),
        ("quota-soft", "set", "memory", "x"),
        ("quota", "1", "2"),
        ("quota", "abc"),
        ("log", "maybe"),
        ("log", "on", "off"),
        ("logfile",),
        ("logfile", ""),
        ("print",),
        ("memreport", "a", "b"),
        ("no-such-command",),
    ],
)
def test_bad_control_is_einval_and_changes_nothing(k: ConfigKit, args: tuple[str, ...]) -> None:
    before = {name: views(k, name) for name in ALL_QUOTAS}
    log = (k.setting("log/access"), k.setting("log/access-file"))
    assert k.error(k.dom0, Op.CONTROL, z(*args)) == "EINVAL"
    assert {name: views(k, name) for name in ALL_QUOTAS} == before
    assert (k.setting("log/access"), k.setting("log/access-file")) == log


def test_empty_control_is_einval(k: ConfigKit) -> None:
    assert k.request(k.dom0, Op.CONTROL, b"").reply.payload == b"EINVAL\0"


def test_control_log_and_the_tree_agree(k: ConfigKit) -> None:
    assert k.control("log") == b"io: off\nlevel: info\n\0"
    assert k.control("log", "on") == b"OK\0"
    assert k.setting("log/access") == "on"
    assert k.control("log") == b"io: on\nlevel: info\n\0"
    k.set("log/access", "off")
    assert k.control("log").startswith(b"io: off\n")
    assert k.control("log", "+io") == b"OK\0"
    assert k.setting("log/access") == "on"
    assert k.control("log", "-io") == b"OK\0"
    assert k.setting("log/access") == "off"
    k.set("log/level", "debug")
    assert k.control("log").endswith(b"level: debug\n\0")


def test_control_logfile_and_the_tree_agree(k: ConfigKit) -> None:
    watcher = k.engine.connect(k.dom0.caller, "socket")
    k.ok(watcher, Op.WATCH, z(CONFIG + "log/access-file", "w"))
    k.take_events(watcher)
    assert k.control("logfile", "/var/log/xen/xs-access.log") == b"OK\0"
    assert k.setting("log/access-file") == "/var/log/xen/xs-access.log"
    assert k.registry.get("log/access-file") == "/var/log/xen/xs-access.log"
    assert k.take_events(watcher) == [(CONFIG + "log/access-file", "w")]


def test_per_domain_routes_agree(k: ConfigKit) -> None:
    k.guest(5)
    k.ok(k.dom0, Op.SET_QUOTA, z("5", "watches", "9"))
    assert k.setting("domain/5/quota/watches") == "9"
    assert "watches          :        0 / 9" in k.control("quota", "5").decode()
    k.set("domain/5/quota/watches", 11)
    assert k.ok(k.dom0, Op.GET_QUOTA, z("5", "watches")) == b"11\0"
    assert "/ 11" in k.control("quota", "5").decode()


def test_control_quota_of_a_domain_shows_usage(k: ConfigKit) -> None:
    guest = k.guest(5)
    for i in range(3):
        k.write(guest, f"/local/domain/5/n{i}", "")
        k.ok(guest, Op.WATCH, z(f"/w{i}", "t"))
    k.start(guest)
    lines = {
        line.split(":")[0].strip(): line.split(":")[1].split()
        for line in k.control("quota", "5").decode().splitlines()[1:]
        if ":" in line
    }
    assert lines["nodes"] == ["4", "/", "1000"]
    assert lines["watches"] == ["3", "/", "128"]
    assert lines["transactions"] == ["1", "/", "10"]
    assert k.control("quota", "5").startswith(b"Domain 5:\n")
    assert k.error(k.dom0, Op.CONTROL, z("quota", "4242")) == "ENOENT"


def test_control_is_privileged_only(k: ConfigKit) -> None:
    guest = k.guest(5)
    for args in (("quota",), ("quota", "set", "nodes", "99999"), ("log", "on"), ("help",)):
        assert k.error(guest, Op.CONTROL, z(*args)) == "EACCES"
    assert k.setting("quota/nodes") == "1000"
    assert k.setting("log/access") == "off"


def test_control_help_lists_every_command(k: ConfigKit) -> None:
    text = k.control("help").decode()
    listed = {line.split("\t")[0] for line in text.splitlines() if line}
    assert {"check", "log", "logfile", "memreport", "print", "quota", "quota-soft", "help"} <= (
        listed
    )


def test_control_check_and_memreport(k: ConfigKit) -> None:
    guest = k.guest(5)
    k.write(guest, "/local/domain/5/x", "1")
    assert k.control("check") == b"OK\0"
    report = k.control("memreport").decode()
    assert report.endswith("\n\0")
    assert "nodes:" in report and "domains: 1" in report
