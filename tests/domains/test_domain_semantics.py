"""Domain semantics in the engine (xenstore-protocol.md §3, §4.5, §5.6): INTRODUCE,
RELEASE, death, the special watches and their permissions, features, SET_TARGET and
stale grants (XSA-322, XSA-417). No I/O: see test_rings_* for the transports."""

from __future__ import annotations

import pytest

from pyxenstored.core.handlers_domain import domain_died, domain_shut_down
from pyxenstored.protocol.wire import DOMID_SELF, Op

from .enginekit import Kit


@pytest.fixture
def kit() -> Kit:
    return Kit()


def test_guest_is_unprivileged_and_relative_paths_resolve_home(kit: Kit) -> None:
    guest = kit.introduce(5)
    assert not guest.caller.privileged and guest.kind == "ring"
    assert kit.error(guest, Op.WRITE, "data") == "EACCES"  # no home yet: "/" is n0
    kit.home(5)
    kit.write(guest, "data/x", "1")
    assert kit.call(kit.dom0, Op.READ, "/local/domain/5/data/x") == b"1"
    assert kit.call(guest, Op.GET_PERMS, "data/x") == b"n5\0"  # the creator owns it
    assert kit.call(guest, Op.GET_DOMAIN_PATH, "5") == b"/local/domain/5\0"
    for op, args in (
        (Op.INTRODUCE, ("6", "0", "1")),
        (Op.RELEASE, ("6",)),
        (Op.IS_DOMAIN_INTRODUCED, ("5",)),
        (Op.RESUME, ("5",)),
        (Op.SET_TARGET, ("5", "6")),
        (Op.SET_FEATURE, ("6", "0")),
        (Op.GET_FEATURE, ("6",)),
    ):
        assert kit.error(guest, op, *args) == "EACCES", op
    assert kit.error(guest, Op.READ, "/local/domain/0/secret") == "EACCES"


def test_privileged_domain_ring_is_privileged() -> None:
    kit = Kit(priv_domid=3)
    ring = kit.introduce(3)
    assert ring.caller.privileged
    kit.write(ring, "/anywhere", "ok")
    assert kit.events(kit.dom0) == []


def test_introduce_first_and_repeated(kit: Kit) -> None:
    kit.call(kit.dom0, Op.WATCH, "@introduceDomain", "bare")
    kit.call(kit.dom0, Op.WATCH, "@introduceDomain", "depth", "1")
    kit.call(kit.dom0, Op.WATCH, "@introduceDomain/6", "six")
    kit.events(kit.dom0)
    guest = kit.introduce(5, port=9)
    assert kit.events(kit.dom0) == [("@introduceDomain", "bare"), ("@introduceDomain/5", "depth")]
    assert ("introduce", 5, 9, kit.engine.features) in kit.backend.calls
    assert ("reset", 5) in kit.backend.calls  # every INTRODUCE resets the ring
    kit.home(5)
    kit.call(guest, Op.WATCH, "data", "t")
    kit.call(guest, Op.TRANSACTION_START, "")
    assert kit.events(guest) == [("data", "t")]
    kit.backend.calls.clear()
    assert kit.introduce(5, port=11) is guest  # the same connection, reset
    assert kit.backend.calls == [("reintroduce", 5, 11), ("reset", 5)]
    assert kit.events(kit.dom0) == []  # no event for a repeat
    assert not guest.watches and not guest.transactions
    assert kit.engine.domains[5].port == 11
    kit.introduce(6)
    assert sorted(kit.events(kit.dom0)) == [
        ("@introduceDomain", "bare"),
        ("@introduceDomain/6", "depth"),
        ("@introduceDomain/6", "six"),
    ]


def test_introduce_errors(kit: Kit) -> None:
    d = kit.dom0
    assert kit.error(d, Op.INTRODUCE, "5", "0", "0") == "EINVAL"  # port must be > 0
    assert kit.error(d, Op.INTRODUCE, "5", "0") == "EINVAL"
    assert kit.error(d, Op.INTRODUCE, "x5", "0", "1") == "EINVAL"
    assert kit.error(d, Op.INTRODUCE, "70000", "0", "1") == "EINVAL"
    assert kit.error(d, Op.INTRODUCE, "25", "0", "1") == "ENOENT"  # no such domain
    kit.call(d, Op.SET_FEATURE, "7", "2")
    kit.backend.refuse.add(7)
    assert kit.error(d, Op.INTRODUCE, "7", "0", "1") == "EINVAL"  # map failed
    assert 7 not in kit.engine.domains and kit.engine.pending_features[7] == 2
    assert kit.call(d, Op.IS_DOMAIN_INTRODUCED, "7") == b"F\0"


