"""The compact store (issue 10): leaves share one empty child list, small child lists are
tuples, wide ones lists and very wide ones dicts, a child list holds its children's
paths as the very key objects of the tree's ``nodes`` (no name strings),
equal permission lists share one object, the interning cache stays bounded, and none of
it changes what the tree holds, lists or counts, or what a transaction sees (copy on
write)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.protocol.paths import parent_of
from pyxenstored.protocol.perms import NONE, READ, Perms
from pyxenstored.store import node as node_module
from pyxenstored.store.node import (
    LISTING_CACHED_MAX,
    LISTINGS_MAX,
    NO_CHILDREN,
    SMALL_CHILDREN,
    WIDE_CHILDREN,
    Node,
)
from pyxenstored.store.tree import INTERN_MAX, VALUE_INTERN_MAX, Tree

ROOT: Perms = ((NONE, 0),)


def test_leaves_share_the_empty_child_list_and_it_cannot_change() -> None:
    tree = Tree(ROOT)
    tree.create("/a", b"x", ROOT)
    tree.create("/b", b"y", ROOT)
    assert tree.nodes["/a"].children is NO_CHILDREN is tree.nodes["/b"].children
    assert NO_CHILDREN == () and isinstance(NO_CHILDREN, tuple)
    tree.nodes["/a"].remove_child("/a/c")  # removing what is not there stays harmless
    assert tree.nodes["/a"].children is NO_CHILDREN


def test_a_child_list_is_a_tuple_while_small_a_list_when_wide_a_dict_beyond() -> None:
    tree = Tree(ROOT)
    tree.create("/w", b"", ROOT)
    w = tree.nodes["/w"]
    paths = [f"/w/n{i}" for i in range(WIDE_CHILDREN + 3)]
    for i, path in enumerate(paths):
        tree.create(path, b"", ROOT)
        kind: type = tuple if i < SMALL_CHILDREN else list if i < WIDE_CHILDREN else dict
        assert type(w.children) is kind
        if i in (0, SMALL_CHILDREN - 1, SMALL_CHILDREN, WIDE_CHILDREN - 1, WIDE_CHILDREN):
            assert list(w.children) == paths[: i + 1]
    assert list(w.children) == paths
    tree.remove(paths[5])
    del paths[5]
    assert list(w.children) == paths and w.names() == [p[3:] for p in paths]
    for path in paths:
        tree.remove(path)
    assert w.children is NO_CHILDREN
    # Removing from a list: order kept, an absent child harmless, the last one gives the
    # empty tuple back.
    for path in paths[: SMALL_CHILDREN + 2]:
        tree.create(path, b"", ROOT)
    assert isinstance(w.children, list)
    w.remove_child("/w/absent")
    tree.remove(paths[1])
    assert list(w.children) == [paths[0], *paths[2 : SMALL_CHILDREN + 2]]
    for path in [paths[0], *paths[2 : SMALL_CHILDREN + 2]]:
        tree.remove(path)
    assert w.children is NO_CHILDREN
    # The same through a transaction's copies: a tuple is shared, a list or dict copied.
    small = Node(b"", ROOT, ("/s/a", "/s/b"))
    assert small.copy().children is small.children
    for wide in (Node(b"", ROOT, list(paths)), Node(b"", ROOT, dict.fromkeys(paths))):
        twin = wide.copy()
        twin.remove_child(paths[0])
        twin.add_child("/w/new")
        assert list(wide.children) == paths and list(twin.children) == [*paths[1:], "/w/new"]


def test_first_child_makes_a_list_and_the_last_one_gives_it_back() -> None:
    tree = Tree(ROOT)
    tree.create("/a", b"", ROOT)
    tree.create("/a/b", b"", ROOT)
    tree.create("/a/c", b"", ROOT)
    a = tree.nodes["/a"]
    assert a.children is not NO_CHILDREN and list(a.children) == ["/a/b", "/a/c"]
    assert a.listing() == b"b\0c\0" and a.names() == ["b", "c"]
    tree.remove("/a/b")
    assert list(a.children) == ["/a/c"]
    tree.remove("/a/c")
    assert a.children is NO_CHILDREN and a.listing() == b"" and a.names() == []
    tree.create("/a/d", b"", ROOT)
    assert list(a.children) == ["/a/d"] and not NO_CHILDREN


def test_a_copy_has_its_own_children_but_leaves_keep_sharing() -> None:
    leaf = Node(b"v", ROOT)
    assert leaf.copy().children is NO_CHILDREN
    parent = Node(b"", ROOT, {"/p/x": None})
    twin = parent.copy()
    twin.add_child("/p/y")
    assert list(parent.children) == ["/p/x"] and list(twin.children) == ["/p/x", "/p/y"]
    # A node built with an empty list holds NO_CHILDREN (a snapshot restore does this).
    assert Node(b"", ROOT, {}).children is NO_CHILDREN is Node(b"", ROOT, ()).children


def test_a_shared_leaf_gets_its_first_child_on_a_copy() -> None:
    """A transaction captured the leaf: creating under it leaves the captured node as
    it was (copy on write), and NO_CHILDREN is still empty."""
    tree = Tree(ROOT)
    tree.create("/a", b"", ROOT)
    captured = tree.nodes["/a"]
    captured.share()
    tree.create("/a/b", b"", ROOT)
    assert captured.children is NO_CHILDREN and not NO_CHILDREN
    assert list(tree.nodes["/a"].children) == ["/a/b"] and tree.nodes["/a"] is not captured


def test_a_child_list_holds_the_tree_s_own_key_strings() -> None:
    """A child costs its parent a dict entry and no string: the key is the object the
    tree's ``nodes`` dict keys the child by (the path the create was given)."""
    tree = Tree(ROOT)
    tree.create("/d", b"", ROOT)
    path = "".join(["/d/", "state"])  # built at run time, as a request's parser does
    tree.create(path, b"4", ROOT)
    (child,) = tree.nodes["/d"].children
    assert child is path and any(key is path for key in tree.nodes)
    assert tree.nodes["/"].names() == ["d"] and tree.nodes["/"].listing() == b"d\0"


