"""An unprivileged domain gets EACCES for every path under /tool/xenstored, existing or
not, for READ, WRITE, DIRECTORY and RM (and the other tree requests), so nothing about
the configuration leaks; its watches there never fire."""

from __future__ import annotations

import pytest
from kit.config import CONFIG, ConfigKit
from kit.engine import z

from pyxenstored.liveconfig.registry import SETTINGS
from pyxenstored.protocol.wire import Op

EXISTING = [
    "/tool/xenstored",
    *(CONFIG + s.name for s in SETTINGS),
    CONFIG + "quota",
    CONFIG + "log",
    CONFIG + "domain",
    CONFIG + "domain/5",
    CONFIG + "domain/5/quota/nodes",  # the guest's own override
    CONFIG + "domain/6/class",
    CONFIG + "class/driver/quota/nodes",
    CONFIG + "stats",
    CONFIG + "stats/nodes",
    CONFIG + "stats/requests/READ",
]
MISSING = [
    CONFIG + "nope",
    CONFIG + "quota/nope",
    CONFIG + "quota/nodes/below",
    CONFIG + "domain/5/quota/watches",
    CONFIG + "domain/7",
    CONFIG + "class/none/quota/nodes",
    CONFIG + "stats/nope",
    CONFIG + "domid",
]
PATHS = EXISTING + MISSING
TREE_OPS = {
    "READ": (Op.READ, ()),
    "DIRECTORY": (Op.DIRECTORY, ()),
    "RM": (Op.RM, ()),
    "MKDIR": (Op.MKDIR, ()),
    "GET_PERMS": (Op.GET_PERMS, ()),
    "DIRECTORY_PART": (Op.DIRECTORY_PART, ("0",)),
}


@pytest.fixture(scope="module")
def k() -> ConfigKit:
    kit = ConfigKit()
    kit.guest(5)
    kit.set("domain/5/quota/nodes", 1234)
    kit.set("domain/6/class", "driver")
    return kit


def snapshot(k: ConfigKit) -> dict[str, tuple[bytes, object]]:
    return {
        p: (n.value, n.perms)
        for p, n in k.engine.tree.nodes.items()
        if p.startswith(CONFIG) and not p.startswith(CONFIG + "stats")
    }


def test_paths_exist_as_listed(k: ConfigKit) -> None:
    nodes = k.engine.tree.nodes
    assert all(p in nodes for p in EXISTING)
    assert not any(p in nodes for p in MISSING)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("op", TREE_OPS)
def test_unprivileged_tree_requests_are_eacces(k: ConfigKit, op: str, path: str) -> None:
    guest = k.engine.domains[5].conn
    assert guest is not None
    before = snapshot(k)
    code, extra = TREE_OPS[op]
    assert k.error(guest, code, z(path, *extra)) == "EACCES"
    assert snapshot(k) == before


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", [b"1", b"on", b"", b"bogus"])
def test_unprivileged_write_is_eacces_whatever_the_value(
    k: ConfigKit, path: str, value: bytes
) -> None:
    guest = k.engine.domains[5].conn
    assert guest is not None
    before = (snapshot(k), dict(k.registry.values), k.engine.quota(5, "nodes"))
    assert k.write_error(guest, path, value) == "EACCES"
    assert (snapshot(k), dict(k.registry.values), k.engine.quota(5, "nodes")) == before


def test_unprivileged_write_in_a_transaction_is_eacces(k: ConfigKit) -> None:
    guest = k.engine.domains[5].conn
    assert guest is not None
    before = (snapshot(k), k.engine.quota(5, "nodes"))
    tx = k.start(guest)
    assert k.write_error(guest, CONFIG + "quota/nodes", "99999", tx=tx) == "EACCES"
    assert k.error(guest, Op.RM, z(CONFIG + "domain/5/quota/nodes"), tx=tx) == "EACCES"
    k.commit(guest, tx)
    assert (snapshot(k), k.engine.quota(5, "nodes")) == before


def test_relative_path_cannot_reach_the_config(k: ConfigKit) -> None:
    """Path syntax has no ``..``: a relative path always stays under the guest's home."""
    guest = k.engine.domains[5].conn
    assert guest is not None
    assert k.error(guest, Op.READ, z("../../../tool/xenstored/quota/nodes")) == "EINVAL"


@pytest.mark.parametrize("path", [CONFIG + "quota/nodes", CONFIG + "nope", "/tool/xenstored"])
def test_set_perms_is_einval_for_everyone_existing_or_not(k: ConfigKit, path: str) -> None:
    """docs/compatibility.md: SET_PERMS below /tool/xenstored/ is EINVAL (the permissions
    are fixed). The same answer for every path and caller, so it reveals nothing."""
    guest = k.engine.domains[5].conn
    assert guest is not None
    before = snapshot(k)
    if path != "/tool/xenstored":
        assert k.error(guest, Op.SET_PERMS, z(path, "n5", "r5")) == "EINVAL"
        assert k.error(k.dom0, Op.SET_PERMS, z(path, "n0", "r5")) == "EINVAL"
    else:  # the root of the configuration is an ordinary node owned by dom0
        assert k.error(guest, Op.SET_PERMS, z(path, "n5")) == "EACCES"
    assert snapshot(k) == before


def test_unprivileged_watch_sees_no_change() -> None:
    """A watch may be set anywhere, but events need read access to the node."""
    k = ConfigKit()
    guest = k.guest(5)
    k.ok(guest, Op.WATCH, z(CONFIG + "quota/nodes", "q"))
    k.ok(guest, Op.WATCH, z("/tool", "t"))
    k.take_events(guest)  # the initial events
    k.set("quota/nodes", 999)
    k.ok(k.dom0, Op.SET_QUOTA, z("5", "nodes", "77"))
    k.control("quota", "set", "watches", "100")
    k.ok(k.dom0, Op.RM, z(CONFIG + "quota/nodes"))
    assert k.take_events(guest) == []
