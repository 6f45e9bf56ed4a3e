"""Permissions: ENOENT versus EACCES at the nearest ancestor, RM and MKDIR rules, owner
inheritance, SET_PERMS (xenstore-protocol.md §3, §12.3-12.5).

Every row was observed on C xenstored 4.17 with guests on rings (the simulated Xen).
"""

from __future__ import annotations

import pytest
from kit.engine import OK, Kit, z
from kit.tables import run, run_table

from pyxenstored.core.caller import Caller
from pyxenstored.core.domains import NoHypervisor
from pyxenstored.core.engine import Engine
from pyxenstored.protocol.wire import Op

HOMES = [
    ("s", 0, Op.WRITE, "/local/domain/5|", OK),
    ("s", 0, Op.SET_PERMS, z("/local/domain/5", "n5"), OK),
    ("s", 0, Op.WRITE, "/local/domain/6|", OK),
    ("s", 0, Op.SET_PERMS, z("/local/domain/6", "n6"), OK),
]

NEAREST_ANCESTOR = [
    *HOMES,
    # A missing node: ENOENT only with the requested right on the nearest existing
    # ancestor, else EACCES, so a guest cannot probe what it may not see.
    ("d5", 0, Op.READ, "/local/domain/0/foo|", "EACCES"),
    ("d5", 0, Op.READ, "/local/domain/6/foo|", "EACCES"),
    ("d5", 0, Op.READ, "/local/domain/5/foo|", "ENOENT"),
    ("d5", 0, Op.READ, "/local/domain/5/foo/bar|", "ENOENT"),
    ("d5", 0, Op.READ, "foo/bar|", "ENOENT"),
    ("d5", 0, Op.READ, "/nope/x/y|", "EACCES"),
    ("d5", 0, Op.DIRECTORY, "/local/domain/6/x|", "EACCES"),
    ("d5", 0, Op.GET_PERMS, "/local/domain/6/x|", "EACCES"),
    # An existing node without the right: EACCES.
    ("d5", 0, Op.DIRECTORY, "/|", "EACCES"),
    ("d5", 0, Op.GET_PERMS, "/|", "EACCES"),
    ("d5", 0, Op.READ, "/tool|", "EACCES"),
    ("d5", 0, Op.DIRECTORY, "/local/domain/5|", b""),
    ("d5", 0, Op.GET_PERMS, "/local/domain/5|", b"n5\0"),
    # Privileged callers always learn the truth.
    ("s", 0, Op.READ, "/nope/x/y|", "ENOENT"),
    # A read grant lets a guest see that something is missing...
    ("s", 0, Op.WRITE, "/local/domain/5/shared|v", OK),
    ("s", 0, Op.SET_PERMS, z("/local/domain/5/shared", "n5", "r6"), OK),
    ("d6", 0, Op.READ, "/local/domain/5/shared|", b"v"),
    ("d6", 0, Op.READ, "/local/domain/5/shared/nope|", "ENOENT"),
    ("d6", 0, Op.DIRECTORY, "/local/domain/5/shared|", b""),
    # ...but writing needs the write right on the nearest ancestor.
    ("d6", 0, Op.WRITE, "/local/domain/5/shared|x", "EACCES"),
    ("d6", 0, Op.WRITE, "/local/domain/5/shared/sub|x", "EACCES"),
    ("d6", 0, Op.MKDIR, "/local/domain/5/shared/sub|", "EACCES"),
    ("d6", 0, Op.RM, "/local/domain/5/shared/nope|", "EACCES"),
    ("d6", 0, Op.RM, "/local/domain/5/nope|", "EACCES"),
    ("d6", 0, Op.RM, "/local/domain/5/nope/x|", "EACCES"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/5/shared/nope", "n6"), "EACCES"),
    # A write-only grant: missing children are EACCES to READ but fine to RM.
    ("s", 0, Op.SET_PERMS, z("/local/domain/5/shared", "n5", "w6"), OK),
    ("d6", 0, Op.READ, "/local/domain/5/shared|", "EACCES"),
    ("d6", 0, Op.READ, "/local/domain/5/shared/nope|", "EACCES"),
    ("d6", 0, Op.RM, "/local/domain/5/shared/nope|", OK),
    ("d6", 0, Op.RM, "/local/domain/5/shared/nope/deeper|", "ENOENT"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6/nonexist", "n6"), "ENOENT"),
    ("d6", 0, Op.SET_PERMS, z("/nonexist", "n6"), "EACCES"),
]


def test_enoent_or_eacces_at_the_nearest_ancestor() -> None:
    run_table(NEAREST_ANCESTOR)


MKDIR_AND_RM = [
    *HOMES,
    ("s", 0, Op.WRITE, "/local/domain/5/shared|v", OK),
    ("s", 0, Op.SET_PERMS, z("/local/domain/5/shared", "n5", "r6"), OK),
    # MKDIR of an existing node: OK if writable (and no event), EACCES if not.
    ("d6", 0, Op.MKDIR, "/local/domain/5/shared|", "EACCES"),
    ("d5", 0, Op.MKDIR, "/local/domain/5/shared|", OK),
    ("d5", 0, Op.READ, "/local/domain/5/shared|", b"v"),
    # RM: write on the node itself; a missing node is OK when its parent exists.
    ("d6", 0, Op.RM, "/local/domain/5/shared|", "EACCES"),
    ("d5", 0, Op.RM, "nope|", OK),
    ("d5", 0, Op.RM, "nope/x|", "ENOENT"),
    ("d5", 0, Op.WRITE, "a/b/c|v", OK),
    ("d5", 0, Op.RM, "a|", OK),
    ("d5", 0, Op.READ, "a/b/c|", "ENOENT"),
    ("d5", 0, Op.READ, "a|", "ENOENT"),
    # A guest may remove its own home; then it cannot even see it is gone.
    ("d6", 0, Op.RM, "/local/domain/6|", OK),
    ("d6", 0, Op.READ, "/local/domain/6|", "EACCES"),
    ("d6", 0, Op.WRITE, "/local/domain/6|", "EACCES"),
]


def test_mkdir_and_rm_rules() -> None:
    run_table(MKDIR_AND_RM)


def test_rm_root_by_a_guest_without_write_is_eacces() -> None:
    run_table([("d6", 0, Op.RM, "/|", "EACCES")])


def test_rm_root_is_einval_for_whoever_may_write_it() -> None:
    run_table(
        [
            ("s", 0, Op.RM, "/|", "EINVAL"),
            ("s", 0, Op.SET_PERMS, z("/", "n0", "b6"), OK),
            ("d6", 0, Op.RM, "/|", "EINVAL"),
        ]
    )


OWNERS = [
    *HOMES,
    # An unprivileged creator becomes the owner of what it creates (implicit parents
    # too); every other entry is copied from the parent.
    ("d5", 0, Op.WRITE, "data/x|v", OK),
    ("d5", 0, Op.GET_PERMS, "data/x|", b"n5\0"),
    ("d5", 0, Op.GET_PERMS, "data|", b"n5\0"),
    ("d5", 0, Op.READ, "data|", b""),
    # dom0 writing into a domU-owned directory creates domU-owned nodes.
    ("s", 0, Op.WRITE, "/local/domain/5/fromdom0/a|v", OK),
    ("s", 0, Op.GET_PERMS, "/local/domain/5/fromdom0/a|", b"n5\0"),
    ("s", 0, Op.GET_PERMS, "/local/domain/5/fromdom0|", b"n5\0"),
    ("s", 0, Op.MKDIR, "/local/domain/5/mk|", OK),
    ("s", 0, Op.GET_PERMS, "/local/domain/5/mk|", b"n5\0"),
    # A guest writing into another domain's directory, through a write grant.
    ("s", 0, Op.WRITE, "/local/domain/5/shared|", OK),
    ("s", 0, Op.SET_PERMS, z("/local/domain/5/shared", "n5", "w6", "r7"), OK),
    ("d6", 0, Op.WRITE, "/local/domain/5/shared/sub|x", OK),
    ("d6", 0, Op.GET_PERMS, "/local/domain/5/shared/sub|", b"n6\0w6\0r7\0"),
    ("d6", 0, Op.WRITE, "/local/domain/5/shared/sub2/deep/er|x", OK),
    ("d6", 0, Op.GET_PERMS, "/local/domain/5/shared/sub2/deep|", b"n6\0w6\0r7\0"),
    ("d6", 0, Op.READ, "/local/domain/5/shared/sub2/deep|", b""),
    ("d6", 0, Op.GET_PERMS, "/local/domain/5/shared|", "EACCES"),
    # The new owner has every right; the old owner only what the entries give it.
    ("d6", 0, Op.SET_PERMS, z("/local/domain/5/shared/sub", "b6"), OK),
    ("d5", 0, Op.READ, "/local/domain/5/shared/sub|", b"x"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/5/shared/sub", "n6"), OK),
    ("d5", 0, Op.READ, "/local/domain/5/shared/sub|", "EACCES"),
    # dom0 creating under a root-owned node keeps the owner.
    ("s", 0, Op.WRITE, "/vm/1/name|x", OK),
    ("s", 0, Op.GET_PERMS, "/vm/1/name|", b"n0\0"),
]


def test_owner_inheritance() -> None:
    run_table(OWNERS)


def test_dom0_creations_in_a_domu_directory_count_against_the_domu() -> None:
    h = Kit()
    run(h, HOMES)
    before = h.engine.tree.owner_count.get(5, 0)
    h.write("s", "/local/domain/5/device/vif/0/state", "1")
    assert h.engine.tree.owner_count.get(5, 0) == before + 4
    assert h.engine.check() == []


SET_PERMS = [
    *HOMES,
    ("d5", 0, Op.WRITE, "data/x|v", OK),
    # Unprivileged owners may not change the owner: EPERM (oxenstored says EACCES).
    ("d5", 0, Op.SET_PERMS, z("data/x", "n6"), "EPERM"),
    ("d5", 0, Op.SET_PERMS, z("data/x", "n0"), "EPERM"),
    ("d5", 0, Op.SET_PERMS, z("data/x", "b5", "r6"), OK),
    ("d5", 0, Op.GET_PERMS, "data/x|", b"b5\0r6\0"),
    # A reader is not an owner.
    ("d6", 0, Op.SET_PERMS, z("/local/domain/5/data/x", "b5"), "EACCES"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "b6"), OK),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "n0"), "EPERM"),
    # strtol base 0: hex, octal, signs, white space; printed back with %i.
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "n6", "r0x5", "w010", "b-1"), OK),
    ("d6", 0, Op.GET_PERMS, "/local/domain/6|", b"n6\0r5\0w8\0b-1\0"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "n 6"), OK),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "n+6"), OK),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "n0x6"), OK),
    ("d6", 0, Op.GET_PERMS, "/local/domain/6|", b"n6\0"),
    # Parsing errors.
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6"), "EINVAL"),
    ("d6", 0, Op.SET_PERMS, b"/local/domain/6\0n6", "EINVAL"),  # unterminated perm ignored
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "x6"), "EINVAL"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "n6x"), "EINVAL"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "n"), "EINVAL"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "N6"), "EINVAL"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", ""), "EINVAL"),
    ("d6", 0, Op.SET_PERMS, z("/local/domain/6", "n6", "r08"), "EINVAL"),
    ("s", 0, Op.SET_PERMS, b"", "EINVAL"),
    ("s", 0, Op.SET_PERMS, z("/local/domain/6"), "EINVAL"),
    ("d6", 0, Op.GET_PERMS, "/local/domain/6|", b"n6\0"),
    # dom0 may give a node away, and take it back.
    ("s", 0, Op.SET_PERMS, z("/local/domain/6", "n5"), OK),
    ("d6", 0, Op.READ, "/local/domain/6|", "EACCES"),
    ("d5", 0, Op.READ, "/local/domain/6|", b""),
    ("s", 0, Op.SET_PERMS, z("/local/domain/6", "r0", "b6"), OK),
    ("d5", 0, Op.READ, "/local/domain/6|", b""),  # everyone else: the owner entry's letter
    ("d5", 0, Op.WRITE, "/local/domain/6|x", "EACCES"),
    ("d6", 0, Op.WRITE, "/local/domain/6|x", OK),
    # The first entry naming the caller decides, even if a later one gives more.
    ("s", 0, Op.SET_PERMS, z("/local/domain/6", "b0", "n5", "b5"), OK),
    ("d5", 0, Op.READ, "/local/domain/6|", "EACCES"),
    ("d7", 0, Op.READ, "/local/domain/6|", b"x"),
]


