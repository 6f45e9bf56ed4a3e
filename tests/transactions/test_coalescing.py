"""Scenario tests of coalescing transactions and conflict fairness (issue 4)."""

from __future__ import annotations

import pytest
from kit.engine import OK, Kit, z

from pyxenstored.core.engine import Engine
from pyxenstored.core.transactions import CONFLICT_MODES, ConflictMode
from pyxenstored.protocol.wire import Op


def _domain(h: Kit, domid: int) -> None:
    """A guest's home as a toolstack makes it, and the guest introduced."""
    h.guest(domid)


@pytest.fixture(params=CONFLICT_MODES)
def mode(request: pytest.FixtureRequest) -> ConflictMode:
    return CONFLICT_MODES[CONFLICT_MODES.index(request.param)]


def test_independent_transactions_coalesce(mode: ConflictMode) -> None:
    """Two transactions adding different children to one directory: both commit under
    coalescing; the second gets EAGAIN under C's generation rule."""
    h = Kit(Engine(conflicts=mode))
    a, b = h.sock(), h.sock()
    h.call(a, Op.MKDIR, b"/local/domain\0")
    ta, tb = h.start(a), h.start(b)
    h.write(a, "/local/domain/1/name", b"vm1", ta)
    h.write(b, "/local/domain/2/name", b"vm2", tb)
    assert h.end(a, ta) == OK
    expected = OK if mode == "coalesce" else "EAGAIN"
    assert h.end(b, tb) == expected
    listing = h.ok(a, Op.DIRECTORY, b"/local/domain\0")
    assert listing == (b"1\x002\0" if mode == "coalesce" else b"1\0")
    assert h.engine.check() == []


def _device_transaction(h: Kit, domid: int, devid: int) -> tuple[object, int]:
    """libxl's device transaction: existence check, then front and back directories."""
    conn = h.sock()
    t = h.start(conn)
    fe = f"/local/domain/{domid}/device/vif/{devid}"
    be = f"/local/domain/0/backend/vif/{domid}/{devid}"
    assert h.call(conn, Op.READ, z(fe + "/backend"), t) == "ENOENT"
    for path in (fe, be):
        h.call(conn, Op.RM, path.encode() + b"\0", t)
        h.call(conn, Op.MKDIR, path.encode() + b"\0", t)
    h.call(conn, Op.SET_PERMS, fe.encode() + b"\0n%d\0r0\0" % domid, t)
    h.call(conn, Op.SET_PERMS, be.encode() + b"\0n0\0r%d\0" % domid, t)
    for key in ("backend", "backend-id", "state", "handle", "mac"):
        h.write(conn, f"{fe}/{key}", b"x", t)
    for key in ("frontend", "frontend-id", "online", "state", "script", "mac", "bridge"):
        h.write(conn, f"{be}/{key}", b"y", t)
        h.write(conn, f"/libxl/{domid}/device/vif/{devid}/{key}", b"y", t)
    return conn, t


def test_device_create_transactions_coalesce() -> None:
    """Parallel device transactions of different VMs (all under backend/vif and
    /libxl) commit without EAGAIN; the tree is consistent afterwards."""
    h = Kit()
    d0 = h.sock()
    for path in (b"/local/domain/0/backend/vif\0", b"/libxl\0"):
        h.call(d0, Op.MKDIR, path)
    for domid in (1, 2, 3, 4):
        h.call(d0, Op.MKDIR, b"/local/domain/%d/device\0" % domid)
    txns = [_device_transaction(h, domid, 0) for domid in (1, 2, 3, 4)]
    for conn, t in txns:
        assert h.end(conn, t) == OK  # type: ignore[arg-type]
    assert h.call(d0, Op.DIRECTORY, b"/local/domain/0/backend/vif\0") == b"1\x002\x003\x004\0"
    assert h.engine.check() == []


