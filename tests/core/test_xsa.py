"""One test per xenstored security advisory that applies to the sans-I/O engine
(oxenstored2-lineage.md §F.2). Ring-only advisories (38, 420, 325) and fairness (206)
are covered elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from kit.engine import OK, Kit, z

from pyxenstored.core.engine import Engine
from pyxenstored.protocol.wire import Op, encode


def home(h: Kit, domid: int) -> None:
    h.write("s", f"/local/domain/{domid}")
    h.set_perms("s", f"/local/domain/{domid}", f"n{domid}")


@contextmanager
def shallow_stack(room: int = 150) -> Iterator[None]:
    """Allow only ``room`` more frames than the caller has: any recursion over the
    depth of a 1000-level tree fails loudly."""
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + room)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def test_xsa72_reply_over_4096_is_e2big_not_sent() -> None:
    h = Kit()
    for i in range(40):
        h.write("s", f"/dir/{i:03d}" + "_" * 100)
    res = h.request("s", Op.DIRECTORY, "/dir|")
    assert (res.reply.op, res.reply.payload) == (Op.ERROR, b"E2BIG\0")


def test_xsa115_watch_events_need_read_permission() -> None:
    h = Kit()
    home(h, 5)
    home(h, 6)
    h.call("d5", Op.WATCH, z("/", "all"))
    h.call("d5", Op.WATCH, z("@introduceDomain", "intro"))
    assert h.take_events("d5") == [("/", "all"), ("@introduceDomain", "intro")]
    # Another guest's and dom0's private changes are invisible.
    h.write("d6", "secret", "x")
    h.write("s", "/vm/1/name", "x")
    h.call("d6", Op.RM, "secret|")
    h.introduce(7)  # @introduceDomain is n0: privileged watchers only
    assert h.take_events("d5") == []
    # Removal is checked against the node as it was (readable then): seen.
    h.write("d6", "pub", "x")
    h.set_perms("d6", "/local/domain/6/pub", "n6", "r5")
    h.take_events("d5")
    h.call("d6", Op.RM, "pub|")
    assert h.take_events("d5") == [("/local/domain/6/pub", "all")]
    # SET_PERMS taking the grant away is still reported (old permissions count).
    h.write("d6", "pub", "x")
    h.set_perms("d6", "/local/domain/6/pub", "n6", "r5")
    h.take_events("d5")
    h.set_perms("d6", "/local/domain/6/pub", "n6")
    assert h.take_events("d5") == [("/local/domain/6/pub", "all")]
    h.write("d6", "pub", "y")
    assert h.take_events("d5") == []
    # Watch/unwatch ignore the transaction id; IS_DOMAIN_INTRODUCED is privileged.
    assert h.call("d5", Op.WATCH, z("/x", "t"), tx=77) == OK
    assert h.call("d5", Op.IS_DOMAIN_INTRODUCED, "6|") == "EACCES"


def test_xsa115_a_guest_may_remove_children_of_an_over_quota_node() -> None:
    h = Kit()
    home(h, 5)
    h.write("s", "/local/domain/5/big/child")
    h.write("s", "/local/domain/5/big", "x" * 3000)  # dom0 makes it oversized
    assert h.call("d5", Op.RM, "big/child|") == OK
    assert h.call("d5", Op.RM, "big|") == OK


def test_xsa272_every_way_of_creating_is_counted() -> None:
    """The node count of the owner follows WRITE, MKDIR, implicit parents, creations by
    dom0 in the guest's directory, commits and removals."""
    h = Kit()
    home(h, 5)
    count = h.engine.tree.owner_count
    assert count[5] == 1
    h.write("d5", "a/b/c")
    assert count[5] == 4
    h.call("d5", Op.MKDIR, "m|")
    assert count[5] == 5
    h.write("s", "/local/domain/5/x/y")
    assert count[5] == 7
    tx = h.start("d5")
    h.write("d5", "t/u", tx=tx)
    assert count[5] == 7
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == OK
    assert count[5] == 9
    h.call("d5", Op.RM, "a|")
    assert count[5] == 6
    assert h.engine.check() == []


