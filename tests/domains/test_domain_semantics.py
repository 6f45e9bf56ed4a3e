"""Domain semantics in the engine (xenstore-protocol.md §3, §4.5, §5.6): INTRODUCE,
RELEASE, death, the special watches and their permissions, features, SET_TARGET and
stale grants (XSA-322, XSA-417). No I/O: see test_rings_* for the transports."""

from __future__ import annotations

import pytest
from kit.engine import UNKNOWN_DOMAIN, Kit, z

from pyxenstored.core.lifecycle import domain_died, domain_shut_down
from pyxenstored.protocol.wire import DOMID_SELF, Op


@pytest.fixture
def kit() -> Kit:
    return Kit()


def test_guest_is_unprivileged_and_relative_paths_resolve_home(kit: Kit) -> None:
    guest = kit.introduce(5)
    assert not guest.caller.privileged and guest.kind == "ring"
    assert kit.error(guest, Op.WRITE, z("data")) == "EACCES"  # no home yet: "/" is n0
    kit.home(5)
    kit.write(guest, "data/x", "1")
    assert kit.ok(kit.dom0, Op.READ, z("/local/domain/5/data/x")) == b"1"
    assert kit.ok(guest, Op.GET_PERMS, z("data/x")) == b"n5\0"  # the creator owns it
    assert kit.ok(guest, Op.GET_DOMAIN_PATH, z("5")) == b"/local/domain/5\0"
    for op, args in (
        (Op.INTRODUCE, ("6", "0", "1")),
        (Op.RELEASE, ("6",)),
        (Op.IS_DOMAIN_INTRODUCED, ("5",)),
        (Op.RESUME, ("5",)),
        (Op.SET_TARGET, ("5", "6")),
        (Op.SET_FEATURE, ("6", "0")),
        (Op.GET_FEATURE, ("6",)),
    ):
        assert kit.error(guest, op, z(*args)) == "EACCES", op
    assert kit.error(guest, Op.READ, z("/local/domain/0/secret")) == "EACCES"


def test_privileged_domain_ring_is_privileged() -> None:
    kit = Kit(priv_domid=3)
    ring = kit.introduce(3)
    assert ring.caller.privileged
    kit.write(ring, "/anywhere", "ok")
    assert kit.take_events(kit.dom0) == []


def test_introduce_first_and_repeated(kit: Kit) -> None:
    kit.ok(kit.dom0, Op.WATCH, z("@introduceDomain", "bare"))
    kit.ok(kit.dom0, Op.WATCH, z("@introduceDomain", "depth", "1"))
    kit.ok(kit.dom0, Op.WATCH, z("@introduceDomain/6", "six"))
    kit.take_events(kit.dom0)
    guest = kit.introduce(5, port=9)
    assert kit.take_events(kit.dom0) == [
        ("@introduceDomain", "bare"),
        ("@introduceDomain/5", "depth"),
    ]
    assert ("introduce", 5, 9, kit.engine.features) in kit.backend.calls
    assert ("reset", 5) in kit.backend.calls  # every INTRODUCE resets the ring
    kit.home(5)
    kit.ok(guest, Op.WATCH, z("data", "t"))
    kit.ok(guest, Op.TRANSACTION_START, z(""))
    assert kit.take_events(guest) == [("data", "t")]
    kit.backend.calls.clear()
    assert kit.introduce(5, port=11) is guest  # the same connection, reset
    assert kit.backend.calls == [("reintroduce", 5, 11), ("reset", 5)]
    assert kit.take_events(kit.dom0) == []  # no event for a repeat
    assert not guest.watches and not guest.transactions
    assert kit.engine.domains[5].port == 11
    kit.introduce(6)
    assert sorted(kit.take_events(kit.dom0)) == [
        ("@introduceDomain", "bare"),
        ("@introduceDomain/6", "depth"),
        ("@introduceDomain/6", "six"),
    ]


def test_introduce_errors(kit: Kit) -> None:
    d = kit.dom0
    assert kit.error(d, Op.INTRODUCE, z("5", "0", "0")) == "EINVAL"  # port must be > 0
    assert kit.error(d, Op.INTRODUCE, z("5", "0")) == "EINVAL"
    assert kit.error(d, Op.INTRODUCE, z("x5", "0", "1")) == "EINVAL"
    assert kit.error(d, Op.INTRODUCE, z("70000", "0", "1")) == "EINVAL"
    # no such domain
    assert kit.error(d, Op.INTRODUCE, z(UNKNOWN_DOMAIN, "0", "1")) == "ENOENT"
    kit.ok(d, Op.SET_FEATURE, z("7", "2"))
    kit.backend.refuse.add(7)
    assert kit.error(d, Op.INTRODUCE, z("7", "0", "1")) == "EINVAL"  # map failed
    assert 7 not in kit.engine.domains and kit.engine.pending_features[7] == 2
    assert kit.ok(d, Op.IS_DOMAIN_INTRODUCED, z("7")) == b"F\0"


