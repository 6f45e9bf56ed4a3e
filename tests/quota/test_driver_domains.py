"""Driver domains, per-domain overrides and quota classes (issue 5; lineage §B.1, §B.5).

A backend domain's node count grows with frontends x devices x keys. libxl creates each
backend device directory as dom0 (``/local/domain/<d>/backend/<type>/<fe>/<devid>``,
owner d), then the driver in domain d fills it in. Every such directory that the
privileged domain created raises d's limits by the ``driver/<quota>`` allowance; a guest
cannot grant itself one. Sans-I/O: a few tens of thousands of requests, well under a
second.
"""

from __future__ import annotations

import pytest
from kit.config import ConfigKit
from kit.engine import ErrorReply, z

from pyxenstored.protocol.wire import Op, encode

DRIVER = 3
TYPES = ("vbd", "vif", "console")
GUESTS = 300
KEYS = (  # what a backend driver writes per device (about 15 nodes)
    "state", "hotplug-status", "feature-flush-cache", "feature-discard",
    "feature-persistent", "feature-max-indirect-segments", "sectors", "info",
    "sector-size", "physical-device", "mode", "params", "type", "online", "removable",
)  # fmt: skip


def device_path(fe: int, kind: str) -> str:
    devid = {"vbd": 51712, "vif": 0, "console": 0}[kind]
    return f"/local/domain/{DRIVER}/backend/{kind}/{fe}/{devid}"


def add_device(k: ConfigKit, fe: int, kind: str, tx: int = 0) -> str:
    """What libxl__device_generic_add does for the backend side, as dom0."""
    path = device_path(fe, kind)
    k.ok(k.dom0, Op.MKDIR, z(path), tx=tx)
    k.ok(k.dom0, Op.SET_PERMS, z(path, f"n{DRIVER}", f"r{fe}"), tx=tx)
    return path


def test_driver_domain_serves_300_guests_with_defaults() -> None:
    k = ConfigKit()
    driver = k.guest(DRIVER)
    for fe in range(10, 10 + GUESTS):
        # One dom0 transaction per guest, as libxl creates a domain's devices.
        tx = k.start(k.dom0)
        paths = [add_device(k, fe, kind, tx) for kind in TYPES]
        k.commit(k.dom0, tx)
        for path in paths:
            for key in KEYS:  # the backend driver fills the device in
                k.write(driver, f"{path}/{key}", "4")
    devices = GUESTS * len(TYPES)
    assert k.engine.quotas.devices[DRIVER] == devices
    assert k.owned(DRIVER) > 1000 + devices * len(KEYS) // 2  # far past a plain guest
    allowance = k.registry.get("driver/nodes")
    assert k.engine.quota(DRIVER, "nodes") == 1000 + devices * allowance
    assert k.ok(k.dom0, Op.GET_QUOTA, z(str(DRIVER), "nodes")) == (
        b"%d\0" % (1000 + devices * allowance)
    )
    assert k.engine.refusals.counts == {}
    # Its watches and memory grew in step (one watch per device, as blkback does).
    for fe in range(10, 10 + GUESTS):
        for kind in TYPES:
            k.ok(driver, Op.WATCH, z(device_path(fe, kind), "be"))
    assert k.engine.refusals.counts == {}
    assert "nodes" in k.control("quota", str(DRIVER)).decode()


def test_ordinary_guest_is_refused_at_its_limit() -> None:
    k = ConfigKit()
    guest = k.guest(7)
    made = 0
    with pytest.raises(ErrorReply, match="ENOSPC"):
        for i in range(2000):
            # 50 keys a directory: a directory's child list counts towards node-size.
            k.write(guest, f"/local/domain/7/data/{i // 50}/{i % 50}", "x")
            made += 1
    assert k.owned(7) == 1000  # home, data, 20 directories and 978 keys
    assert made == 978
    assert k.engine.refusals.counts == {(7, "nodes"): 1}