def test_names_listing_and_size_cut_the_parent_path_off() -> None:
    for parent in ("/", "/a", "/a/bb/ccc"):
        prefix = parent.rstrip("/") + "/"
        node = Node(b"12345", ROOT, {prefix + n: None for n in ("x", "yy", "zzz")})
        assert node.names() == ["x", "yy", "zzz"]
        assert node.listing() == b"x\0yy\0zzz\0"
        # header, one permission entry, the value, then each name and its NUL
        assert node.size() == 16 + 8 + 5 + (2 + 3 + 4)
    assert Node(b"", ROOT).size() == 16 + 8


def test_a_remembered_listing_follows_every_change_of_the_child_list() -> None:
    """Listings are remembered by their child paths: the same children in another order
    (removed and created again) or another set of the same size list afresh."""
    tree = Tree(ROOT)
    tree.create("/d", b"", ROOT)
    for name in ("a", "b", "c"):
        tree.create(f"/d/{name}", b"", ROOT)
    d = tree.nodes["/d"]
    assert d.listing() == b"a\0b\0c\0" == d.listing()
    tree.remove("/d/a")
    tree.remove("/d/c")
    tree.create("/d/a", b"", ROOT)
    tree.create("/d/c", b"", ROOT)
    assert d.listing() == b"b\0a\0c\0"
    tree.remove("/d/a")
    tree.create("/d/x", b"", ROOT)
    assert d.listing() == b"b\0c\0x\0"
    # The same names under another parent are another listing's key.
    tree.create("/e", b"", ROOT)
    for name in ("b", "c", "y"):
        tree.create(f"/e/{name}", b"", ROOT)
    assert tree.nodes["/e"].listing() == b"b\0c\0y\0"