def test_xsa322_and_xsa417_grants_do_not_pass_to_a_reused_domid() -> None:
    """Checked on C 4.17: after RELEASE and a new INTRODUCE of the same domid, old grants
    give nothing; grants written after the new introduction work."""
    h = Kit()
    h.write("s", "/g", "secret")
    h.set_perms("s", "/g", "n0", "r7")
    assert h.call("d7", Op.READ, "/g|") == b"secret"
    assert h.call("s", Op.RELEASE, "7|") == OK
    h.introduce(7)  # a new domain reusing the id
    assert h.call("d7_new", Op.READ, "/g|") == "EACCES"
    h.set_perms("s", "/g", "n0", "r7")
    assert h.call("d7_new", Op.READ, "/g|") == b"secret"


def test_xsa322_grants_written_before_introduce_are_honoured() -> None:
    """The toolstack writes a guest's nodes (with grants naming it) before INTRODUCE.
    C records the domain when the grant is written (domain_alloc_permrefs), so the grant
    is valid once the domain connects, whatever changed in between (checked on 4.17)."""
    h = Kit()
    h.write("s", "/vm/uuid/name", "guest")
    h.set_perms("s", "/vm/uuid", "n0", "r7")
    h.set_perms("s", "/vm/uuid/name", "n0", "r7")
    h.write("s", "/unrelated", "x")  # the store moves on before the domain appears
    h.introduce(7)
    assert h.call("d7", Op.READ, "/vm/uuid/name|") == b"guest"
    assert h.call("d7", Op.DIRECTORY, "/vm/uuid|") == b"name\0"


def test_xsa322_node_permissions_quota() -> None:
    h = Kit()
    home(h, 5)
    perms = [f"r{i}" for i in range(10, 16)]
    assert h.call("d5", Op.SET_PERMS, z("/local/domain/5", "n5", *perms[:4])) == OK
    assert h.call("d5", Op.SET_PERMS, z("/local/domain/5", "n5", *perms[:5])) == "ENOSPC"


def test_xsa323_path_length_is_checked_on_the_canonical_path() -> None:
    h = Kit()
    home(h, 5)
    rel = "/".join(["x" * 200] * 10) + "/" + "y" * 37  # 2047 characters
    assert len(rel) == 2047
    for path in (rel, "/local/domain/5/" + rel):
        assert h.call("d5", Op.WRITE, path + "z|v") == OK  # 2048: fine
        assert h.call("d5", Op.WRITE, path + "zz|v") == "EINVAL"  # 2049
    # Relative and absolute spellings name the same node.
    assert h.call("d5", Op.READ, "/local/domain/5/" + rel + "z|") == b"v"


def test_xsa324_oversized_watch_event_is_dropped() -> None:
    """A huge token makes an event longer than 4096: dropped, the watch stays."""
    h = Kit()
    token = "t" * (4096 - len("/wp") - 2)  # the WATCH payload is exactly 4096 bytes
    res = h.request("w", Op.WATCH, z("/wp", token))
    assert res.reply.payload == OK
    assert [len(m.payload) for m in res.after] == [4096]  # the initial event fits exactly
    h.take_events("w")
    h.write("s", "/wp/x")  # "/wp/x" + token + 2 NULs = 4098 bytes: dropped
    assert h.take_events("w") == []
    h.write("s", "/wp")
    assert h.take_events("w") == [("/wp", token)]


def test_xsa326_events_to_a_guest_that_does_not_read_are_bounded() -> None:
    h = Kit(Engine(event_queue_max=2000))
    home(h, 5)
    guest = h.conn("d5")
    admin = h.conn("s")
    watcher = h.conn("w")
    for name in ("d5", "w"):
        h.call(name, Op.WATCH, z("/local/domain/5", "t"))
    guest.take_output()
    watcher.take_output()
    for i in range(300):  # nobody reads: drive the engine directly
        h.engine.feed(admin, encode(Op.WRITE, i, 0, b"/local/domain/5/n%d\0" % i))
        admin.take_output()
    assert guest.out_bytes <= 2000 + 100
    assert guest.events_dropped > 0
    assert len(watcher.out) == 300  # a privileged socket is not dropped here


def test_xsa326_a_transaction_touching_too_many_nodes_fails() -> None:
    h = Kit()
    home(h, 5)
    tx = h.start("d5")
    results = [h.call("d5", Op.WRITE, f"n{i}|", tx=tx) for i in range(1100)]
    assert "ENOSPC" in results
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == "ENOMEM"
    assert h.call("d5", Op.DIRECTORY, "/local/domain/5|") == b""