def test_guest_cannot_grant_itself_an_allowance() -> None:
    k = ConfigKit()
    guest = k.guest(7)
    for i in range(5):
        k.ok(guest, Op.MKDIR, z(f"/local/domain/7/backend/vbd/{i}/51712"))
    assert k.engine.quotas.devices.get(7, 0) == 0
    assert k.engine.quota(7, "nodes") == 1000
    # Nor does a later MKDIR of the same directory by dom0 (it already exists).
    k.ok(k.dom0, Op.MKDIR, z("/local/domain/7/backend/vbd/0/51712"))
    assert k.engine.quota(7, "nodes") == 1000
    # A directory at another depth is not a device.
    k.ok(k.dom0, Op.MKDIR, z("/local/domain/7/backend/vbd/9"))
    k.ok(k.dom0, Op.MKDIR, z("/local/domain/7/backend/vbd/9/51712/extra"))
    assert k.engine.quotas.devices.get(7, 0) == 1  # only .../9/51712, made by dom0


def test_device_allowance_goes_with_the_backend_directory() -> None:
    k = ConfigKit()
    k.guest(DRIVER)
    per = k.registry.get("driver/nodes")
    paths = [add_device(k, fe, "vbd") for fe in (10, 11, 12)]
    assert k.engine.quota(DRIVER, "nodes") == 1000 + 3 * per
    k.ok(k.dom0, Op.RM, z(paths[0]))  # libxl removes one device
    assert k.engine.quota(DRIVER, "nodes") == 1000 + 2 * per
    k.ok(k.dom0, Op.RM, z(f"/local/domain/{DRIVER}/backend"))  # and then all of them
    assert k.engine.quota(DRIVER, "nodes") == 1000
    assert k.ok(k.dom0, Op.GET_QUOTA, z(str(DRIVER), "nodes")) == b"1000\0"


def test_device_allowance_is_lost_when_the_guest_removes_it() -> None:
    k = ConfigKit()
    driver = k.guest(DRIVER)
    path = add_device(k, 10, "vbd")
    assert k.engine.quotas.devices[DRIVER] == 1
    k.ok(driver, Op.RM, z(path))  # it owns the directory, so it may
    k.ok(driver, Op.MKDIR, z(path))  # and recreating it grants nothing
    assert k.engine.quotas.devices.get(DRIVER, 0) == 0


def test_domain_death_drops_the_allowance_but_keeps_the_override() -> None:
    k = ConfigKit()
    k.guest(DRIVER)
    add_device(k, 10, "vbd")
    k.ok(k.dom0, Op.SET_QUOTA, z(str(DRIVER), "nodes", "3000"))
    k.ok(k.dom0, Op.RELEASE, z(str(DRIVER)))
    assert k.engine.quotas.devices.get(DRIVER, 0) == 0
    assert k.engine.quota(DRIVER, "nodes") == 3000  # a restarted driver domain keeps it
    assert k.setting(f"domain/{DRIVER}/quota/nodes") == "3000"


def test_device_created_in_an_aborted_transaction_grants_nothing() -> None:
    k = ConfigKit()
    k.guest(DRIVER)
    tx = k.start(k.dom0)
    add_device(k, 10, "vbd", tx)
    k.commit(k.dom0, tx, keep=False)
    assert k.engine.quotas.devices.get(DRIVER, 0) == 0


def test_per_device_allowance_setting_applies_live() -> None:
    k = ConfigKit()
    k.guest(DRIVER)
    add_device(k, 10, "vbd")
    add_device(k, 11, "vbd")
    k.set("driver/nodes", 100)
    k.set("driver/watches", 7)
    k.set("driver/memory", 1000)
    assert k.engine.quota(DRIVER, "nodes") == 1000 + 200
    assert k.engine.quota(DRIVER, "watches") == 128 + 14
    assert k.engine.quota(DRIVER, "memory") == 2621440 + 2000
    assert k.engine.quota(DRIVER, "transactions") == 10  # no allowance for this one