def test_real_conflicts_are_refused() -> None:
    """A read value changed, a listed directory changed, a read node removed."""
    h = Kit()
    a, b = h.sock(), h.sock()
    h.write(a, "/x", b"1")
    h.write(a, "/dir/one", b"")
    # value read, then changed
    t = h.start(a)
    h.read(a, "/x", t)
    h.write(a, "/y", b"derived", t)
    h.write(b, "/x", b"2")
    assert h.end(a, t) == "EAGAIN"
    assert h.call(a, Op.READ, z("/y")) == "ENOENT"  # nothing of it was applied
    # directory listed, then a child added
    t = h.start(a)
    h.call(a, Op.DIRECTORY, b"/dir\0", t)
    h.write(a, "/count", b"1", t)
    h.write(b, "/dir/two", b"")
    assert h.end(a, t) == "EAGAIN"
    # node read, then removed
    t = h.start(a)
    h.read(a, "/x", t)
    h.write(a, "/z", b"", t)
    h.call(b, Op.RM, b"/x\0")
    assert h.end(a, t) == "EAGAIN"


def test_unobserved_changes_do_not_conflict() -> None:
    """A sibling created, another subtree changed, a value rewritten to the same bytes."""
    h = Kit()
    a, b = h.sock(), h.sock()
    h.write(a, "/vm/1/name", b"one")
    t = h.start(a)
    assert h.call(a, Op.READ, z("/vm/1/name"), t) == b"one"
    h.write(a, "/vm/1/state", b"running", t)
    h.write(b, "/vm/2/name", b"two")  # a sibling of /vm/1
    h.write(b, "/elsewhere/x", b"1")  # another subtree
    h.write(b, "/vm/1/name", b"one")  # same bytes again
    assert h.end(a, t) == OK
    assert h.call(a, Op.READ, z("/vm/1/state")) == b"running"


def test_blind_write_write_conflict_but_same_bytes_coalesce() -> None:
    """Overwriting a node another client changed meanwhile is refused (first committer
    wins, as in C and the historic suite), unless the other wrote the same bytes."""
    h = Kit()
    a, b = h.sock(), h.sock()
    h.write(a, "/k", b"0")
    t = h.start(a)
    h.write(a, "/k", b"mine", t)
    h.write(b, "/k", b"theirs")
    assert h.end(a, t) == "EAGAIN"
    t = h.start(a)
    h.write(a, "/k", b"mine", t)
    h.write(b, "/k", b"theirs")  # unchanged value
    assert h.end(a, t) == OK
    assert h.call(a, Op.READ, z("/k")) == b"mine"


def test_failed_read_that_becomes_a_success_conflicts() -> None:
    h = Kit()
    a, b = h.sock(), h.sock()
    t = h.start(a)
    assert h.call(a, Op.READ, z("/flag"), t) == "ENOENT"
    h.write(a, "/decision", b"flag was absent", t)
    h.write(b, "/flag", b"1")
    assert h.end(a, t) == "EAGAIN"
    # and a failed read that stays failed does not
    t = h.start(a)
    assert h.call(a, Op.READ, z("/other"), t) == "ENOENT"
    h.write(a, "/decision", b"other is absent", t)
    h.write(b, "/flag", b"2")
    assert h.end(a, t) == OK


def test_permission_denied_that_becomes_allowed_conflicts() -> None:
    """An EACCES observed by a guest depends on the permissions: if they change, the
    transaction does not commit on a stale error."""
    h = Kit()
    _domain(h, 5)
    d0, g = h.sock(), h.dom(None, 5, introduce=False)
    h.write(d0, "/secret", b"s")
    t = h.start(g)
    assert h.call(g, Op.READ, z("/secret"), t) == "EACCES"
    h.write(g, "/local/domain/5/saw", b"denied", t)
    h.call(d0, Op.SET_PERMS, b"/secret\0n0\0r5\0")
    assert h.end(g, t) == "EAGAIN"