def test_is_domain_introduced_and_domain_path(kit: Kit) -> None:
    d = kit.dom0
    assert kit.call(d, Op.IS_DOMAIN_INTRODUCED, str(DOMID_SELF)) == b"T\0"
    assert kit.call(d, Op.IS_DOMAIN_INTRODUCED, "0") == b"T\0"
    assert kit.call(d, Op.IS_DOMAIN_INTRODUCED, "5") == b"F\0"
    kit.introduce(5)
    assert kit.call(d, Op.IS_DOMAIN_INTRODUCED, "5") == b"T\0"
    assert kit.call(d, Op.GET_DOMAIN_PATH, "12") == b"/local/domain/12\0"


def test_release_deletes_owned_nodes_strips_grants_fires_release(kit: Kit) -> None:
    d = kit.dom0
    guest, other = kit.introduce(5), kit.introduce(6)
    kit.home(5)
    kit.home(6)
    kit.write(guest, "data/a", "1")
    kit.write(guest, "data/b", "2")
    kit.write(d, "/shared", "x")
    kit.call(d, Op.SET_PERMS, "/shared", "n0", "r5", "w6")
    kit.call(d, Op.WATCH, "/local/domain/5/data/a", "a")
    kit.call(d, Op.WATCH, "@releaseDomain", "bare")
    kit.call(d, Op.WATCH, "@releaseDomain", "depth", "1")
    kit.call(d, Op.WATCH, "@releaseDomain/5", "five")
    kit.call(d, Op.WATCH, "@releaseDomain/6", "six")
    kit.call(other, Op.WATCH, "@releaseDomain", "guest")  # readable by every domain
    kit.events(d)
    kit.events(other)
    assert kit.error(d, Op.RELEASE, "0") == "EINVAL"
    assert kit.error(d, Op.RELEASE, "9") == "ENOENT"
    kit.call(d, Op.RELEASE, "5")
    assert ("release", 5) in kit.backend.calls
    assert guest.closed and 5 not in kit.engine.domains
    assert kit.error(d, Op.READ, "/local/domain/5") == "ENOENT"
    assert kit.call(d, Op.GET_PERMS, "/shared") == b"n0\0w6\0"
    assert kit.events(d) == [
        ("/local/domain/5/data/a", "a"),
        ("@releaseDomain", "bare"),
        ("@releaseDomain/5", "depth"),
        ("@releaseDomain/5", "five"),
    ]
    assert kit.events(other) == [("@releaseDomain", "guest")]
    assert kit.call(d, Op.IS_DOMAIN_INTRODUCED, "5") == b"F\0"
    assert kit.engine.tree.owner_count.get(5, 0) == 0
    assert kit.engine.check() == []


def test_introduce_domain_is_privileged_to_watch(kit: Kit) -> None:
    guest = kit.introduce(5)
    kit.call(guest, Op.WATCH, "@introduceDomain", "t")
    assert kit.events(guest) == [("@introduceDomain", "t")]  # the initial event is free
    kit.introduce(6)
    assert kit.events(guest) == []
    # ...unless the privileged domain grants it
    kit.call(kit.dom0, Op.SET_PERMS, "@introduceDomain", "n0", "r5")
    kit.introduce(7)
    assert kit.events(guest) == [("@introduceDomain", "t")]


def test_death_is_release_and_shutdown_fires_once(kit: Kit) -> None:
    d = kit.dom0
    kit.introduce(5)
    kit.home(5)
    kit.call(d, Op.WATCH, "@releaseDomain", "r")
    kit.events(d)
    domain_shut_down(kit.engine, 5)
    domain_shut_down(kit.engine, 5)
    assert kit.events(d) == [("@releaseDomain", "r")]
    assert kit.error(d, Op.RESUME, "9") == "ENOENT"
    kit.call(d, Op.RESUME, "5")
    domain_shut_down(kit.engine, 5)
    assert kit.events(d) == [("@releaseDomain", "r")]
    domain_died(kit.engine, 5)
    assert kit.events(d) == [("@releaseDomain", "r")]
    assert 5 not in kit.engine.domains and ("release", 5) in kit.backend.calls
    assert kit.error(d, Op.READ, "/local/domain/5") == "ENOENT"
    domain_died(kit.engine, 5)  # twice is nothing
    domain_died(kit.engine, 0)  # never the privileged domain
    assert kit.events(d) == []


def test_death_of_a_domain_never_introduced(kit: Kit) -> None:
    d = kit.dom0
    kit.write(d, "/given", "x")
    kit.call(d, Op.SET_PERMS, "/given", "n8")  # domain 8 exists, owns the node
    kit.call(d, Op.WATCH, "@releaseDomain", "r")
    kit.events(d)
    domain_died(kit.engine, 8)
    assert kit.error(d, Op.READ, "/given") == "ENOENT"
    assert kit.events(d) == []  # not introduced: no @releaseDomain (as C)