def test_is_domain_introduced_and_domain_path(kit: Kit) -> None:
    d = kit.dom0
    assert kit.ok(d, Op.IS_DOMAIN_INTRODUCED, z(str(DOMID_SELF))) == b"T\0"
    assert kit.ok(d, Op.IS_DOMAIN_INTRODUCED, z("0")) == b"T\0"
    assert kit.ok(d, Op.IS_DOMAIN_INTRODUCED, z("5")) == b"F\0"
    kit.introduce(5)
    assert kit.ok(d, Op.IS_DOMAIN_INTRODUCED, z("5")) == b"T\0"
    assert kit.ok(d, Op.GET_DOMAIN_PATH, z("12")) == b"/local/domain/12\0"


def test_release_deletes_owned_nodes_strips_grants_fires_release(kit: Kit) -> None:
    d = kit.dom0
    guest, other = kit.introduce(5), kit.introduce(6)
    kit.home(5)
    kit.home(6)
    kit.write(guest, "data/a", "1")
    kit.write(guest, "data/b", "2")
    kit.write(d, "/shared", "x")
    kit.ok(d, Op.SET_PERMS, z("/shared", "n0", "r5", "w6"))
    kit.ok(d, Op.WATCH, z("/local/domain/5/data/a", "a"))
    kit.ok(d, Op.WATCH, z("@releaseDomain", "bare"))
    kit.ok(d, Op.WATCH, z("@releaseDomain", "depth", "1"))
    kit.ok(d, Op.WATCH, z("@releaseDomain/5", "five"))
    kit.ok(d, Op.WATCH, z("@releaseDomain/6", "six"))
    kit.ok(other, Op.WATCH, z("@releaseDomain", "guest"))  # readable by every domain
    kit.take_events(d)
    kit.take_events(other)
    assert kit.error(d, Op.RELEASE, z("0")) == "EINVAL"
    assert kit.error(d, Op.RELEASE, z("9")) == "ENOENT"
    kit.ok(d, Op.RELEASE, z("5"))
    assert ("release", 5) in kit.backend.calls
    assert guest.closed and 5 not in kit.engine.domains
    assert kit.error(d, Op.READ, z("/local/domain/5")) == "ENOENT"
    assert kit.ok(d, Op.GET_PERMS, z("/shared")) == b"n0\0w6\0"
    assert kit.take_events(d) == [
        ("/local/domain/5/data/a", "a"),
        ("@releaseDomain", "bare"),
        ("@releaseDomain/5", "depth"),
        ("@releaseDomain/5", "five"),
    ]
    assert kit.take_events(other) == [("@releaseDomain", "guest")]
    assert kit.ok(d, Op.IS_DOMAIN_INTRODUCED, z("5")) == b"F\0"
    assert kit.engine.tree.owner_count.get(5, 0) == 0
    assert kit.engine.check() == []


def test_introduce_domain_is_privileged_to_watch(kit: Kit) -> None:
    guest = kit.introduce(5)
    kit.ok(guest, Op.WATCH, z("@introduceDomain", "t"))
    assert kit.take_events(guest) == [("@introduceDomain", "t")]  # the initial event is free
    kit.introduce(6)
    assert kit.take_events(guest) == []
    # ...unless the privileged domain grants it
    kit.ok(kit.dom0, Op.SET_PERMS, z("@introduceDomain", "n0", "r5"))
    kit.introduce(7)
    assert kit.take_events(guest) == [("@introduceDomain", "t")]


def test_death_is_release_and_shutdown_fires_once(kit: Kit) -> None:
    d = kit.dom0
    kit.introduce(5)
    kit.home(5)
    kit.ok(d, Op.WATCH, z("@releaseDomain", "r"))
    kit.take_events(d)
    domain_shut_down(kit.engine, 5)
    domain_shut_down(kit.engine, 5)
    assert kit.take_events(d) == [("@releaseDomain", "r")]
    assert kit.error(d, Op.RESUME, z("9")) == "ENOENT"
    kit.ok(d, Op.RESUME, z("5"))
    domain_shut_down(kit.engine, 5)
    assert kit.take_events(d) == [("@releaseDomain", "r")]
    domain_died(kit.engine, 5)
    assert kit.take_events(d) == [("@releaseDomain", "r")]
    assert 5 not in kit.engine.domains and ("release", 5) in kit.backend.calls
    assert kit.error(d, Op.READ, z("/local/domain/5")) == "ENOENT"
    domain_died(kit.engine, 5)  # twice is nothing
    domain_died(kit.engine, 0)  # never the privileged domain
    assert kit.take_events(d) == []


def test_death_of_a_domain_never_introduced(kit: Kit) -> None:
    d = kit.dom0
    kit.write(d, "/given", "x")
    kit.ok(d, Op.SET_PERMS, z("/given", "n8"))  # domain 8 exists, owns the node
    kit.ok(d, Op.WATCH, z("@releaseDomain", "r"))
    kit.take_events(d)
    domain_died(kit.engine, 8)
    assert kit.error(d, Op.READ, z("/given")) == "ENOENT"
    assert kit.take_events(d) == []  # not introduced: no @releaseDomain (as C)