def test_quota_counts_after_interleaved_commits() -> None:
    """Node counts per domain stay exact when transactions commit out of order
    (the CA-100569 merge of oxenstored2)."""
    h = Kit()
    for domid in (5, 6):
        _domain(h, domid)
    g5, g6 = h.dom(None, 5, introduce=False), h.dom(None, 6, introduce=False)
    # The common parent exists: creating it in two transactions would really conflict.
    h.call(g5, Op.MKDIR, b"data\0")
    h.call(g6, Op.MKDIR, b"data\0")
    t5a, t5b, t6 = h.start(g5), h.start(g5), h.start(g6)
    for i in range(3):
        h.write(g5, f"data/a{i}", b"x", t5a)
        h.write(g5, f"data/b{i}", b"x", t5b)
        h.write(g6, f"data/c{i}", b"x", t6)
    h.call(g5, Op.RM, b"data/a0\0", t5a)
    before5 = h.engine.tree.owner_count.get(5, 0)
    before6 = h.engine.tree.owner_count.get(6, 0)
    assert h.end(g6, t6) == OK
    assert h.end(g5, t5b) == OK
    assert h.end(g5, t5a) == OK
    # t5b created 3 nodes, t5a 2 (a0 created then removed), t6 3.
    assert h.engine.tree.owner_count[5] == before5 + 3 + 2
    assert h.engine.tree.owner_count[6] == before6 + 3
    assert h.engine.check() == []


def test_node_quota_is_enforced_at_commit() -> None:
    """Two transactions that each fit the node quota but not together: the second
    commit is refused with ENOSPC and applies nothing."""
    h = Kit()
    _domain(h, 5)
    g = h.dom(None, 5, introduce=False)
    used = h.engine.tree.owner_count.get(5, 0)
    h.engine.limits.nodes = used + 4
    t1, t2 = h.start(g), h.start(g)
    for i in range(3):
        h.write(g, f"a{i}", b"", t1)
        h.write(g, f"b{i}", b"", t2)
    assert h.end(g, t1) == OK
    assert h.end(g, t2) == "ENOSPC"
    assert h.call(g, Op.READ, z("b0")) == "ENOENT"
    assert h.engine.check() == []


def test_watch_events_only_on_commit() -> None:
    h = Kit()
    a, w = h.sock(), h.sock()
    h.call(w, Op.WATCH, b"/watched\0tok\0")
    h.take_events(w)
    t = h.start(a)
    h.write(a, "/watched/x", b"1", t)
    h.write(a, "/watched/y", b"2", t)
    assert h.take_events(w) == []
    assert h.end(a, t) == OK
    assert h.take_events(w) == [("/watched/x", "tok"), ("/watched/y", "tok")]
    # an aborted transaction and a refused one fire nothing
    h.take_events(w)
    t = h.start(a)
    h.write(a, "/watched/z", b"3", t)
    assert h.end(a, t, commit=False) == OK
    t = h.start(a)
    h.read(a, "/watched/x", t)
    h.write(a, "/watched/z", b"3", t)
    h.write(h.sock(), "/watched/x", b"changed")
    h.take_events(w)
    assert h.end(a, t) == "EAGAIN"
    assert h.take_events(w) == []


def test_transaction_nodes_limit_is_checked_before_the_operation() -> None:
    """A guest's transaction that would touch one node too many is refused that request
    (ENOSPC) before it runs; as in C the transaction can then only fail (ENOMEM), so
    none of it is applied."""
    h = Kit()
    _domain(h, 5)
    g = h.dom(None, 5, introduce=False)
    h.engine.limits.transaction_nodes = 8
    t = h.start(g)
    results = [h.call(g, Op.WRITE, f"n{i}|", t) for i in range(10)]
    refused = [r for r in results if r == "ENOSPC"]
    assert refused, results
    assert g.transactions[t].view.touched <= 8
    assert h.end(g, t) == "ENOMEM"
    assert h.call(g, Op.READ, z("n0")) == "ENOENT"


def test_cleanup_is_idempotent() -> None:
    """RESET_WATCHES inside a transaction (XSA-484), then END and disconnect."""
    h = Kit()
    a = h.sock()
    t = h.start(a)
    h.write(a, "/x", b"1", t)
    assert h.call(a, Op.RESET_WATCHES, b"\0", t) == OK
    assert h.end(a, t) == "ENOENT"
    h.engine.disconnect(a)
    h.engine.disconnect(a)
    assert h.engine.check() == []