def test_younger_domain_ignores_older_grants_xsa417(kit: Kit) -> None:
    d = kit.dom0
    kit.backend.existing.discard(9)
    kit.write(d, "/early", "x")
    kit.call(d, Op.SET_PERMS, "/early", "n0", "r9")  # domain 9 does not exist yet
    kit.backend.existing.add(9)
    guest = kit.introduce(9)
    assert kit.error(guest, Op.READ, "/early") == "EACCES"
    kit.call(d, Op.SET_PERMS, "/early", "n0", "r9")  # granted again, now that 9 exists
    assert kit.call(guest, Op.READ, "/early") == b"x"


def test_reused_domid_gains_nothing_xsa322(kit: Kit) -> None:
    d = kit.dom0
    kit.write(d, "/old", "x")
    kit.call(d, Op.SET_PERMS, "/old", "n0", "r5")
    guest = kit.introduce(5)
    assert kit.call(guest, Op.READ, "/old") == b"x"
    kit.call(d, Op.RELEASE, "5")
    assert kit.call(d, Op.GET_PERMS, "/old") == b"n0\0"  # stripped at death
    # A grant that escaped stripping (restored by dom0 from a backup, say) still does
    # not let the new domain 5 in: it is younger than the node.
    kit.engine.tree.set_perms("/old", ((0, 0), (1, 5)))
    reborn = kit.introduce(5)
    assert kit.error(reborn, Op.READ, "/old") == "EACCES"


def test_grants_written_before_introduce_are_valid(kit: Kit) -> None:
    """libxl creates /local/domain/N (n0 rN) before INTRODUCE: the guest can read it."""
    d = kit.dom0
    kit.call(d, Op.MKDIR, "/local/domain/5")
    kit.call(d, Op.SET_PERMS, "/local/domain/5", "n0", "r5")
    kit.write(d, "/local/domain/5/name", "vm")
    guest = kit.introduce(5)
    assert kit.call(guest, Op.READ, "name") == b"vm"
    assert kit.error(guest, Op.WRITE, "name", "no") == "EACCES"


def test_set_perms_owner_must_exist(kit: Kit) -> None:
    d = kit.dom0
    kit.write(d, "/p", "x")
    assert kit.error(d, Op.SET_PERMS, "/p", "n25") == "ENOENT"
    kit.call(d, Op.SET_PERMS, "/p", "n0", "r25")  # a grant to nobody is kept, ignored
    assert kit.call(d, Op.GET_PERMS, "/p") == b"n0\0r25\0"


def test_set_target(kit: Kit) -> None:
    d = kit.dom0
    guest, stubdom = kit.introduce(5), kit.introduce(6)
    kit.home(5)
    kit.write(guest, "data", "mine")
    kit.write(d, "/granted", "g")
    kit.call(d, Op.SET_PERMS, "/granted", "n0", "r5")
    assert kit.error(stubdom, Op.READ, "/local/domain/5/data") == "EACCES"
    assert kit.error(d, Op.SET_TARGET, "6", "9") == "ENOENT"
    assert kit.error(d, Op.SET_TARGET, "6") == "EINVAL"
    kit.call(d, Op.SET_TARGET, "6", "5")
    assert kit.call(stubdom, Op.READ, "/local/domain/5/data") == b"mine"
    assert kit.call(stubdom, Op.READ, "/granted") == b"g"


def test_features(kit: Kit) -> None:
    d = kit.dom0
    everything = kit.engine.features
    assert everything == 15  # RECONNECTION | ERROR | WATCHDEPTH | DOMID_ANY
    assert kit.call(d, Op.GET_FEATURE, "8") == b"15\0"
    assert kit.error(d, Op.GET_FEATURE, "25") == "ENOENT"
    assert kit.error(d, Op.SET_FEATURE, "8", "16") == "EINVAL"  # not offered
    assert kit.error(d, Op.SET_FEATURE, "8") == "EINVAL"
    kit.call(d, Op.SET_FEATURE, "8", "3")  # mask off WATCHDEPTH and DOMID_ANY
    assert kit.call(d, Op.GET_FEATURE, "8") == b"3\0"
    guest = kit.introduce(8)
    assert ("introduce", 8, 1, 3) in kit.backend.calls
    assert kit.call(guest, Op.GET_FEATURE) == b"3\0"
    assert kit.call(d, Op.GET_FEATURE, "8") == b"3\0"
    assert kit.error(d, Op.SET_FEATURE, "8", "1") == "EBUSY"
    assert kit.error(guest, Op.WATCH, "/x", "t", "1") == "EINVAL"  # no WATCHDEPTH
    other = kit.introduce(9)
    assert kit.call(other, Op.GET_FEATURE) == b"15\0"
    kit.call(other, Op.WATCH, "/x", "t", "1")