# -- per-domain overrides ----------------------------------------------------------------
def test_override_through_tree_and_set_quota_agree_and_rm_restores() -> None:
    k = ConfigKit()
    guest = k.guest(7)
    k.set("domain/7/quota/nodes", 3)
    assert k.ok(k.dom0, Op.GET_QUOTA, z("7", "nodes")) == b"3\0"
    k.write(guest, "/local/domain/7/a", "")
    k.write(guest, "/local/domain/7/b", "")
    assert k.write_error(guest, "/local/domain/7/c", "") == "ENOSPC"
    k.ok(k.dom0, Op.SET_QUOTA, z("7", "nodes", "5"))
    assert k.setting("domain/7/quota/nodes") == "5"
    k.write(guest, "/local/domain/7/c", "")
    k.ok(k.dom0, Op.RM, z("/tool/xenstored/domain/7/quota/nodes"))
    assert k.ok(k.dom0, Op.GET_QUOTA, z("7", "nodes")) == b"1000\0"
    assert k.engine.quota(7, "nodes") == 1000


def test_override_adds_to_device_allowance() -> None:
    k = ConfigKit()
    k.guest(DRIVER)
    add_device(k, 10, "vbd")
    k.ok(k.dom0, Op.SET_QUOTA, z(str(DRIVER), "nodes", "50"))
    assert k.engine.quota(DRIVER, "nodes") == 50 + k.registry.get("driver/nodes")
    k.ok(k.dom0, Op.SET_QUOTA, z(str(DRIVER), "nodes", "0"))  # 0: no limit, no allowance
    assert k.engine.quota(DRIVER, "nodes") == 0


def test_bad_override_values_are_einval_and_change_nothing() -> None:
    k = ConfigKit()
    k.guest(7)
    k.set("domain/7/quota/nodes", 30)
    for rel, value in (
        ("domain/7/quota/nodes", "many"),
        ("domain/7/quota/nodes", "-1"),
        ("domain/7/quota/nodes", "4294967296"),
        ("domain/7/quota/bogus", "5"),
        ("domain/7/class", "no-such-class"),
        ("domain/7/bogus", "5"),
        ("domain/x7/quota/nodes", "5"),
        ("class/c/quota/bogus", "5"),
        ("class/c/quota/nodes", "lots"),
    ):
        assert k.write_error(k.dom0, f"/tool/xenstored/{rel}", value) == "EINVAL", rel
    assert k.setting("domain/7/quota/nodes") == "30"
    assert k.engine.quota(7, "nodes") == 30
    assert "c" not in k.engine.quotas.classes
    assert k.error(k.dom0, Op.READ, z("/tool/xenstored/domain/7/class")) == "ENOENT"


def probe(k: ConfigKit, domid: int, name: str) -> None:
    """Make guest ``domid`` do something an override of ``name`` to the value in
    OVERRIDES refuses (ErrorReply is raised; a pause is reported as ErrorReply("paused"))."""
    guest = k.engine.domains[domid].conn
    assert guest is not None
    home = f"/local/domain/{domid}"
    if name == "nodes":
        for i in range(3):
            k.write(guest, f"{home}/n{i}", "")
    elif name == "watches":
        for i in range(4):
            k.ok(guest, Op.WATCH, z(f"/w{i}", "t"))
    elif name == "transactions":
        for _ in range(4):
            k.start(guest)
    elif name == "node-permissions":
        k.write(guest, f"{home}/p", "")
        k.ok(guest, Op.SET_PERMS, z(f"{home}/p", f"n{domid}", "r1", "r2"))
    elif name == "node-size":
        k.write(guest, f"{home}/s", "")
        k.write(guest, f"{home}/s", "x" * 200)
    elif name == "path-max":
        k.write(guest, "p" * 11, "")
    elif name == "transaction-nodes":
        tx = k.start(guest)
        for i in range(5):
            k.write(guest, f"{home}/t{i}", "", tx=tx)
    elif name == "memory":
        k.write(guest, f"{home}/m", "x" * 400)
    elif name == "outstanding":
        request = encode(Op.READ, 1, 0, f"{home}\0".encode())
        k.engine.feed(guest, request)
        k.engine.feed(guest, request)
        paused = k.engine.paused(guest)
        guest.take_output()
        if paused:
            raise ErrorReply("paused")
    else:
        raise AssertionError(name)


#: Small per-domain values that :func:`probe` runs into (4.21 rule).
OVERRIDES = {
    "nodes": 2,
    "watches": 2,
    "transactions": 2,
    "node-permissions": 2,
    "node-size": 100,
    "path-max": 10,
    "transaction-nodes": 3,
    "memory": 300,
    "outstanding": 2,
}