def test_conflict_blame_throttles_the_guest_not_dom0() -> None:
    """A guest that keeps changing what dom0's transactions read is blamed; after the
    burst its ring is paused, and credit returns over time (XSA-206 class)."""
    h = Kit()
    _domain(h, 5)
    d0, g = h.sock(), h.dom(None, 5, introduce=False)
    h.write(d0, "/shared/x", b"0")
    h.call(d0, Op.SET_PERMS, b"/shared/x\0b5\0")
    guard = h.engine.conflict_guard
    refused = 0
    for i in range(8):
        t = h.start(d0)
        h.read(d0, "/shared/x", t)
        h.write(d0, "/shared/seen", b"%d" % i, t)
        if not h.engine.paused(g):
            h.write(g, "/shared/x", b"g%d" % i)
        if h.end(d0, t) == "EAGAIN":
            refused += 1
    assert refused == 5  # the burst limit
    assert h.engine.paused(g)
    assert guard.blamed[5] == 5
    # dom0 itself is never paused, however many conflicts it causes
    assert not h.engine.paused(d0)
    while h.engine.paused(g):
        guard.replenish()
    assert not h.engine.paused(g)


def test_self_conflicts_are_not_blamed() -> None:
    h = Kit()
    _domain(h, 5)
    g = h.dom(None, 5, introduce=False)
    h.write(g, "x", b"0")
    t = h.start(g)
    h.read(g, "x", t)
    h.write(g, "x", b"1")
    assert h.end(g, t) == "EAGAIN"
    assert h.engine.conflict_guard.blamed == {}


def test_absent_observation_is_never_forgotten() -> None:
    """A transaction that saw /x absent, then (through a child created meanwhile)
    removes /x/y, has seen two states no commit point explains: EAGAIN, not OK."""
    for mode in ("coalesce", "generation"):
        h = Kit(Engine(conflicts=mode))
        a, b = h.sock(), h.sock()
        t = h.start(a)
        assert h.call(a, Op.READ, z("/x"), t) == "ENOENT"
        h.write(b, "/x/y", b"1")
        assert h.call(a, Op.READ, z("/x/y"), t) == b"1"
        assert h.call(a, Op.RM, b"/x/y\0", t) == OK
        assert h.end(a, t) == "EAGAIN", mode


def test_parent_removed_under_a_transaction_is_no_internal_error() -> None:
    """The parent of a node the transaction saw is removed outside it; removing the
    node inside the transaction must answer normally (no EIO) and cannot commit."""
    h = Kit()
    _domain(h, 5)
    d0, g = h.sock(), h.dom(None, 5, introduce=False)
    h.write(g, "a/b", b"v")
    t = h.start(g)
    assert h.call(g, Op.READ, z("a/b"), t) == b"v"
    h.call(d0, Op.RM, b"/local/domain/5/a\0")
    assert h.call(g, Op.RM, b"a/b\0", t) == OK
    assert h.end(g, t) == "EAGAIN"
    assert h.engine.check() == []


def test_parallel_creation_of_a_common_implicit_parent_coalesces() -> None:
    """Device transactions of two VMs each create /local/domain/0/backend/vif as an
    implicit parent; the second commit finds it created exactly as it would have
    created it, so it coalesces (0 EAGAIN on a fresh host)."""
    h = Kit()
    a, b = h.sock(), h.sock()
    h.call(a, Op.MKDIR, b"/local/domain/0\0")
    ta, tb = h.start(a), h.start(b)
    assert h.call(a, Op.MKDIR, b"/local/domain/0/backend/vif/1/0\0", ta) == OK
    assert h.call(b, Op.MKDIR, b"/local/domain/0/backend/vif/2/0\0", tb) == OK
    assert h.end(a, ta) == OK
    assert h.end(b, tb) == OK
    assert h.call(a, Op.DIRECTORY, b"/local/domain/0/backend/vif\0") == b"1\x002\0"
    assert h.engine.check() == []


def test_implicit_parent_created_differently_conflicts() -> None:
    """If the parent now holds a value or other permissions, the transaction would have
    seen a different tree: EAGAIN."""
    for change in (b"/p\0n0\0r7\0", None):
        h = Kit()
        a, b = h.sock(), h.sock()
        t = h.start(a)
        h.call(a, Op.MKDIR, b"/p/child\0", t)
        h.write(b, "/p", b"" if change else b"not empty")
        if change:
            h.call(b, Op.SET_PERMS, change)
        assert h.end(a, t) == "EAGAIN"
