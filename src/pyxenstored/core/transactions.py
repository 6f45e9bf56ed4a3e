"""Transactions: a private overlay, a log of observations, and commit by validation.

Design note
-----------
Starting a transaction copies nothing. Its :class:`TxnView` answers reads from its own
overlay (nodes it changed) and otherwise from the live tree, and it records, per path,
the live node it looked at (the *base*) and which facets of it the operation depended
on: existence always, and VALUE, PERMS or CHILDREN as the handler asked. Mutating
requests are applied to the overlay and also logged as ``(handler, payload)``.

Commit (:meth:`Transaction.validate` then the engine's replay):

* **coalesce** (default): every observation is checked against the live tree. If the
  live node is the very base object, nothing changed (live nodes a transaction captured
  are copy-on-write, see ``store.node``). Otherwise the observed facets are compared by
  value: a sibling created under a node whose children were never listed, or a value
  rewritten to the same bytes, is no conflict. If all hold, the logged requests are
  replayed against the live tree under a journal; a request that now fails rolls the
  whole commit back. Because every fact a request's outcome depended on was observed,
  replay reproduces the transaction's results, and the commit is equivalent to running
  the transaction alone at its commit point (serialisable).
* **generation**: C xenstored's rule. Any observed node whose generation changed, or that
  appeared or vanished, conflicts; adding a child bumps the parent's generation, so two
  transactions that create different children of one directory conflict.

Worked example: T1 and T2 both create a child of ``/local/domain``. Each observes
``/local/domain`` for EXISTS|PERMS (the create's permission check) and its own new path
as absent. T1 commits; ``/local/domain`` is now a new object with an extra child. At
T2's commit its base differs by identity, but EXISTS and PERMS compare equal, and T2's
new path is still absent: T2 commits too. Under ``generation`` T2 gets EAGAIN.

Reads are repeatable, as in C: once a transaction has looked at a path it keeps seeing
that state (or its own changes), and its commit fails if the state no longer holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol.paths import parent_of
from ..protocol.perms import Perms
from ..store.node import CHILDREN, PERMS, VALUE, Node
from ..store.tree import Tree

__all__ = ["COALESCE", "GENERATION", "Transaction", "TxnView"]

COALESCE = "coalesce"
GENERATION = "generation"
_ALL_FACETS = VALUE | PERMS | CHILDREN
_MISSING: Any = object()


def _facets_equal(a: Node, b: Node, facets: int) -> bool:
    if facets & VALUE and a.value != b.value:
        return False
    if facets & PERMS and a.perms != b.perms:
        return False
    return not (facets & CHILDREN and a.children.keys() != b.children.keys())


class TxnView:
    """The store as one transaction sees it; same interface as :class:`Tree`."""

    live = False

    __slots__ = ("bases", "dirty", "observed", "overlay", "structural", "tree")

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        #: path -> private node, or None when the transaction removed it.
        self.overlay: dict[str, Node | None] = {}
        #: path -> the live node an overlay copy was taken from (None: created here).
        self.bases: dict[str, Node | None] = {}
        #: path -> facets of an overlay node that this transaction changed.
        self.dirty: dict[str, int] = {}
        #: path -> (live node observed or None, facets observed).
        self.observed: dict[str, tuple[Node | None, int]] = {}
        self.structural = False

    # -- observing -------------------------------------------------------------------
    def _hidden(self, path: str) -> bool:
        """True if an ancestor was removed or created by this transaction, so a live
        node at ``path`` that the overlay does not know of is not in this view."""
        overlay = self.overlay
        p = path
        while p != "/":
            p = parent_of(p)
            if p in overlay:
                return overlay[p] is None or self.bases.get(p) is None
        return False

    def get(self, path: str, facets: int = 0) -> Node | None:
        """The node as this transaction sees it, recording what was looked at.

        Reads are repeatable: the first look at a live path fixes the state this
        transaction sees there (the base), and commit checks that state is still true.
        """
        overlay = self.overlay
        if path in overlay:
            node = overlay[path]
            if node is not None:
                base = self.bases[path]
                if base is not None:
                    need = facets & ~self.dirty[path]
                    if need:
                        self._observe(path, base, need)
            return node
        if self.structural and path[:1] == "/" and self._hidden(path):
            return None
        seen = self.observed.get(path)
        if seen is not None:
            base, old = seen
            if facets & ~old:
                self.observed[path] = (base, old | facets)
            return base
        live = self.tree.nodes.get(path)
        if live is not None:
            live.shared = True
        self.observed[path] = (live, facets)
        return live

    def _observe(self, path: str, base: Node, facets: int) -> None:
        seen = self.observed.get(path)
        if seen is None:
            self.observed[path] = (base, facets)
        elif facets & ~seen[1]:
            self.observed[path] = (seen[0], seen[1] | facets)

    # -- changing --------------------------------------------------------------------
    def _mutable(self, path: str, facet: int) -> Node:
        node = self.overlay.get(path, _MISSING)
        if node is _MISSING:
            seen = self.observed.get(path)
            if seen is not None and seen[0] is not None:
                base = seen[0]
            else:
                base = self.tree.nodes[path]
                base.shared = True
                self.observed[path] = (base, 0)
            node = base.copy()
            self.overlay[path] = node
            self.bases[path] = base
            self.dirty[path] = facet
        else:
            self.dirty[path] |= facet
        assert node is not None
        return node  # type: ignore[no-any-return]

    def set_value(self, path: str, value: bytes) -> None:
        self._mutable(path, VALUE).value = value

    def set_perms(self, path: str, perms: Perms) -> None:
        self._mutable(path, PERMS).perms = perms

    def create(self, path: str, value: bytes, perms: Perms) -> None:
        parent = self._mutable(parent_of(path), CHILDREN)
        parent.children[path[path.rfind("/") + 1 :]] = None
        self.overlay[path] = Node(value, perms)
        self.bases[path] = None
        self.dirty[path] = _ALL_FACETS
        self.structural = True

    def remove(self, path: str) -> list[tuple[str, Node]]:
        order: list[tuple[str, Node]] = []
        stack = [path]
        overlay = self.overlay
        nodes = self.tree.nodes
        while stack:
            p = stack.pop()
            node = overlay[p] if p in overlay else nodes[p]
            if node is None:
                continue
            order.append((p, node))
            prefix = p + "/"
            stack.extend(prefix + name for name in node.children)
        for p, _ in order:
            overlay[p] = None
            self.bases.pop(p, None)
            self.dirty.pop(p, None)
        parent = self._mutable(parent_of(path), CHILDREN)
        del parent.children[path[path.rfind("/") + 1 :]]
        self.structural = True
        order.reverse()
        return order

    @property
    def touched(self) -> int:
        """Distinct paths observed or changed: what the transaction-nodes limit counts."""
        return len(self.observed.keys() | self.overlay.keys())


Replay = Callable[[], None]


class Transaction:
    """One open transaction of one connection."""

    __slots__ = ("creates", "id", "ops", "start_changes", "view")

    def __init__(self, txid: int, tree: Tree) -> None:
        self.id = txid
        self.view = TxnView(tree)
        self.start_changes = tree.changes
        #: (handler, payload) of every mutating request that succeeded, in order.
        self.ops: list[tuple[Any, bytes]] = []
        #: nodes created minus nodes removed, per owner: for the node quota.
        self.creates: dict[int, int] = {}

    def failures(self, mode: str) -> list[str]:
        """The observed paths whose observation no longer holds (for blame)."""
        nodes = self.view.tree.nodes
        failed = []
        for path, (base, facets) in self.view.observed.items():
            live = nodes.get(path)
            if live is base:
                continue
            if live is None or base is None:
                failed.append(path)
            elif mode == GENERATION:
                if live.gen != base.gen:
                    failed.append(path)
            elif not _facets_equal(live, base, facets):
                failed.append(path)
        return failed

    def validate(self, mode: str) -> bool:
        """True if every observation still holds in the live tree (see module note)."""
        view = self.view
        tree = view.tree
        if tree.changes == self.start_changes:
            return True
        nodes = tree.nodes
        if mode == GENERATION:
            for path, (base, _) in view.observed.items():
                live = nodes.get(path)
                if live is not base and (live is None or base is None or live.gen != base.gen):
                    return False
            return True
        for path, (base, facets) in view.observed.items():
            live = nodes.get(path)
            if live is base:
                continue
            if live is None or base is None or not _facets_equal(live, base, facets):
                return False
        return True
