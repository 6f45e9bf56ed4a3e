"""The compact store (issue 10): leaves share one empty child list, equal child names and
permission lists share one object, the interning caches stay bounded, and none of it
changes what the tree holds or what a transaction sees (copy on write)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.protocol.paths import parent_of
from pyxenstored.protocol.perms import NONE, READ, Perms
from pyxenstored.store.node import NO_CHILDREN, Node
from pyxenstored.store.tree import INTERN_MAX, Tree

ROOT: Perms = ((NONE, 0),)


def test_leaves_share_the_empty_child_list_and_it_refuses_children() -> None:
    tree = Tree(ROOT)
    tree.create("/a", b"x", ROOT)
    tree.create("/b", b"y", ROOT)
    assert tree.nodes["/a"].children is NO_CHILDREN is tree.nodes["/b"].children
    with pytest.raises(TypeError):
        NO_CHILDREN["c"] = None
    with pytest.raises(TypeError):
        NO_CHILDREN.setdefault("c", None)
    with pytest.raises(TypeError):
        NO_CHILDREN.update({"c": None})
    alias = NO_CHILDREN
    with pytest.raises(TypeError):
        alias |= {"c": None}
    assert not NO_CHILDREN
    assert NO_CHILDREN.pop("c", None) is None  # removing what is not there stays harmless


def test_first_child_gets_a_dict_and_the_last_one_gives_it_back() -> None:
    tree = Tree(ROOT)
    tree.create("/a", b"", ROOT)
    tree.create("/a/b", b"", ROOT)
    tree.create("/a/c", b"", ROOT)
    a = tree.nodes["/a"]
    assert a.children is not NO_CHILDREN and list(a.children) == ["b", "c"]
    assert a.listing() == b"b\0c\0"
    tree.remove("/a/b")
    assert list(a.children) == ["c"]
    tree.remove("/a/c")
    assert a.children is NO_CHILDREN and a.listing() == b""
    tree.create("/a/d", b"", ROOT)
    assert list(a.children) == ["d"] and not NO_CHILDREN


def test_a_copy_has_its_own_children_but_leaves_keep_sharing() -> None:
    leaf = Node(b"v", ROOT)
    assert leaf.copy().children is NO_CHILDREN
    parent = Node(b"", ROOT, {"x": None})
    twin = parent.copy()
    twin.add_child("y")
    assert list(parent.children) == ["x"] and list(twin.children) == ["x", "y"]
    # A node built with an empty dict holds NO_CHILDREN (a snapshot restore does this).
    assert Node(b"", ROOT, {}).children is NO_CHILDREN


def test_a_shared_leaf_gets_its_first_child_on_a_copy() -> None:
    """A transaction captured the leaf: creating under it leaves the captured node as
    it was (copy on write), and NO_CHILDREN is still empty."""
    tree = Tree(ROOT)
    tree.create("/a", b"", ROOT)
    captured = tree.nodes["/a"]
    captured.share()
    tree.create("/a/b", b"", ROOT)
    assert captured.children is NO_CHILDREN and not NO_CHILDREN
    assert list(tree.nodes["/a"].children) == ["b"] and tree.nodes["/a"] is not captured


def test_equal_names_and_permissions_share_one_object() -> None:
    tree = Tree(ROOT)
    owner: Perms = ((NONE, 5), (READ, 6))
    for d in ("/d1", "/d2"):
        tree.create(d, b"", ROOT)
        # Built afresh for every call, as a request's parser does.
        tree.create(d + "/state", b"4", tuple(list(owner)))
        tree.set_perms(d, tuple(list(owner)))
    names = [next(iter(tree.nodes[d].children)) for d in ("/d1", "/d2")]
    assert names == ["state", "state"] and names[0] is names[1]
    assert tree.nodes["/d1/state"].perms is tree.nodes["/d2/state"].perms
    assert tree.nodes["/d1"].perms is tree.nodes["/d2"].perms == owner


def test_interning_caches_are_bounded() -> None:
    tree = Tree(ROOT)
    tree.create("/many", b"", ROOT)
    for i in range(INTERN_MAX + 10):
        tree.create(f"/many/n{i}", b"", ((NONE, 0), (READ, i % 60000)))
    assert len(tree._names) <= INTERN_MAX and len(tree._perms) <= INTERN_MAX
    assert len(tree.nodes["/many"].children) == INTERN_MAX + 10
    # Names learnt after the cache started again are shared as before.
    tree.create("/other", b"", ROOT)
    tree.create("/other/n5", b"", ROOT)
    tree.create("/many/again", b"", ROOT)
    tree.create("/other/again", b"", ROOT)
    assert list(tree.nodes["/many"].children)[-1] is list(tree.nodes["/other"].children)[-1]


paths = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(
    lambda p: "/" + "/".join(p)
)
PERMS: list[Perms] = [((NONE, 0),), ((NONE, 5),), ((NONE, 5), (READ, 6))]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["create", "remove", "perms"]), paths,
                          st.sampled_from(PERMS)), max_size=30))  # fmt: skip
def test_every_empty_child_list_in_the_tree_is_the_shared_one(
    ops: list[tuple[str, str, Perms]],
) -> None:
    tree = Tree(ROOT)
    for kind, path, perms in ops:
        if kind == "create" and path not in tree.nodes:
            missing = []
            p = path
            while p not in tree.nodes:
                missing.append(p)
                p = parent_of(p)
            for p in reversed(missing):
                tree.create(p, b"", tuple(list(perms)))
        elif kind == "remove" and path in tree.nodes:
            tree.remove(path)
        elif kind == "perms" and path in tree.nodes:
            tree.set_perms(path, tuple(list(perms)))
    assert not NO_CHILDREN
    by_value: dict[Perms, Perms] = {}
    for path, node in tree.nodes.items():
        if not node.children:
            assert node.children is NO_CHILDREN, path
        if path[:1] == "/" and path != "/":
            # every permission list came in as a fresh tuple: equal ones are one object
            assert by_value.setdefault(node.perms, node.perms) is node.perms, path
    for domid, owned in tree.owned.items():
        assert set(owned) == {p for p, n in tree.nodes.items() if n.owner == domid}
