"""The store's invariants under random changes (hypothesis): child lists, per-owner
node counts and bytes, post-order removal, copy-on-write of shared nodes, journal
rollback; and the same through the Engine's requests (Engine.check())."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxenstored.core.caller import Caller
from pyxenstored.core.engine import Engine
from pyxenstored.core.transactions import CONFLICT_MODES, ConflictMode
from pyxenstored.protocol.paths import parent_of
from pyxenstored.protocol.perms import BOTH, NONE, READ, Perms
from pyxenstored.protocol.wire import HEADER, Op, encode
from pyxenstored.store import node as node_module
from pyxenstored.store import tree as tree_module
from pyxenstored.store.node import Node
from pyxenstored.store.tree import Tree, node_bytes

ROOT: Perms = ((NONE, 0),)
NAMES = ["a", "b", "c"]
PERMS: list[Perms] = [
    ((NONE, 0),),
    ((NONE, 5),),
    ((BOTH, 6), (READ, 5)),
    ((READ, 5), (NONE, 6), (BOTH, 0)),
]


@pytest.fixture(autouse=True, scope="module", params=["default tiers", "tiers 1/2"])
def child_list_tiers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test here twice: with the store's child-list tiers, and with a child list
    that is a tuple up to 1 child, a list up to 2 and a dict beyond (NAMES makes at most
    3 children), so that every change crosses the tiers both ways."""
    names = [(node_module, "SMALL_CHILDREN"), (node_module, "WIDE_CHILDREN"),
             (tree_module, "SMALL_CHILDREN")]  # fmt: skip
    saved = [getattr(module, name) for module, name in names]
    if request.param == "tiers 1/2":
        for (module, name), value in zip(names, (1, 2, 1), strict=True):
            setattr(module, name, value)
    yield
    for (module, name), value in zip(names, saved, strict=True):
        setattr(module, name, value)


paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))
values = st.binary(max_size=8)


@dataclass(frozen=True)
class Create:
    path: str
    value: bytes
    perms: Perms


@dataclass(frozen=True)
class SetValue:
    path: str
    value: bytes


@dataclass(frozen=True)
class SetPerms:
    path: str
    perms: Perms


@dataclass(frozen=True)
class Remove:
    path: str


ops = st.lists(
    st.one_of(
        st.builds(Create, paths, values, st.sampled_from(PERMS)),
        st.builds(SetValue, paths, values),
        st.builds(SetPerms, paths, st.sampled_from(PERMS)),
        st.builds(Remove, paths),
    ),
    max_size=30,
)


def apply(tree: Tree, op: object) -> None:
    """Apply ``op`` if it makes sense in the current tree (callers check beforehand)."""
    nodes = tree.nodes
    if isinstance(op, Create):
        # Create missing ancestors first, as create_path does.
        missing = []
        p = op.path
        while p not in nodes:
            missing.append(p)
            p = parent_of(p)
        for p in reversed(missing):
            tree.create(p, op.value if p == op.path else b"", op.perms)
    elif isinstance(op, SetValue):
        if op.path in nodes:
            tree.set_value(op.path, op.value)
    elif isinstance(op, SetPerms):
        if op.path in nodes:
            tree.set_perms(op.path, op.perms)
    elif isinstance(op, Remove) and op.path in nodes:
        removed = tree.remove(op.path)
        check_post_order(op.path, removed)


def check_post_order(path: str, removed: list[tuple[str, Node]]) -> None:
    order = [p for p, _ in removed]
    assert order[-1] == path
    assert len(set(order)) == len(order)
    seen: set[str] = set()
    for p in order:
        assert p == path or p.startswith(path + "/")
        for child in removed[order.index(p)][1].children:
            assert child in seen, "a child must come before its parent"
        seen.add(p)


def check_invariants(tree: Tree) -> None:
    nodes = tree.nodes
    counts: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for path, node in nodes.items():
        if path[:1] != "/":
            continue
        counts[node.owner] = counts.get(node.owner, 0) + 1
        sizes[node.owner] = sizes.get(node.owner, 0) + node_bytes(path, node)
        for child in node.children:
            assert child in nodes, f"missing child {child}"
            assert parent_of(child) == path, f"{child} listed under {path}"
        if path != "/":
            parent = nodes[parent_of(path)]
            assert path in parent.children, f"orphan {path}"
            assert node.gen <= tree.gen
    assert tree.owner_count == counts
    assert tree.owner_bytes == sizes


