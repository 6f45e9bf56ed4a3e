"""One test per quota: the last allowed and the first refused request, the error name,
and that the privileged domain is exempt, under the default <=4.21 rule and under
``quota/rule = 4.22`` (xenstore-protocol.md §6.1, §2.3, §5.2, §5.4).

Limits are lowered through their node under /tool/xenstored/ (so the live route is what
is exercised) to keep the loops short; the boundary arithmetic is the same at any value.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kit.config import ConfigKit
from kit.engine import ErrorReply, z

from pyxenstored.protocol.wire import Op, encode

RULES = ("4.21", "4.22")
HOME = "/local/domain/5"


@pytest.fixture(params=RULES)
def rule(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fill(attempt: Callable[[int], object], limit: int) -> tuple[int, str]:
    """Call ``attempt(i)`` for i = 0, 1, ... until it is refused (at most ``limit``
    times); return (successes, the refusal's errno name)."""
    for i in range(limit):
        try:
            attempt(i)
        except ErrorReply as err:
            return i, err.name
    raise AssertionError(f"never refused in {limit} attempts")


# -- nodes -------------------------------------------------------------------------------
def test_nodes_boundary(rule: str) -> None:
    k = ConfigKit(rule)
    guest = k.guest(5)
    k.set("quota/nodes", 10)
    assert k.owned(5) == 1  # its home
    most = 10 if rule == "4.21" else 9  # <=4.21: count > limit fails; 4.22: >=
    made, err = fill(lambda i: k.write(guest, f"{HOME}/n{i}", "x"), 20)
    assert err == "ENOSPC"
    assert k.owned(5) == most and made == most - 1
    # The refused request changed nothing; MKDIR is refused the same way.
    assert k.error(guest, Op.MKDIR, z(f"{HOME}/extra")) == "ENOSPC"
    assert k.owned(5) == most
    # Overwriting an existing node needs no new node.
    k.write(guest, f"{HOME}/n0", "again")
    # The privileged domain is exempt, even when it creates nodes the guest owns.
    for i in range(5):
        k.write(k.dom0, f"{HOME}/by-dom0-{i}", "x")
    assert k.owned(5) == most + 5


def test_nodes_missing_parents_count_and_nothing_is_half_made() -> None:
    k = ConfigKit()
    guest = k.guest(5)
    k.set("quota/nodes", 3)  # home + 2
    assert k.write_error(guest, f"{HOME}/a/b/c", "x") == "ENOSPC"  # needs 3 new nodes
    assert f"{HOME}/a" not in k.engine.tree.nodes
    k.write(guest, f"{HOME}/a/b", "x")  # 2 new nodes: owned 3, the limit
    assert k.owned(5) == 3


def test_nodes_checked_again_at_commit(rule: str) -> None:
    """Creations inside a transaction count when it commits: a commit that would take
    the domain past its limit is ENOSPC and applies nothing (§5.1)."""
    k = ConfigKit(rule)
    guest = k.guest(5)
    k.set("quota/nodes", 10)
    most = 10 if rule == "4.21" else 9
    tx = k.start(guest)
    for i in range(most):  # one too many
        k.write(guest, f"{HOME}/t{i}", "x", tx=tx)
    assert k.error(guest, Op.TRANSACTION_END, z("T"), tx=tx) == "ENOSPC"
    assert k.owned(5) == 1
    tx = k.start(guest)
    for i in range(most - 1):  # exactly up to the limit
        k.write(guest, f"{HOME}/t{i}", "x", tx=tx)
    k.ok(guest, Op.TRANSACTION_END, z("T"), tx=tx)
    assert k.owned(5) == most


# -- watches -----------------------------------------------------------------------------
def test_watches_boundary(rule: str) -> None:
    k = ConfigKit(rule)
    guest = k.guest(5)
    k.set("quota/watches", 4)
    most = 5 if rule == "4.21" else 3  # <=4.21 refused only when count > 4; 4.22 >= 4
    made, err = fill(lambda i: k.ok(guest, Op.WATCH, z(f"/w/{i}", "tok")), 10)
    assert made == most
    # C <=4.21 answered E2BIG (watch.c:223); 4.22 ENOSPC.
    assert err == ("E2BIG" if rule == "4.21" else "ENOSPC")
    assert len(guest.watches) == most
    # Removing one makes room for exactly one.
    k.ok(guest, Op.UNWATCH, z("/w/0", "tok"))
    k.ok(guest, Op.WATCH, z("/w/again", "tok"))
    assert k.error(guest, Op.WATCH, z("/w/more", "tok")) == err
    for i in range(20):  # the privileged domain is exempt
        k.ok(k.dom0, Op.WATCH, z(f"/w/{i}", "dom0"))


# -- transactions ------------------------------------------------------------------------
def test_transactions_boundary(rule: str) -> None:
    k = ConfigKit(rule)
    guest = k.guest(5)
    k.set("quota/transactions", 4)
    most = 5 if rule == "4.21" else 3  # §5.4: <=4.21 allows limit+1, 4.22 limit-1
    made, err = fill(lambda i: k.ok(guest, Op.TRANSACTION_START, z("")), 10)
    assert (made, err) == (most, "ENOSPC")
    assert len(guest.transactions) == most
    tx = next(iter(guest.transactions))
    k.ok(guest, Op.TRANSACTION_END, z("F"), tx=tx)
    k.ok(guest, Op.TRANSACTION_START, z(""))
    for _ in range(20):
        k.ok(k.dom0, Op.TRANSACTION_START, z(""))


# -- transaction-nodes -------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["4.21", "4.22"])
def test_transaction_nodes_boundary(rule: str) -> None:
    k = ConfigKit(rule)
    guest = k.guest(5)
    k.write(guest, f"{HOME}/t", "")
    k.set("quota/transaction-nodes", 10)
    most = 10 if rule == "4.21" else 9  # distinct nodes one transaction may touch
    tx = k.start(guest)
    view = guest.transactions[tx].view
    touched = []

    def step(i: int) -> None:
        k.write(guest, f"{HOME}/t/k{i}", "x", tx=tx)  # one new node each (after the first)
        touched.append(view.touched)

    _, err = fill(step, 30)
    assert err == "ENOSPC"
    assert max(touched) == most


def test_transaction_nodes_privileged_exempt() -> None:
    k = ConfigKit()
    k.set("quota/transaction-nodes", 10)
    tx = k.start(k.dom0)
    for i in range(40):
        k.write(k.dom0, f"/big/k{i}", "x", tx=tx)
    k.ok(k.dom0, Op.TRANSACTION_END, z("T"), tx=tx)
    assert "/big/k39" in k.engine.tree.nodes


def test_transaction_nodes_refusal_fails_the_transaction() -> None:
    k = ConfigKit()
    guest = k.guest(5)
    k.set("quota/transaction-nodes", 4)
    tx = k.start(guest)
    with pytest.raises(ErrorReply, match="ENOSPC"):
        for i in range(10):
            k.write(guest, f"{HOME}/k{i}", "x", tx=tx)
    assert k.error(guest, Op.TRANSACTION_END, z("T"), tx=tx) == "ENOMEM"
    assert f"{HOME}/k0" not in k.engine.tree.nodes


# -- node-permissions --------------------------------------------------------------------
def test_node_permissions_boundary(rule: str) -> None:
    k = ConfigKit(rule)
    guest = k.guest(5)
    k.write(guest, f"{HOME}/p", "")
    most = 5 if rule == "4.21" else 4  # default limit 5

    def perms(n: int) -> list[str]:
        return ["n5", *(f"r{d}" for d in range(1, n))]

    k.ok(guest, Op.SET_PERMS, z(f"{HOME}/p", *perms(most)))
    assert k.error(guest, Op.SET_PERMS, z(f"{HOME}/p", *perms(most + 1))) == "ENOSPC"
    assert (
        k.ok(guest, Op.GET_PERMS, z(f"{HOME}/p")) == "".join(p + "\0" for p in perms(most)).encode()
    )
    k.ok(k.dom0, Op.SET_PERMS, z(f"{HOME}/p", *perms(12)))  # privileged: exempt


# -- path-max ----------------------------------------------------------------------------


def rel_path(length: int, letter: str) -> str:
    """A relative path of exactly ``length`` bytes in components of at most 199 bytes,
    so that no directory's child list passes the node-size limit on the way."""
    parts = []
    while length > 200:
        parts.append(letter * 199)
        length -= 200
    parts.append(letter * length)
    return "/".join(parts)


@pytest.mark.parametrize("rule", ["4.21", "4.22"])
def test_path_max_boundary_applies_to_everyone(rule: str) -> None:
    """Only the part after /local/domain/<N>/ counts; EINVAL; as in C 4.17 (and O) the
    privileged domain is not exempt."""
    k = ConfigKit(rule)
    guest = k.guest(5)
    most = 2048 if rule == "4.21" else 2047
    assert len(rel_path(most, "a")) == most
    k.write(guest, rel_path(most, "a"), "")  # relative: under its home
    k.write(k.dom0, f"{HOME}/{rel_path(most, 'b')}", "")
    too_long = rel_path(most + 1, "c")
    for conn in (guest, k.dom0):
        assert k.write_error(conn, f"{HOME}/{too_long}", "") == "EINVAL"
        assert k.error(conn, Op.READ, z(f"{HOME}/{too_long}")) == "EINVAL"
        assert k.error(conn, Op.MKDIR, z(f"{HOME}/{too_long}")) == "EINVAL"
    assert k.write_error(guest, too_long, "") == "EINVAL"


def test_path_max_outside_local_domain_counts_whole_path() -> None:
    k = ConfigKit()
    k.set("quota/path-max", 64)
    assert k.write_error(k.dom0, "/" + "x" * 64, "") == "EINVAL"  # 65 bytes
    k.write(k.dom0, "/" + "x" * 63, "")
    k.write(k.dom0, f"{HOME}/" + "y" * 64, "")  # only the relative part counts


# -- node-size ---------------------------------------------------------------------------
def node_size_most(rule: str, nperms: int = 1) -> int:
    """The largest value a childless node with ``nperms`` permissions may hold: its size
    is 16 + 8 * nperms + value (xenstore-protocol.md §6.1)."""
    room = 2048 - 16 - 8 * nperms
    return room if rule == "4.21" else room - 1


def test_node_size_boundary_overwrite(rule: str) -> None:
    k = ConfigKit(rule)
    guest = k.guest(5)
    k.write(guest, f"{HOME}/v", "")
    most = node_size_most(rule)
    k.write(guest, f"{HOME}/v", "x" * most)
    assert k.write_error(guest, f"{HOME}/v", "y" * (most + 1)) == "ENOSPC"
    assert k.read(guest, f"{HOME}/v") == b"x" * most
    # More permissions leave less room for the value.
    k.write(guest, f"{HOME}/w", "")
    k.ok(guest, Op.SET_PERMS, z(f"{HOME}/w", "n5", "r1", "r2"))
    most3 = node_size_most(rule, 3)
    k.write(guest, f"{HOME}/w", "x" * most3)
    assert k.write_error(guest, f"{HOME}/w", "x" * (most3 + 1)) == "ENOSPC"
    k.write(k.dom0, f"{HOME}/v", "z" * 4000)  # privileged: exempt


def test_node_size_boundary_create(rule: str) -> None:
    k = ConfigKit(rule)
    guest = k.guest(5)
    most = node_size_most(rule)
    k.write(guest, f"{HOME}/v", "x" * most)
    assert k.write_error(guest, f"{HOME}/w", "x" * (most + 1)) == "ENOSPC"


def test_node_size_counts_the_parents_child_list() -> None:
    k = ConfigKit()
    guest = k.guest(5)
    k.write(guest, f"{HOME}/dir", "")
    k.write(guest, f"{HOME}/dir", "x" * 2020)  # size 2044
    assert k.write_error(guest, f"{HOME}/dir/abcdef", "") == "ENOSPC"  # would be 2051
    assert f"{HOME}/dir/abcdef" not in k.engine.tree.nodes


# -- memory ------------------------------------------------------------------------------
def test_memory_boundary(rule: str) -> None:
    """ENOMEM when a request would take the domain's memory to its hard limit (the same
    ``>=`` under both rules); the ring stops being read at the limit."""
    k = ConfigKit(rule)
    guest = k.guest(5)
    k.write(guest, f"{HOME}/data", "")
    used = k.engine.memory_used(5, guest)
    k.set("quota/memory", used + 100)
    k.write(guest, f"{HOME}/data", "x" * 99)  # used + 99: the last allowed
    assert not k.engine.paused(guest)
    assert k.write_error(guest, f"{HOME}/data", "x" * 100) == "ENOMEM"
    assert k.read(guest, f"{HOME}/data") == b"x" * 99
    assert k.write_error(guest, f"{HOME}/other", "") == "ENOMEM"  # a new node costs more
    # The privileged domain is exempt and may push the guest past its limit ...
    k.write(k.dom0, f"{HOME}/data", "y" * 500)
    # ... after which the guest's ring is not read.
    assert k.engine.paused(guest)
    assert not k.engine.paused(k.dom0)


def test_memory_soft_limit_warns_without_refusing(caplog: pytest.LogCaptureFixture) -> None:
    k = ConfigKit()
    guest = k.guest(5)
    k.set("quota-soft/memory", 200)
    with caplog.at_level("WARNING", logger="pyxenstored.quota"):
        k.write(guest, f"{HOME}/data", "x" * 300)
    assert k.read(guest, f"{HOME}/data") == b"x" * 300
    assert k.engine.refusals.counts.get((5, "soft-memory")) == 1
    assert any("domain 5" in r.message and "soft-memory" in r.message for r in caplog.records)


# -- outstanding -------------------------------------------------------------------------
def test_outstanding_boundary(rule: str) -> None:
    """A domain whose ``outstanding`` replies are still queued is paused: its ring is not
    read (§6.1; the same under both rules). Nothing is refused."""
    k = ConfigKit(rule)
    guest = k.guest(5)
    k.set("quota/outstanding", 5)
    request = encode(Op.READ, 1, 0, f"{HOME}\0".encode())
    for _ in range(4):
        k.engine.feed(guest, request)
    assert len(guest.out) == 4 and not k.engine.paused(guest)
    k.engine.feed(guest, request)
    assert len(guest.out) == 5 and k.engine.paused(guest)
    guest.take_output()  # the transport delivered the replies
    assert not k.engine.paused(guest)
    for _ in range(50):  # the privileged domain is never paused
        k.engine.feed(k.dom0, request)
    assert not k.engine.paused(k.dom0)
    k.dom0.take_output()
    k.set("quota/outstanding", 0)  # 0: no limit
    for _ in range(30):
        k.engine.feed(guest, request)
    assert not k.engine.paused(guest)


def test_zero_means_no_limit() -> None:
    k = ConfigKit()
    guest = k.guest(5)
    for name in ("nodes", "watches", "transactions"):
        k.set(f"quota/{name}", 0)
    for i in range(30):
        k.write(guest, f"{HOME}/n{i}", "")
        k.ok(guest, Op.WATCH, z(f"/w{i}", "t"))
        k.ok(guest, Op.TRANSACTION_START, z(""))


def test_lowering_a_limit_evicts_nothing() -> None:
    k = ConfigKit()
    guest = k.guest(5)
    for i in range(10):
        k.write(guest, f"{HOME}/n{i}", "")
    k.set("quota/nodes", 5)
    assert k.owned(5) == 11
    assert k.read(guest, f"{HOME}/n9") == b""
    assert k.write_error(guest, f"{HOME}/more", "") == "ENOSPC"
    k.ok(guest, Op.RM, z(f"{HOME}/n9"))  # removing is always possible
    assert k.owned(5) == 10