def test_xsa330_reset_watches_really_frees_the_watches() -> None:
    h = Kit()
    home(h, 5)
    for _ in range(5):
        for i in range(129):
            assert h.call("d5", Op.WATCH, z(f"/w{i}", "t")) == OK
        assert h.engine.watches.count == 129
        assert h.call("d5", Op.WATCH, z("/one-too-many", "t")) == "E2BIG"
        assert h.call("d5", Op.RESET_WATCHES, "") == OK
        assert h.engine.watches.count == 0
        assert h.engine.watches.by_path == {}


def test_xsa352_only_dom0_changes_owners() -> None:
    h = Kit()
    home(h, 5)
    h.write("d5", "mine")
    for owner in ("n0", "n6", "b32757"):
        assert h.call("d5", Op.SET_PERMS, z("mine", owner)) == "EPERM"
    assert h.call("d5", Op.GET_PERMS, "mine|") == b"n5\0"
    assert h.engine.tree.owner_count[5] == 2


def test_xsa353_the_root_is_permission_checked() -> None:
    h = Kit()
    h.write("s", "/a")
    cases: list[tuple[int, bytes | str]] = [
        (Op.SET_PERMS, z("/", "b5")),
        (Op.WRITE, "/|x"),
        (Op.MKDIR, "/|"),
        (Op.DIRECTORY, "/|"),
        (Op.GET_PERMS, "/|"),
        (Op.READ, "/|"),
        (Op.DIRECTORY_PART, "/|0|"),
    ]
    for op, payload in cases:
        assert h.call("d5", op, payload) == "EACCES", Op(op).name
    assert h.call("d5", Op.RM, "/|") in ("EACCES", "EINVAL")  # see test_access
    assert h.call("s", Op.GET_PERMS, "/|") == b"n0\0"
    assert h.call("s", Op.DIRECTORY, "/|") == b"tool\0a\0"


def test_xsa414_and_xsa415_failed_creations_leave_nothing_behind() -> None:
    h = Kit()
    home(h, 5)
    before = dict(h.engine.tree.owner_count)
    # node-size refuses the last node of a chain: no implicit parent may remain.
    assert h.call("d5", Op.WRITE, "x/y/z|" + "v" * 3000) == "ENOSPC"
    assert h.call("d5", Op.READ, "x|") == "ENOENT"
    # The same inside a transaction: the commit fails, nothing is applied.
    tx = h.start("d5")
    h.write("d5", "ok", tx=tx)
    assert h.call("d5", Op.WRITE, "x/y/z|" + "v" * 3000, tx=tx) == "ENOSPC"
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == "ENOMEM"
    assert h.call("d5", Op.DIRECTORY, "/local/domain/5|") == b""
    assert dict(h.engine.tree.owner_count) == before
    assert h.engine.check() == []


def test_xsa418_deep_trees_without_recursion() -> None:
    """A path of more than 1000 levels is created, watched, read in and out of
    transactions, checked and removed with a Python stack far smaller than its depth.
    (dom0 builds it: 1024 nodes are more than a guest's node quota.)"""
    h = Kit()
    home(h, 5)
    rel = "/".join(["a"] * 1024)  # 2047 characters: within path-max
    deep = "/local/domain/5/" + rel
    assert deep.count("/") == 1027
    h.call("w", Op.WATCH, z("/", "root"))
    h.call("w", Op.WATCH, z(deep, "deep"))
    h.take_events("w")
    with shallow_stack():
        assert h.call("s", Op.WRITE, deep + "|v") == OK
        assert h.call("d5", Op.READ, rel + "|") == b"v"
        assert sorted(h.take_events("w")) == [(deep, "deep"), (deep, "root")]
        assert h.engine.tree.owner_count[5] == 1025  # dom0 made them in 5's directory
        assert h.call("d5", Op.GET_PERMS, rel + "|") == b"n5\0"
        assert h.engine.check() == []
        tx = h.start("s")
        assert h.call("s", Op.READ, deep + "|", tx=tx) == b"v"
        assert h.call("s", Op.RM, "/local/domain/5/a|", tx=tx) == OK
        assert h.call("s", Op.READ, deep + "|", tx=tx) == "ENOENT"
        assert h.call("s", Op.WRITE, deep + "|again", tx=tx) == OK
        assert h.call("s", Op.TRANSACTION_END, "T|", tx=tx) == OK
        assert h.call("d5", Op.READ, rel + "|") == b"again"
        assert h.engine.check() == []
        h.take_events("w")
        assert h.call("d5", Op.RM, "a|") == OK  # the guest removes 1024 levels at once
        got = h.take_events("w")
        assert got[0] == (deep, "deep") and got[-1] == ("/local/domain/5/a", "root")
        assert h.engine.tree.owner_count[5] == 1
        assert h.engine.check() == []