def snapshot(tree: Tree) -> dict[str, tuple[bytes, Perms, tuple[str, ...], int]]:
    return {p: (n.value, n.perms, tuple(n.children), n.gen) for p, n in tree.nodes.items()}


@settings(max_examples=150, deadline=None)
@given(ops)
def test_random_changes_keep_the_tree_consistent(changes: list[object]) -> None:
    tree = Tree(ROOT)
    model: dict[str, tuple[bytes, Perms]] = {"/": (b"", ROOT)}
    for op in changes:
        gen = tree.gen
        apply(tree, op)
        check_invariants(tree)
        assert tree.gen >= gen
        # A simple model of the paths, values and permissions.
        if isinstance(op, Create):
            p = op.path
            while p not in model:
                model[p] = (op.value if p == op.path else b"", op.perms)
                p = parent_of(p)
        elif isinstance(op, SetValue) and op.path in model:
            model[op.path] = (op.value, model[op.path][1])
        elif isinstance(op, SetPerms) and op.path in model:
            model[op.path] = (model[op.path][0], op.perms)
        elif isinstance(op, Remove) and op.path in model:
            for p in [q for q in model if q == op.path or q.startswith(op.path + "/")]:
                del model[p]
        assert {p: (n.value, n.perms) for p, n in tree.nodes.items()} == model
        # Child lists in creation order (the model is a dict: insertion-ordered).
        kids: dict[str, list[str]] = {p: [] for p in model}
        for p in model:
            if p != "/":
                kids[parent_of(p)].append(p)
        assert {p: list(n.children) for p, n in tree.nodes.items()} == kids


@settings(max_examples=100, deadline=None)
@given(ops, ops)
def test_journal_rollback_restores_exactly(before: list[object], during: list[object]) -> None:
    tree = Tree(ROOT)
    for op in before:
        apply(tree, op)
    saved = snapshot(tree)
    counts, sizes = dict(tree.owner_count), dict(tree.owner_bytes)
    changes = tree.changes
    tree.begin_journal()
    for op in during:
        apply(tree, op)
    moved = tree.changes
    tree.end_journal(rollback=True)
    assert snapshot(tree) == saved
    assert (tree.owner_count, tree.owner_bytes) == (counts, sizes)
    # Transactions compare `changes` to tell "nothing happened": it never goes back.
    assert tree.changes >= moved >= changes
    check_invariants(tree)


@settings(max_examples=100, deadline=None)
@given(ops, ops)
def test_journal_kept_keeps_the_changes(before: list[object], during: list[object]) -> None:
    tree, twin = Tree(ROOT), Tree(ROOT)
    for op in before:
        apply(tree, op)
        apply(twin, op)
    tree.begin_journal()
    for op in during:
        apply(tree, op)
        apply(twin, op)
    tree.end_journal(rollback=False)
    assert tree.journal is None
    assert {p: (n.value, n.perms, tuple(n.children)) for p, n in tree.nodes.items()} == {
        p: (n.value, n.perms, tuple(n.children)) for p, n in twin.nodes.items()
    }


@settings(max_examples=100, deadline=None)
@given(ops, st.sets(paths), ops)
def test_shared_nodes_are_never_changed_in_place(
    before: list[object], shared: set[str], during: list[object]
) -> None:
    """A transaction's captured nodes stay as it saw them (copy on write)."""
    tree = Tree(ROOT)
    for op in before:
        apply(tree, op)
    captured = {}
    for p in [*shared, "/"]:
        node = tree.nodes.get(p)
        if node is not None:
            node.share()
            captured[p] = (node, node.value, node.perms, tuple(node.children), node.gen)
    for op in during:
        apply(tree, op)
    for node, value, perms, children, gen in captured.values():
        assert (node.value, node.perms, tuple(node.children), node.gen) == (
            value,
            perms,
            children,
            gen,
        )
    check_invariants(tree)