def test_set_perms() -> None:
    run_table(SET_PERMS)


def test_set_perms_changes_the_owner_count() -> None:
    h = Kit()
    run(h, HOMES)
    tree = h.engine.tree
    five, six = tree.owner_count.get(5, 0), tree.owner_count.get(6, 0)
    h.set_perms("s", "/local/domain/5", "n6")
    assert (tree.owner_count.get(5, 0), tree.owner_count.get(6, 0)) == (five - 1, six + 1)
    assert h.engine.check() == []


class _SomeDomainsExist(NoHypervisor):
    def exists(self, domid: int) -> bool:
        return domid < 10


def test_set_perms_naming_a_missing_owner_is_enoent() -> None:
    h = Kit(Engine(backend=_SomeDomainsExist()))
    h.write("s", "/x")
    assert h.call("s", Op.SET_PERMS, z("/x", "n12")) == "ENOENT"
    # Grants for missing domains are kept (and ignored).
    assert h.call("s", Op.SET_PERMS, z("/x", "n5", "r12")) == OK
    assert h.call("s", Op.GET_PERMS, "/x|") == b"n5\0r12\0"


def test_target_acts_as_its_domain() -> None:
    """SET_TARGET (a device model): the caller gets the target's rights."""
    h = Kit()
    run(h, HOMES)
    h.write("s", "/local/domain/6/granted", "g")
    h.set_perms("s", "/local/domain/6/granted", "n6", "r5")
    h.introduce(7)
    h.add("dm", h.engine.connect(Caller(7, False, target=5), "ring"))
    run(
        h,
        [
            ("dm", 0, Op.WRITE, "/local/domain/5/x|v", OK),  # owned by its target
            ("dm", 0, Op.GET_PERMS, "/local/domain/5/x|", b"n7\0"),
            ("dm", 0, Op.READ, "/local/domain/6/granted|", b"g"),  # a grant to its target
            ("dm", 0, Op.WRITE, "/local/domain/6/granted|x", "EACCES"),
            ("dm", 0, Op.READ, "/local/domain/6|", "EACCES"),
        ],
    )


@pytest.mark.parametrize("owner", ["n32752", "n32753", "n65535", "n70000"])
def test_set_perms_to_a_reserved_domid_is_enoent(owner: str) -> None:
    h = Kit()
    h.write("s", "/x")
    assert h.call("s", Op.SET_PERMS, z("/x", owner)) == "ENOENT"
