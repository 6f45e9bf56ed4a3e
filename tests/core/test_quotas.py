"""Quotas of unprivileged domains with the default (4.17-4.21) boundaries, and dom0's
exemption (xenstore-protocol.md §6.1, §12.11; docs/compatibility.md).

Checked on C xenstored 4.17 with a guest on a ring: 1000 nodes, 129 watches (the 130th
is E2BIG), 11 transactions, 5 permissions, 1024 nodes touched per transaction, relative
paths of 2048 characters. The node-size boundary follows the spec's ≤4.21 column
(16-byte header + 8 per permission + value + child names, refused when over 2048); C
4.17 itself counts a 24-byte header and refuses at 2048, i.e. 9 bytes earlier.
"""

from __future__ import annotations

import pytest
from kit.engine import OK, Kit, z

from pyxenstored.protocol.wire import Op


def home5(**engine_kw: object) -> Kit:
    """dom0 has made /local/domain/5, owned by domain 5 (which owns 1 node)."""
    h = Kit(**engine_kw)  # type: ignore[arg-type]
    h.write("s", "/local/domain/5")
    h.set_perms("s", "/local/domain/5", "n5")
    assert h.engine.tree.owner_count[5] == 1
    return h


def fill_nodes(h: Kit, count: int) -> None:
    """Domain 5 creates ``count`` nodes, 20 per directory (small child lists)."""
    made = 0
    d = 0
    while made < count:
        h.write("d5", f"q{d}")
        made += 1
        for c in range(20):
            if made == count:
                break
            h.write("d5", f"q{d}/{c}")
            made += 1
        d += 1


# -- nodes ------------------------------------------------------------------------------
def test_node_quota_allows_1000_nodes() -> None:
    h = home5()
    fill_nodes(h, 999)
    assert h.engine.tree.owner_count[5] == 1000
    assert h.call("d5", Op.WRITE, "one-more|") == "ENOSPC"
    assert h.call("d5", Op.MKDIR, "one-more|") == "ENOSPC"
    # Changing what exists is still fine at the limit.
    assert h.call("d5", Op.MKDIR, "q0|") == OK
    assert h.call("d5", Op.WRITE, "q0|new value") == OK
    assert h.call("d5", Op.SET_PERMS, z("q0", "n5", "r6")) == OK
    # Removing frees room.
    assert h.call("d5", Op.RM, "q0/0|") == OK
    assert h.call("d5", Op.WRITE, "a/b|") == "ENOSPC"  # two new nodes: all or nothing
    assert h.call("d5", Op.READ, "a|") == "ENOENT"
    assert h.call("d5", Op.WRITE, "a|") == OK
    assert h.call("d5", Op.WRITE, "b|") == "ENOSPC"
    assert h.engine.check() == []


def test_dom0_creating_in_a_full_domain_directory_is_not_refused() -> None:
    h = home5()
    fill_nodes(h, 999)
    h.write("s", "/local/domain/5/q0/from-dom0")  # owned by 5, counted against 5
    assert h.call("s", Op.GET_PERMS, "/local/domain/5/q0/from-dom0|") == b"n5\0"
    assert h.engine.tree.owner_count[5] == 1001
    assert h.call("d5", Op.RM, "q0/0|") == OK
    assert h.call("d5", Op.WRITE, "q0/again|") == "ENOSPC"  # still 1000


def test_dom0_has_no_node_quota() -> None:
    h = Kit()
    for d in range(60):
        for c in range(25):
            h.write("s", f"/many/{d}/{c}")
    assert h.engine.tree.owner_count[0] > 1500


def test_node_quota_at_commit() -> None:
    """A transaction's creations are counted again when it commits."""
    h = home5()
    fill_nodes(h, 997)  # 998 owned
    tx = h.start("d5")
    h.write("d5", "t1", tx=tx)  # 999 in the transaction's view
    h.write("d5", "o1")
    h.write("d5", "o2")  # 1000 live
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == "ENOSPC"
    assert h.call("d5", Op.READ, "t1|") == "ENOENT"
    assert h.engine.tree.owner_count[5] == 1000
    assert h.engine.check() == []


# -- watches ------------------------------------------------------------------------------
def test_watch_quota_allows_129_and_answers_e2big() -> None:
    h = home5()
    for i in range(129):
        assert h.call("d5", Op.WATCH, z(f"/w{i}", "t")) == OK
    assert h.call("d5", Op.WATCH, z("/w129", "t")) == "E2BIG"  # C <=4.21; 4.22: ENOSPC
    assert h.call("d5", Op.UNWATCH, z("/w0", "t")) == OK
    assert h.call("d5", Op.WATCH, z("/w129", "t")) == OK
    assert h.call("d5", Op.RESET_WATCHES, "") == OK
    assert h.call("d5", Op.WATCH, z("/w0", "t")) == OK


def test_dom0_has_no_watch_quota() -> None:
    h = Kit()
    for i in range(300):
        assert h.call("s", Op.WATCH, z(f"/w{i}", "t")) == OK