def test_xsa418_deep_tree_of_a_dying_domain() -> None:
    h = Kit()
    h.introduce(5)
    home(h, 5)
    deep = "/local/domain/5/" + "/".join(["b"] * 1024)
    with shallow_stack():
        assert h.call("s", Op.WRITE, deep + "|v") == OK
        assert h.call("s", Op.RELEASE, "5|") == OK
        assert h.call("s", Op.READ, "/local/domain/5|") == "ENOENT"
        assert 5 not in h.engine.tree.owner_count
        assert h.engine.check() == []


def test_xsa419_nodes_of_a_dead_domain_are_deleted_not_reowned() -> None:
    h = Kit()
    home(h, 7)
    h.write("s", "/shared")
    h.set_perms("s", "/shared", "n0", "w7")
    h.write("d7", "/shared/mine/deeper", "x")  # outside its home, owned by 7
    h.write("s", "/local/domain/7/device/vif", "1")  # dom0 made, owned by 7
    h.call("w", Op.WATCH, z("/shared", "sh"))
    h.take_events("w")
    assert h.call("s", Op.RELEASE, "7|") == OK
    assert h.call("s", Op.READ, "/shared/mine|") == "ENOENT"
    assert h.call("s", Op.READ, "/local/domain/7|") == "ENOENT"
    # 4.22 strips its grants everywhere (C 4.17 keeps them, ignored by generation).
    assert h.call("s", Op.GET_PERMS, "/shared|") == b"n0\0"
    assert ("/shared/mine", "sh") in h.take_events("w")  # C fires watches here
    assert 7 not in h.engine.tree.owner_count
    assert h.engine.check() == []


def test_xsa421_create_and_delete_in_one_transaction() -> None:
    h = Kit()
    home(h, 5)
    tx = h.start("d5")
    h.write("d5", "x/y", tx=tx)
    assert h.call("d5", Op.RM, "x|", tx=tx) == OK
    h.write("d5", "x", tx=tx)
    assert h.call("d5", Op.RM, "x|", tx=tx) == OK
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == OK
    assert h.engine.tree.owner_count[5] == 1
    assert h.call("d5", Op.DIRECTORY, "/local/domain/5|") == b""
    assert h.engine.check() == []


def test_xsa425_release_of_a_busy_domain() -> None:
    h = Kit()
    home(h, 5)
    h.call("d5", Op.WATCH, z("/", "t"))
    tx = h.start("d5")
    h.write("d5", "x", tx=tx)
    assert h.call("s", Op.RELEASE, "5|") == OK
    assert h.call("s", Op.RELEASE, "5|") == "ENOENT"
    assert h.conns["d5"].closed
    assert h.engine.watches.count == 0
    h.write("s", "/after")
    assert h.engine.check() == []


def test_xsa481_local_domain_with_a_trailing_slash() -> None:
    h = Kit()
    for op in (Op.READ, Op.WRITE, Op.MKDIR, Op.RM, Op.DIRECTORY, Op.GET_PERMS):
        assert h.call("s", op, "/local/domain/|") == "EINVAL"


def test_xsa483_node_counts_do_not_survive_a_domain() -> None:
    h = Kit()
    home(h, 7)
    for i in range(50):
        h.write("d7", f"n{i}")
    assert h.engine.tree.owner_count[7] == 51
    assert h.call("s", Op.RELEASE, "7|") == OK
    assert 7 not in h.engine.tree.owner_count
    h.introduce(7)
    home(h, 7)
    assert h.engine.tree.owner_count[7] == 1


def test_xsa484_reset_watches_inside_a_transaction() -> None:
    h = Kit()
    tx = h.start("s")
    h.write("s", "/x", tx=tx)
    assert h.call("s", Op.RESET_WATCHES, "", tx=tx) == OK
    assert h.call("s", Op.TRANSACTION_END, "T|", tx=tx) == "ENOENT"
    assert h.call("s", Op.TRANSACTION_END, "F|", tx=tx) == "ENOENT"
    assert h.call("s", Op.READ, "/x|") == "ENOENT"
    assert h.start("s") == tx + 1