def test_remembered_listings_are_bounded() -> None:
    node_module._LISTINGS.clear()
    for i in range(LISTINGS_MAX + 10):
        assert Node(b"", ROOT, {f"/p{i}/c": None}).listing() == b"c\0"
    assert 0 < len(node_module._LISTINGS) <= LISTINGS_MAX
    node_module._LISTINGS.clear()
    wide = Node(b"", ROOT, {f"/w/{i:08}": None for i in range(LISTING_CACHED_MAX // 9 + 1)})
    assert len(wide.listing()) > LISTING_CACHED_MAX and not node_module._LISTINGS


def test_equal_permissions_share_one_object() -> None:
    tree = Tree(ROOT)
    owner: Perms = ((NONE, 5), (READ, 6))
    for d in ("/d1", "/d2"):
        tree.create(d, b"", ROOT)
        # Built afresh for every call, as a request's parser does.
        tree.create(d + "/state", b"4", tuple(list(owner)))
        tree.set_perms(d, tuple(list(owner)))
    assert tree.nodes["/d1/state"].perms is tree.nodes["/d2/state"].perms
    assert tree.nodes["/d1"].perms is tree.nodes["/d2"].perms == owner


def test_equal_short_values_of_new_nodes_share_one_object_long_ones_do_not() -> None:
    tree = Tree(ROOT)
    short, long = b"x86_64-abi", b"v" * (VALUE_INTERN_MAX + 1)

    def fresh(value: bytes) -> bytes:  # an equal, new object, as a request's parser makes
        return bytes(bytearray(value))

    for d in ("/d1", "/d2"):
        tree.create(d, fresh(short), ROOT)
        tree.create(d + "/k", b"", ROOT)
        tree.set_value(d + "/k", fresh(short))
        tree.create(d + "/long", fresh(long), ROOT)
    nodes = tree.nodes
    assert nodes["/d1"].value is nodes["/d2"].value == short
    # A rewrite keeps the bytes it was given (interning every WRITE cost too much).
    assert nodes["/d1/k"].value == nodes["/d2/k"].value == short
    assert nodes["/d1/long"].value == nodes["/d2/long"].value == long
    assert nodes["/d1/long"].value is not nodes["/d2/long"].value
    restored = Tree(ROOT)
    restored.attach("/a", fresh(short), ROOT, 3)
    restored.attach("/b", fresh(short), ROOT, 4)
    assert restored.nodes["/a"].value is restored.nodes["/b"].value


def test_the_interning_caches_are_bounded() -> None:
    tree = Tree(ROOT)
    tree.create("/many", b"", ROOT)
    for i in range(INTERN_MAX + 10):
        tree.create(f"/many/n{i}", b"%d" % (i + 10), ((NONE, 0), (READ, i)))
    assert len(tree._perms) <= INTERN_MAX and len(tree._values) <= INTERN_MAX
    assert len(tree.nodes["/many"].children) == INTERN_MAX + 10
    # Lists learnt after the cache started again are shared as before.
    tree.create("/other", b"", ((NONE, 0), (READ, 1)))
    tree.create("/other/a", b"", ((NONE, 0), (READ, 70000)))
    tree.create("/other/b", b"", ((NONE, 0), (READ, 70000)))
    assert tree.nodes["/other/a"].perms is tree.nodes["/other/b"].perms


paths = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(
    lambda p: "/" + "/".join(p)
)
PERMS: list[Perms] = [((NONE, 0),), ((NONE, 5),), ((NONE, 5), (READ, 6))]


@settings(max_examples=100, deadline=None)
def apply_ops(
    tree: Tree, ops: list[tuple[str, str, Perms]], after_each: Callable[[], None] | None = None
) -> None:
    """Create (with missing parents), remove or re-permission nodes, as drawn."""
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
        if after_each is not None:
            after_each()


@given(st.lists(st.tuples(st.sampled_from(["create", "remove", "perms"]), paths,
                          st.sampled_from(PERMS)), max_size=30))  # fmt: skip
def test_every_empty_child_list_in_the_tree_is_the_shared_one(
    ops: list[tuple[str, str, Perms]],
) -> None:
    tree = Tree(ROOT)
    apply_ops(tree, ops)
    assert not NO_CHILDREN
    by_value: dict[Perms, Perms] = {}
    keys = {id(key) for key in tree.nodes}
    for path, node in tree.nodes.items():
        if not node.children:
            assert node.children is NO_CHILDREN, path
        for child in node.children:
            assert id(child) in keys and parent_of(child) == path, (path, child)
        names = [c.rsplit("/", 1)[1] for c in node.children]
        assert node.names() == names
        assert node.listing() == "".join(n + "\0" for n in names).encode()
        if path[:1] == "/" and path != "/":
            # every permission list came in as a fresh tuple: equal ones are one object
            assert by_value.setdefault(node.perms, node.perms) is node.perms, path
    assert_owned_index_holds_the_tops(tree)


def assert_owned_index_holds_the_tops(tree: Tree) -> None:
    """``owned`` files exactly the tops of what each domain owns (store.tree)."""
    tops: dict[int, set[str]] = {}
    for p, n in tree.nodes.items():
        if p[:1] != "/" or n.owner == tree.root_owner:
            continue
        if p == "/" or tree.nodes[parent_of(p)].owner != n.owner:
            tops.setdefault(n.owner, set()).add(p)
    assert {d: set(paths) for d, paths in tree.owned.items()} == tops


def test_a_rollback_files_again_a_top_its_parent_had_taken_over() -> None:
    """A commit gives /a to domain 5 (so 5's /a/b is no top any more) and removes /a/b;
    the rollback restores /a/b first, under a parent 5 still owns, then /a: /a/b must be
    filed again when /a goes back to its owner, or 5's death would leave it behind."""
    tree = Tree(ROOT)
    tree.create("/a", b"", ROOT)
    tree.create("/a/b", b"", ((NONE, 5),))
    assert list(tree.owned[5]) == ["/a/b"]
    tree.begin_journal()
    tree.set_perms("/a", ((NONE, 5),))
    assert list(tree.owned[5]) == ["/a"]
    tree.remove("/a/b")
    tree.end_journal(rollback=True)
    assert list(tree.owned[5]) == ["/a/b"]
    assert_owned_index_holds_the_tops(tree)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["create", "remove", "perms"]), paths,
                       st.sampled_from(PERMS)), max_size=12),
    st.lists(st.tuples(st.sampled_from(["create", "remove", "perms"]), paths,
                       st.sampled_from(PERMS)), max_size=12),
)  # fmt: skip
def test_the_owned_index_survives_owner_changes_and_rollbacks(
    before: list[tuple[str, str, Perms]], during: list[tuple[str, str, Perms]]
) -> None:
    """Owner changes re-file children as tops, and a rolled-back commit (journal
    replayed backwards, parents and children in any order) leaves the index exact."""
    tree = Tree(ROOT)

    def run(ops: list[tuple[str, str, Perms]]) -> None:
        apply_ops(tree, ops, lambda: assert_owned_index_holds_the_tops(tree))

    run(before)
    saved = {d: dict(paths) for d, paths in tree.owned.items()}
    tree.begin_journal()
    run(during)
    tree.end_journal(rollback=True)
    assert_owned_index_holds_the_tops(tree)
    assert {d: set(p) for d, p in tree.owned.items()} == {d: set(p) for d, p in saved.items()}