# -- transactions -----------------------------------------------------------------------
def test_transaction_quota_allows_11() -> None:
    h = home5()
    ids = [h.start("d5") for _ in range(11)]
    assert ids == list(range(1, 12))
    assert h.call("d5", Op.TRANSACTION_START, "|") == "ENOSPC"
    assert h.call("d5", Op.TRANSACTION_END, "F|", tx=5) == OK
    assert h.call("d5", Op.TRANSACTION_START, "|") == b"12\0"
    assert h.call("s", Op.TRANSACTION_START, "|") == b"1\0"  # other connections unaffected


def test_dom0_has_no_transaction_quota() -> None:
    h = Kit()
    assert [h.start("s") for _ in range(40)] == list(range(1, 41))


# -- permissions per node ---------------------------------------------------------------
def test_node_permissions_quota_allows_5() -> None:
    h = home5()
    h.write("d5", "p")
    assert h.call("d5", Op.SET_PERMS, z("p", "n5", "r1", "r2", "r3", "r4")) == OK
    assert h.call("d5", Op.SET_PERMS, z("p", "n5", "r1", "r2", "r3", "r4", "r6")) == "ENOSPC"
    assert h.call("d5", Op.GET_PERMS, "p|") == b"n5\0r1\0r2\0r3\0r4\0"
    # Counted before parsing: six bad entries are ENOSPC, not EINVAL.
    assert h.call("d5", Op.SET_PERMS, z("p", *["x"] * 6)) == "ENOSPC"
    assert (
        h.call("s", Op.SET_PERMS, z("/local/domain/5/p", "n5", *[f"r{i}" for i in range(9)])) == OK
    )


# -- path length --------------------------------------------------------------------------
def rel_path(n: int) -> str:
    parts = []
    length = -1
    while length < n:
        parts.append("x" * min(200, n - length - 1))
        length += len(parts[-1]) + 1
    return "/".join(parts)


@pytest.mark.parametrize("who", ["d5", "s"])
def test_path_max_binds_guests_and_dom0(who: str) -> None:
    """C 4.17 applies the path-max limit (2048 after /local/domain/<N>/) to dom0 too."""
    h = home5()
    assert h.call(who, Op.WRITE, "/local/domain/5/" + rel_path(2048) + "|v") == OK
    assert h.call(who, Op.WRITE, "/local/domain/5/" + rel_path(2049) + "|v") == "EINVAL"
    # Elsewhere the whole path counts.
    assert h.call(who, Op.READ, "/" + rel_path(2047) + "|") in ("ENOENT", "EACCES")
    assert h.call(who, Op.READ, "/" + rel_path(2048) + "|") == "EINVAL"
    assert h.call(who, Op.WATCH, z("@" + "x" * 2047, "t")) == OK
    assert h.call(who, Op.WATCH, z("@" + "x" * 2048, "t")) == "EINVAL"


def test_guest_relative_path_max() -> None:
    h = home5()
    assert h.call("d5", Op.WRITE, rel_path(2048) + "|v") == OK
    assert h.call("d5", Op.READ, rel_path(2048) + "|") == b"v"
    assert h.call("d5", Op.WRITE, rel_path(2049) + "|v") == "EINVAL"
    assert h.call("d5", Op.WATCH, z(rel_path(2049), "t")) == "EINVAL"


# -- node size ----------------------------------------------------------------------------
def test_node_size_of_a_value() -> None:
    h = home5()
    # 16 + 8 * 1 permission + 2024 = 2048: the largest node.
    assert h.call("d5", Op.WRITE, "v|" + "x" * 2025) == "ENOSPC"
    assert h.call("d5", Op.WRITE, "v|" + "x" * 2024) == OK
    assert h.call("d5", Op.WRITE, "v|" + "x" * 2025) == "ENOSPC"
    assert h.call("d5", Op.WRITE, "v|" + "x" * 10) == OK
    # Two inherited permissions leave 8 bytes fewer.
    assert h.call("d5", Op.SET_PERMS, z("v", "n5", "r6")) == OK
    assert h.call("d5", Op.WRITE, "v/c|" + "x" * 2017) == "ENOSPC"
    assert h.call("d5", Op.WRITE, "v/c|" + "x" * 2016) == OK
    assert h.call("d5", Op.WRITE, "v/c|" + "x" * 2017) == "ENOSPC"
    # dom0 is exempt.
    assert h.call("s", Op.WRITE, "/local/domain/5/v/c|" + "x" * 4000) == OK