@pytest.mark.parametrize(
    "name",
    list(OVERRIDES),
)
def test_every_override_is_enforced(name: str) -> None:
    k = ConfigKit()
    k.guest(5)
    k.guest(6)
    probe(k, 6, name)  # without an override the requests are fine
    k.ok(k.dom0, Op.SET_QUOTA, z("5", name, str(OVERRIDES[name])))
    with pytest.raises(ErrorReply):
        probe(k, 5, name)


# -- quota classes -----------------------------------------------------------------------
def test_driver_class_exists_from_the_start() -> None:
    k = ConfigKit()
    for name, value in (("nodes", 20000), ("watches", 1024), ("transactions", 32)):
        assert k.setting(f"class/driver/quota/{name}") == str(value)
    assert k.setting("class/driver/quota/memory") == str(64 << 20)


def test_domain_in_driver_class_then_removed_restores_the_limit() -> None:
    k = ConfigKit()
    guest = k.guest(7)
    k.set("domain/7/class", "driver")
    assert k.ok(k.dom0, Op.GET_QUOTA, z("7", "nodes")) == b"20000\0"
    for i in range(1200):
        k.write(guest, f"/local/domain/7/d/{i // 100}/{i % 100}", "")
    assert k.ok(k.dom0, Op.GET_QUOTA, z("7", "node-size")) == b"2048\0"  # not in the class
    k.ok(k.dom0, Op.RM, z("/tool/xenstored/domain/7/class"))
    assert k.ok(k.dom0, Op.GET_QUOTA, z("7", "nodes")) == b"1000\0"
    assert k.write_error(guest, "/local/domain/7/more", "") == "ENOSPC"
    assert k.owned(7) == 1 + 1 + 12 + 1200  # nothing evicted


def test_custom_class_override_precedence_and_removal() -> None:
    k = ConfigKit()
    k.guest(7)
    k.guest(8)

    def nodes(domid: int) -> bytes:
        return k.ok(k.dom0, Op.GET_QUOTA, z(str(domid), "nodes"))

    k.set("class/big/quota/nodes", 3000)
    k.set("domain/7/class", "big")
    assert nodes(7) == b"3000\0" and nodes(8) == b"1000\0"
    k.set("class/big/quota/nodes", 4000)  # a class change reaches its members at once
    assert nodes(7) == b"4000\0"
    k.ok(k.dom0, Op.SET_QUOTA, z("7", "nodes", "10"))  # an override beats the class
    assert nodes(7) == b"10\0"
    k.ok(k.dom0, Op.RM, z("/tool/xenstored/domain/7/quota/nodes"))
    assert nodes(7) == b"4000\0"  # back to the class
    k.ok(k.dom0, Op.RM, z("/tool/xenstored/class/big/quota/nodes"))
    assert nodes(7) == b"1000\0"  # back to the global value
    k.set("class/big/quota/nodes", 500)
    assert nodes(7) == b"500\0"
    k.ok(k.dom0, Op.RM, z("/tool/xenstored/class/big"))  # the whole class
    assert nodes(7) == b"1000\0"
    k.set("quota/nodes", 1100)  # members without a class value follow the global one
    assert nodes(7) == b"1100\0"


def test_removing_a_domains_config_directory_drops_override_and_class() -> None:
    k = ConfigKit()
    k.guest(7)
    k.set("domain/7/class", "driver")
    k.set("domain/7/quota/watches", 3)
    k.ok(k.dom0, Op.RM, z("/tool/xenstored/domain/7"))
    assert k.engine.quota(7, "nodes") == 1000
    assert k.engine.quota(7, "watches") == 128


def test_override_survives_the_domain_reconnecting() -> None:
    """Unlike XSS-2014b (lineage §B.3), a re-INTRODUCE keeps the override."""
    k = ConfigKit()
    k.guest(7)
    k.ok(k.dom0, Op.SET_QUOTA, z("7", "nodes", "4444"))
    k.ok(k.dom0, Op.INTRODUCE, z("7", "0", "1"))
    assert k.ok(k.dom0, Op.GET_QUOTA, z("7", "nodes")) == b"4444\0"
