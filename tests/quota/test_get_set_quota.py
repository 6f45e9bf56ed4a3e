"""GET_QUOTA / SET_QUOTA with C xenstored 4.22's syntax (xenstore-protocol.md §1.4, §6.1):
no argument lists the names; ``name|``; ``domid|name|``; ``name|value|``;
``domid|name|value|``; ``soft-memory``; EINVAL for bad names and arity; ENOENT for a
domain the hypervisor does not know; privileged only."""

from __future__ import annotations

import dataclasses

import pytest
from kit.config import ConfigKit
from kit.engine import UNKNOWN_DOMAIN, z

from pyxenstored.liveconfig.registry import QUOTAS
from pyxenstored.protocol.wire import Op

NAMES = (
    "nodes watches outstanding memory soft-memory transactions transaction-nodes "
    "node-permissions path-max node-size"
)
DEFAULTS = {
    "nodes": 1000,
    "watches": 128,
    "outstanding": 20,
    "memory": 2621440,
    "soft-memory": 2097152,
    "transactions": 10,
    "transaction-nodes": 1024,
    "node-permissions": 5,
    "path-max": 2048,
    "node-size": 2048,
}


@pytest.fixture
def k() -> ConfigKit:
    kit = ConfigKit()
    kit.guest(5)
    return kit


def get(k: ConfigKit, *args: str) -> bytes:
    return k.ok(k.dom0, Op.GET_QUOTA, z(*args))


def test_no_argument_lists_names_in_c_order(k: ConfigKit) -> None:
    assert k.request(k.dom0, Op.GET_QUOTA, b"").reply.payload == NAMES.encode() + b"\0"


@pytest.mark.parametrize("name", NAMES.split())
def test_global_and_domain_values_default(k: ConfigKit, name: str) -> None:
    assert get(k, name) == b"%d\0" % DEFAULTS[name]
    assert get(k, "5", name) == b"%d\0" % DEFAULTS[name]


@pytest.mark.parametrize("name", NAMES.split())
def test_set_global_then_every_route_agrees(k: ConfigKit, name: str) -> None:
    # path-max applies to dom0 too: keep it large enough for the config paths.
    value = 1234 if name != "path-max" else 1500
    assert k.ok(k.dom0, Op.SET_QUOTA, z(name, str(value))) == b"OK\0"
    assert get(k, name) == b"%d\0" % value
    assert get(k, "5", name) == b"%d\0" % value  # no override: the global value
    node = "quota-soft/memory" if name == "soft-memory" else f"quota/{name}"
    assert k.setting(node) == str(value)
    table = k.control("quota-soft" if name == "soft-memory" else "quota").decode()
    assert any(
        line.split(":")[0].strip() == name and line.split(":")[1].split()[0] == str(value)
        for line in table.splitlines()
    ), table


@pytest.mark.parametrize("name", QUOTAS)
def test_set_per_domain_override(k: ConfigKit, name: str) -> None:
    k.guest(6)
    assert k.ok(k.dom0, Op.SET_QUOTA, z("5", name, "77")) == b"OK\0"
    assert get(k, "5", name) == b"77\0"
    assert get(k, "6", name) == b"%d\0" % DEFAULTS[name]  # others keep the global
    assert get(k, name) == b"%d\0" % DEFAULTS[name]
    assert k.setting(f"domain/5/quota/{name}") == "77"
    assert k.engine.quota(5, name) == 77


def test_soft_memory(k: ConfigKit) -> None:
    k.ok(k.dom0, Op.SET_QUOTA, z("soft-memory", "4096"))
    assert get(k, "soft-memory") == b"4096\0"
    assert k.engine.limits.soft_memory == 4096
    assert k.setting("quota-soft/memory") == "4096"
    assert get(k, "memory") == b"%d\0" % DEFAULTS["memory"]  # the hard limit is separate


def test_soft_memory_per_domain(k: ConfigKit) -> None:
    assert k.ok(k.dom0, Op.SET_QUOTA, z("5", "soft-memory", "4096")) == b"OK\0"
    assert get(k, "5", "soft-memory") == b"4096\0"