def test_node_size_counts_the_child_list() -> None:
    """A guest adding children grows its directory's record: names of 5 characters
    (6 with the NUL) fit 337 times in 2048 - 16 - 8 bytes (C 4.17: 335)."""
    h = home5()
    h.write("d5", "dir")
    for i in range(337):
        assert h.call("d5", Op.WRITE, f"dir/c{i:04d}|") == OK, i
    assert h.call("d5", Op.WRITE, "dir/c0337|") == "ENOSPC"
    assert h.call("d5", Op.MKDIR, "dir/c0337|") == "ENOSPC"
    assert h.call("d5", Op.WRITE, "dir/c0000/deeper|") == OK  # another directory
    # dom0 is exempt and may take the directory past the limit; then the guest may
    # still remove children (XSA-115 follow-up) but add none.
    assert h.call("s", Op.WRITE, "/local/domain/5/dir/from-dom0|") == OK
    assert h.call("d5", Op.WRITE, "dir/zz|") == "ENOSPC"
    assert h.call("d5", Op.RM, "dir/c0000|") == OK
    assert h.call("d5", Op.RM, "dir/from-dom0|") == OK
    assert h.call("d5", Op.WRITE, "dir/zz|") == OK
    assert h.engine.check() == []


def test_guest_rewriting_an_oversized_dom0_node() -> None:
    h = home5()
    h.write("s", "/local/domain/5/big", "x" * 3000)
    assert h.call("d5", Op.WRITE, "big|" + "x" * 3000) == "ENOSPC"
    assert h.call("d5", Op.MKDIR, "big/child|") == "ENOSPC"  # the parent's record grows
    assert h.call("d5", Op.WRITE, "big|" + "x" * 10) == OK
    assert h.call("d5", Op.MKDIR, "big/child|") == OK


def test_set_perms_growing_a_node_past_node_size() -> None:
    h = home5()
    assert h.call("d5", Op.WRITE, "w|" + "x" * 2024) == OK
    assert h.call("d5", Op.SET_PERMS, z("w", "n5", "r6")) == "ENOSPC"


def test_set_perms_keeping_the_size_is_fine() -> None:
    h = home5()
    assert h.call("d5", Op.WRITE, "w|" + "x" * 2024) == OK
    assert h.call("d5", Op.SET_PERMS, z("w", "b5")) == OK
    assert h.call("s", Op.SET_PERMS, z("/local/domain/5/w", "n5", "r6")) == OK  # dom0


# -- transactions and quotas ------------------------------------------------------------
def test_transaction_nodes_quota_on_writes() -> None:
    h = home5()
    for i in range(1100):
        h.write("s", f"/local/domain/5/e{i}")
    tx = h.start("d5")
    for i in range(1024):
        assert h.call("d5", Op.WRITE, f"e{i}|v", tx=tx) == OK, i
    assert h.call("d5", Op.WRITE, "e1024|v", tx=tx) == "ENOSPC"
    # A transaction that ran into a quota can only fail (C: ENOMEM).
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == "ENOMEM"
    assert h.call("d5", Op.READ, "e0|") == b""


def test_transaction_nodes_quota_counts_reads() -> None:
    """Reads count against transaction-nodes as in C: the 1025th distinct READ is
    ENOSPC. A read-only transaction has nothing half-done, so it still commits (C 4.17
    answers ENOMEM; issue 4 asks that read-only transactions always commit)."""
    h = home5()
    for i in range(1100):
        h.write("s", f"/local/domain/5/e{i}")
    tx = h.start("d5")
    for i in range(1024):
        assert h.call("d5", Op.READ, f"e{i}|", tx=tx) == b"", i
    assert h.call("d5", Op.READ, "e1024|", tx=tx) == "ENOSPC"
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == OK


@pytest.mark.parametrize(
    ("why", "setup", "request_"),
    [
        ("node-size", None, "big|" + "x" * 3000),
        ("nodes", 999, "new|"),
    ],
)
def test_a_quota_error_inside_a_transaction_fails_the_commit(
    why: str, setup: int | None, request_: str
) -> None:
    """Checked on C 4.17: ENOSPC, later requests succeed, the commit is ENOMEM and
    nothing of the transaction is applied."""
    h = home5()
    if setup:
        fill_nodes(h, setup)
    else:
        h.write("d5", "q0")
    tx = h.start("d5")
    assert h.call("d5", Op.WRITE, request_, tx=tx) == "ENOSPC"
    assert h.call("d5", Op.WRITE, "q0|changed", tx=tx) == OK
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == "ENOMEM"
    assert h.call("d5", Op.READ, "q0|") == b""


def test_permission_count_refusal_does_not_fail_the_transaction() -> None:
    h = home5()
    h.write("d5", "p")
    tx = h.start("d5")
    perms = z("p", "n5", "r1", "r2", "r3", "r4", "r6")
    assert h.call("d5", Op.SET_PERMS, perms, tx=tx) == "ENOSPC"
    assert h.call("d5", Op.WRITE, "small|v", tx=tx) == OK
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == OK


def test_permission_errors_do_not_fail_the_transaction() -> None:
    h = home5()
    tx = h.start("d5")
    assert h.call("d5", Op.WRITE, "/tool/x|v", tx=tx) == "EACCES"
    assert h.call("d5", Op.READ, "nope|", tx=tx) == "ENOENT"
    assert h.call("d5", Op.READ, "no pe|", tx=tx) == "EINVAL"
    assert h.call("d5", Op.WRITE, "ok|v", tx=tx) == OK
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == OK
    assert h.call("d5", Op.READ, "ok|") == b"v"