def test_younger_domain_ignores_older_grants_xsa417(kit: Kit) -> None:
    d = kit.dom0
    kit.backend.existing.discard(9)
    kit.write(d, "/early", "x")
    kit.ok(d, Op.SET_PERMS, z("/early", "n0", "r9"))  # domain 9 does not exist yet
    kit.backend.existing.add(9)
    guest = kit.introduce(9)
    assert kit.error(guest, Op.READ, z("/early")) == "EACCES"
    kit.ok(d, Op.SET_PERMS, z("/early", "n0", "r9"))  # granted again, now that 9 exists
    assert kit.ok(guest, Op.READ, z("/early")) == b"x"


def test_reused_domid_gains_nothing_xsa322(kit: Kit) -> None:
    d = kit.dom0
    kit.write(d, "/old", "x")
    kit.ok(d, Op.SET_PERMS, z("/old", "n0", "r5"))
    guest = kit.introduce(5)
    assert kit.ok(guest, Op.READ, z("/old")) == b"x"
    kit.ok(d, Op.RELEASE, z("5"))
    assert kit.ok(d, Op.GET_PERMS, z("/old")) == b"n0\0"  # stripped at death
    # A grant that escaped stripping (restored by dom0 from a backup, say) still does
    # not let the new domain 5 in: it is younger than the node.
    kit.engine.tree.set_perms("/old", ((0, 0), (1, 5)))
    reborn = kit.introduce(5)
    assert kit.error(reborn, Op.READ, z("/old")) == "EACCES"


def test_grants_written_before_introduce_are_valid(kit: Kit) -> None:
    """libxl creates /local/domain/N (n0 rN) before INTRODUCE: the guest can read it."""
    d = kit.dom0
    kit.ok(d, Op.MKDIR, z("/local/domain/5"))
    kit.ok(d, Op.SET_PERMS, z("/local/domain/5", "n0", "r5"))
    kit.write(d, "/local/domain/5/name", "vm")
    guest = kit.introduce(5)
    assert kit.ok(guest, Op.READ, z("name")) == b"vm"
    assert kit.error(guest, Op.WRITE, z("name", "no")) == "EACCES"


def test_set_perms_owner_must_exist(kit: Kit) -> None:
    d = kit.dom0
    kit.write(d, "/p", "x")
    assert kit.error(d, Op.SET_PERMS, z("/p", f"n{UNKNOWN_DOMAIN}")) == "ENOENT"
    kit.ok(d, Op.SET_PERMS, z("/p", "n0", "r25"))  # a grant to nobody is kept, ignored
    assert kit.ok(d, Op.GET_PERMS, z("/p")) == b"n0\0r25\0"


def test_set_target(kit: Kit) -> None:
    d = kit.dom0
    guest, stubdom = kit.introduce(5), kit.introduce(6)
    kit.home(5)
    kit.write(guest, "data", "mine")
    kit.write(d, "/granted", "g")
    kit.ok(d, Op.SET_PERMS, z("/granted", "n0", "r5"))
    assert kit.error(stubdom, Op.READ, z("/local/domain/5/data")) == "EACCES"
    assert kit.error(d, Op.SET_TARGET, z("6", "9")) == "ENOENT"
    assert kit.error(d, Op.SET_TARGET, z("6")) == "EINVAL"
    kit.ok(d, Op.SET_TARGET, z("6", "5"))
    assert kit.ok(stubdom, Op.READ, z("/local/domain/5/data")) == b"mine"
    assert kit.ok(stubdom, Op.READ, z("/granted")) == b"g"


def test_features(kit: Kit) -> None:
    d = kit.dom0
    everything = kit.engine.features
    assert everything == 15  # RECONNECTION | ERROR | WATCHDEPTH | DOMID_ANY
    assert kit.ok(d, Op.GET_FEATURE, z("8")) == b"15\0"
    assert kit.error(d, Op.GET_FEATURE, z(UNKNOWN_DOMAIN)) == "ENOENT"
    assert kit.error(d, Op.SET_FEATURE, z("8", "16")) == "EINVAL"  # not offered
    assert kit.error(d, Op.SET_FEATURE, z("8")) == "EINVAL"
    kit.ok(d, Op.SET_FEATURE, z("8", "3"))  # mask off WATCHDEPTH and DOMID_ANY
    assert kit.ok(d, Op.GET_FEATURE, z("8")) == b"3\0"
    guest = kit.introduce(8)
    assert ("introduce", 8, 1, 3) in kit.backend.calls
    assert kit.ok(guest, Op.GET_FEATURE, z()) == b"3\0"
    assert kit.ok(d, Op.GET_FEATURE, z("8")) == b"3\0"
    assert kit.error(d, Op.SET_FEATURE, z("8", "1")) == "EBUSY"
    assert kit.error(guest, Op.WATCH, z("/x", "t", "1")) == "EINVAL"  # no WATCHDEPTH
    other = kit.introduce(9)
    assert kit.ok(other, Op.GET_FEATURE, z()) == b"15\0"
    kit.ok(other, Op.WATCH, z("/x", "t", "1"))