def test_value_is_read_with_atoi(k: ConfigKit) -> None:
    k.ok(k.dom0, Op.SET_QUOTA, z("nodes", "42abc"))
    assert get(k, "nodes") == b"42\0"
    k.ok(k.dom0, Op.SET_QUOTA, z("nodes", "0"))  # 0: no limit
    assert get(k, "nodes") == b"0\0"


@pytest.mark.parametrize(
    "op,args",
    [
        (Op.GET_QUOTA, ("bogus",)),
        (Op.GET_QUOTA, ("5", "bogus")),
        (Op.GET_QUOTA, ("soft-nodes",)),
        (Op.GET_QUOTA, ("",)),
        (Op.GET_QUOTA, ("5", "nodes", "1")),  # three strings
        (Op.GET_QUOTA, ("x5", "nodes")),  # bad domid
        (Op.GET_QUOTA, ("70000", "nodes")),  # domid out of range
        (Op.SET_QUOTA, ("nodes",)),
        (Op.SET_QUOTA, ()),
        (Op.SET_QUOTA, ("5", "nodes", "1", "2")),
        (Op.SET_QUOTA, ("bogus", "1")),
        (Op.SET_QUOTA, ("soft-nodes", "1")),
        (Op.SET_QUOTA, ("5", "bogus", "1")),
        (Op.SET_QUOTA, ("x5", "nodes", "1")),
        (Op.SET_QUOTA, ("nodes", "4294967295")),  # C's Q_VAL_DISABLED
    ],
)
def test_bad_names_and_arity_are_einval_and_change_nothing(
    k: ConfigKit, op: int, args: tuple[str, ...]
) -> None:
    before = (dict(vars_of(k)), k.setting("quota/nodes"))
    assert k.error(k.dom0, op, z(*args)) == "EINVAL"
    assert (dict(vars_of(k)), k.setting("quota/nodes")) == before
    assert 5 not in k.engine.quotas.overrides


def vars_of(k: ConfigKit) -> dict[str, object]:
    return dataclasses.asdict(k.engine.limits)


def test_unknown_domain_is_enoent(k: ConfigKit) -> None:
    dom = str(UNKNOWN_DOMAIN)
    assert k.error(k.dom0, Op.GET_QUOTA, z(dom, "nodes")) == "ENOENT"
    assert k.error(k.dom0, Op.SET_QUOTA, z(dom, "nodes", "5")) == "ENOENT"
    assert UNKNOWN_DOMAIN not in k.engine.quotas.overrides


def test_known_but_not_introduced_domain_is_accepted(k: ConfigKit) -> None:
    """C's find_or_alloc_existing_domain: the hypervisor knows it, so the toolstack may
    set its quota before INTRODUCE (libxl does so right after)."""
    k.ok(k.dom0, Op.SET_QUOTA, z("77", "nodes", "3000"))
    assert get(k, "77", "nodes") == b"3000\0"


def test_privileged_only(k: ConfigKit) -> None:
    guest = k.engine.domains[5].conn
    assert guest is not None
    for op, args in (
        (Op.GET_QUOTA, ()),
        (Op.GET_QUOTA, ("nodes",)),
        (Op.GET_QUOTA, ("5", "nodes")),
        (Op.SET_QUOTA, ("nodes", "1")),
        (Op.SET_QUOTA, ("5", "nodes", "100000")),
    ):
        assert k.error(guest, op, z(*args)) == "EACCES"
    assert get(k, "nodes") == b"1000\0"
    assert get(k, "5", "nodes") == b"1000\0"


def test_set_quota_changes_enforcement_at_once(k: ConfigKit) -> None:
    guest = k.engine.domains[5].conn
    assert guest is not None
    k.ok(k.dom0, Op.SET_QUOTA, z("5", "nodes", "3"))
    k.write(guest, "/local/domain/5/a", "")
    k.write(guest, "/local/domain/5/b", "")
    assert k.write_error(guest, "/local/domain/5/c", "") == "ENOSPC"
    k.ok(k.dom0, Op.SET_QUOTA, z("5", "nodes", "4"))
    k.write(guest, "/local/domain/5/c", "")