def test_changes_stamp_the_node_and_the_parent() -> None:
    tree = Tree(ROOT)
    tree.create("/a", b"", ROOT)
    assert tree.nodes["/a"].gen == tree.nodes["/"].gen == tree.gen
    g = tree.gen
    tree.set_value("/a", b"x")
    assert tree.nodes["/a"].gen == g + 1 and tree.nodes["/"].gen == g
    tree.create("/a/b", b"", ROOT)
    assert tree.nodes["/a"].gen == tree.gen == tree.nodes["/a/b"].gen
    tree.remove("/a/b")
    assert tree.nodes["/a"].gen == tree.gen
    assert list(tree.nodes["/a"].children) == []


# -- the same through the engine ----------------------------------------------------------
REQ_PATHS = ["/local/domain/5/a", "/local/domain/5/a/b", "/local/domain/5/c", "/x", "/x/y",
             "/local/domain/6/a", "a/b", "a"]  # fmt: skip
REQ_PERMS = [b"n5\0", b"n0\0r5\0", b"n6\0w5\0", b"b5\0", b"n5\0r6\0"]
WHO = ["s", "d5", "d6"]

requests = st.lists(
    st.tuples(
        st.sampled_from(WHO),
        st.sampled_from(["write", "mkdir", "rm", "perms", "start", "commit", "abort", "rel"]),
        st.sampled_from(REQ_PATHS),
        st.sampled_from(REQ_PERMS),
        st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.sampled_from(CONFLICT_MODES))
def test_random_requests_keep_engine_check_clean(
    reqs: list[tuple[str, str, str, bytes, bool]], mode: ConflictMode
) -> None:
    engine = Engine(conflicts=mode)
    admin = engine.connect(Caller(0, True), "socket")

    def send(conn: object, op: int, payload: bytes, tx: int = 0) -> tuple[int, bytes]:
        engine.feed(conn, encode(op, 0, tx, payload))  # type: ignore[arg-type]
        out = conn.take_output()  # type: ignore[attr-defined]
        replies = [m for m in out if HEADER.unpack_from(m)[0] != Op.WATCH_EVENT]
        assert len(replies) == 1
        return HEADER.unpack_from(replies[0])[0], replies[0][16:]

    for d in (5, 6):
        send(admin, Op.INTRODUCE, b"%d\0000\0001\0" % d)
        send(admin, Op.WRITE, b"/local/domain/%d\0" % d)
        send(admin, Op.SET_PERMS, b"/local/domain/%d\0n%d\0" % (d, d))
    conns = {
        "s": admin,
        "d5": engine.connect(Caller(5, False), "ring"),
        "d6": engine.connect(Caller(6, False), "ring"),
    }
    for c in conns.values():
        send(c, Op.WATCH, b"/\0t\0")
    txs: dict[str, int] = {}
    for who, what, path, perms, in_tx in reqs:
        conn = conns[who]
        tx = txs.get(who, 0) if in_tx else 0
        p = path.encode()
        if what == "write":
            op, _ = send(conn, Op.WRITE, p + b"\0v", tx)
        elif what == "mkdir":
            op, _ = send(conn, Op.MKDIR, p + b"\0", tx)
        elif what == "rm":
            op, _ = send(conn, Op.RM, p + b"\0", tx)
        elif what == "perms":
            op, _ = send(conn, Op.SET_PERMS, p + b"\0" + perms, tx)
        elif what == "start" and who not in txs:
            op, body = send(conn, Op.TRANSACTION_START, b"\0")
            if op == Op.TRANSACTION_START:
                txs[who] = int(body[:-1])
        elif what in ("commit", "abort") and who in txs:
            op, body = send(conn, Op.TRANSACTION_END, b"T\0" if what == "commit" else b"F\0",
                            txs.pop(who))  # fmt: skip
            assert op == Op.TRANSACTION_END or body in (b"EAGAIN\0", b"ENOSPC\0", b"ENOMEM\0")
        elif what == "rel" and who == "s" and in_tx:
            send(admin, Op.RELEASE, b"6\0")
            send(admin, Op.INTRODUCE, b"6\0000\0001\0")
            conns["d6"] = engine.connect(Caller(6, False), "ring")
            txs.pop("d6", None)
        assert engine.check() == []
        for c in conns.values():
            c.take_output()
    check_invariants(engine.tree)
