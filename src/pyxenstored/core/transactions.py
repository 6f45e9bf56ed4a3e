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

from typing import TYPE_CHECKING, Any, Final, Literal

from ..protocol.paths import parent_of
from ..protocol.perms import NONE, Perms
from ..store.node import CHILDREN, PERMS, VALUE, Node
from ..store.tree import Tree

if TYPE_CHECKING:
    from .optable import Handler

__all__ = ["COALESCE", "CONFLICT_MODES", "GENERATION", "ConflictMode", "Transaction", "TxnView"]

#: How a commit decides a conflict: ``coalesce`` (only what the transaction observed
#: really changed) or ``generation`` (C's rule: any newer generation on a node it read).
ConflictMode = Literal["coalesce", "generation"]
COALESCE: Final = "coalesce"
GENERATION: Final = "generation"
CONFLICT_MODES: tuple[ConflictMode, ...] = (COALESCE, GENERATION)
_ALL_FACETS = VALUE | PERMS | CHILDREN
_MISSING: Any = object()


def _facets_equal(a: Node, b: Node, facets: int) -> bool:
    """Whether two states of a node agree on the VALUE and PERMS facets. (Child lists
    are compared separately, see ``TxnView.listed``.)"""
    if facets & VALUE and a.value != b.value:
        return False
    return not (facets & PERMS and a.perms != b.perms)


class TxnView:
    """The store as one transaction sees it; same interface as :class:`Tree`."""

    live = False

    __slots__ = (
        "bases",
        "dirty",
        "doomed",
        "implicit_parents",
        "listed",
        "observed",
        "overlay",
        "rebase",
        "tree",
    )

    def __init__(self, tree: Tree, rebase: bool = True) -> None:
        self.tree = tree
        #: move observations to newer live nodes whose observed facets still agree
        #: (coalescing); off for C's generation rule
        self.rebase = rebase
        #: path -> private node, or None when the transaction removed it.
        self.overlay: dict[str, Node | None] = {}
        #: path -> the live node an overlay copy was taken from (None: created here).
        self.bases: dict[str, Node | None] = {}
        #: path -> facets of an overlay node that this transaction changed.
        self.dirty: dict[str, int] = {}
        #: path -> (live node observed or None, facets observed).
        self.observed: dict[str, tuple[Node | None, int]] = {}
        #: path -> (children a listing showed that came from the live tree, in order;
        #: the children this transaction had itself created or removed by then), each
        #: child by its path, as child lists hold them (``store.node``).
        self.listed: dict[str, tuple[list[str], frozenset[str]]] = {}
        #: path -> permissions: absent nodes this transaction created as implicit
        #: parents only (see implicit())
        self.implicit_parents: dict[str, Perms] = {}
        #: Set when the view became inconsistent with itself: the commit must fail.
        self.doomed = False

    # -- observing -------------------------------------------------------------------
    def _hidden(self, path: str) -> bool:
        """True if ``path`` (not in the overlay) is absent from this view.

        The nearest ancestor this transaction holds a copy of decides: a removed or
        newly created ancestor hides every live node below it, and an ancestor copied
        from the live tree shows only the children it listed when it was copied. In the
        latter case that child was absent when the copy was taken, and the view now
        depends on that: it is observed as absent (a later creation conflicts, a
        sibling's does not).
        """
        overlay = self.overlay
        p = path
        while p != "/":
            cut = p.rfind("/")
            child = p
            p = p[:cut] if cut > 0 else "/"
            if p in overlay:
                node = overlay[p]
                if node is None:
                    return True
                if child in node.children:
                    return False
                if self.bases[p] is not None:
                    seen = self.observed.get(child)
                    if seen is None:
                        self.observed[child] = (None, 0)
                    elif seen[0] is not None:
                        # Seen to exist before, gone from the copy now: no single
                        # commit point explains both looks.
                        self.doomed = True
                return True
        return False

    def get(self, path: str, facets: int = 0) -> Node | None:
        node = self._get(path, facets)
        if facets & CHILDREN and node is not None and path not in self.listed:
            self._list(path, node)
        return node

    def _list(self, path: str, node: Node) -> None:
        """Record what a listing of ``path`` depends on: the children it shows that this
        transaction did not create or remove itself, in order."""
        overlay = self.overlay
        bases = self.bases
        decided = frozenset(c for c in node.children if c in overlay and bases.get(c, node) is None)
        if path in overlay:
            # Children removed here no longer show in the copy but were decided here too.
            prefix = path + "/" if path != "/" else "/"
            decided |= {
                p
                for p, n in overlay.items()
                if n is None and p.startswith(prefix) and "/" not in p[len(prefix) :]
            }
        self.listed[path] = ([n for n in node.children if n not in decided], decided)

    def _get(self, path: str, facets: int) -> Node | None:
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
                    # A value or permission list this transaction wrote is its own; a
                    # child list it changed still shows the base's other children.
                    need = facets & ~(self.dirty[path] & ~CHILDREN)
                    if need:
                        self._observe(path, base, need)
            return node
        if overlay and path[:1] == "/" and self._hidden(path):
            return None
        seen = self.observed.get(path)
        if seen is not None:
            base, old = seen
            if facets & ~old:
                base = self._rebase(path, base, old)
                self.observed[path] = (base, old | facets)
            return base
        live = self.tree.nodes.get(path)
        if live is not None:
            live.share()
        self.observed[path] = (live, facets)
        return live

    def _rebase(self, path: str, base: Node | None, facets: int) -> Node | None:
        """Before depending on more facets of a path, move the observation to the live
        node if every facet observed so far is still the same there: the view gets the
        newest state of what it has not looked at yet (so it stays consistent with other
        paths it reads), and nothing it did look at changes."""
        if not self.rebase:
            return base  # C's generation rule: the first look is what is checked
        live = self.tree.nodes.get(path)
        if live is base or live is None or base is None:
            return base
        if not _facets_equal(base, live, facets) or not self._listing_holds(path, live):
            return base
        live.share()
        return live

    def _created_alike(self, path: str, base: Node | None, live: Node | None) -> bool:
        """An implicit parent this transaction saw absent now exists, created by someone
        else exactly as this transaction would have created it: empty, with the same
        permissions. Its replay then finds the parent there, and every reply and
        effect is the same (parallel device setups creating backend/<type>)."""
        if base is not None or live is None:
            return False
        perms = self.implicit_parents.get(path)
        return perms is not None and live.value == b"" and live.perms == perms

    def _listing_holds(self, path: str, live: Node) -> bool:
        """Whether a listing recorded for ``path`` still shows the same live children."""
        seen = self.listed.get(path)
        if seen is None:
            return True
        names, decided = seen
        if decided:
            return [n for n in live.children if n not in decided] == names
        return list(live.children) == names

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
                base = self._rebase(path, seen[0], seen[1])
                assert base is not None
                self.observed[path] = (base, seen[1])
            else:
                live = self.tree.nodes.get(path)
                if seen is not None or live is None:
                    # Seen absent before, or gone from the live tree since the view
                    # showed it: no single commit point explains this view.
                    self.doomed = True
                if live is None:
                    live = Node(b"", ((NONE, 0),))  # a stand-in: this view cannot commit
                live.share()
                base = live
                if seen is None:
                    self.observed[path] = (base, 0)
            node = base.copy()
            self.overlay[path] = node
            self.bases[path] = base
            self.dirty[path] = facet
        else:
            self.dirty[path] |= facet
        assert node is not None
        return node  # type: ignore[no-any-return]

    def implicit(self, path: str, perms: Perms) -> None:
        """``path`` was absent and is created here only as an implicit parent, with
        ``perms``: if another transaction creates it first the same way (empty, same
        permissions), nothing this one saw or did differs (coalescing only)."""
        if self.rebase:
            self.implicit_parents[path] = perms

    def set_value(self, path: str, value: bytes) -> None:
        self._mutable(path, VALUE).value = value

    def set_perms(self, path: str, perms: Perms) -> None:
        self._mutable(path, PERMS).perms = perms

    def create(self, path: str, value: bytes, perms: Perms) -> None:
        parent = self._mutable(parent_of(path), CHILDREN)
        parent.add_child(path)
        self.overlay[path] = Node(value, perms)
        self.bases[path] = None
        self.dirty[path] = _ALL_FACETS

    def remove(self, path: str) -> list[tuple[str, Node]]:
        order: list[tuple[str, Node]] = []
        stack = [path]
        overlay = self.overlay
        observed = self.observed
        nodes = self.tree.nodes
        while stack:
            p = stack.pop()
            if p in overlay:
                node = overlay[p]
            else:
                seen = observed.get(p)
                node = seen[0] if seen is not None else nodes.get(p)
            if node is None:
                continue  # removed here, or gone from the live tree since it was listed
            order.append((p, node))
            stack.extend(node.children)
        for p, _ in order:
            overlay[p] = None
            self.bases.pop(p, None)
            self.dirty.pop(p, None)
        parent = self._mutable(parent_of(path), CHILDREN)
        # The parent's copy may predate the child (seen through an earlier look at the
        # child itself): such a view cannot commit, but must not fail here either.
        parent.remove_child(path)
        order.reverse()
        return order

    @property
    def touched(self) -> int:
        """Distinct paths observed or changed: what the transaction-nodes limit counts."""
        return len(self.observed.keys() | self.overlay.keys())


class Transaction:
    """One open transaction of one connection."""

    __slots__ = ("bytes", "failed", "id", "ops", "start_changes", "view")

    def __init__(self, txid: int, tree: Tree, mode: ConflictMode = COALESCE) -> None:
        self.id = txid
        self.view = TxnView(tree, rebase=mode != GENERATION)
        self.start_changes = tree.changes
        #: (handler, payload) of every mutating request that succeeded, in order.
        self.ops: list[tuple[Handler, bytes]] = []
        #: a request ran into a quota: the commit answers ENOMEM (as C's trans->fail)
        self.failed = False
        #: payload bytes of the logged changes (charged to the domain's memory quota)
        self.bytes = 0

    def failures(self, mode: ConflictMode) -> list[str]:
        """The observed paths whose observation no longer holds (for blame)."""
        nodes = self.view.tree.nodes
        failed = []
        for path, (base, facets) in self.view.observed.items():
            live = nodes.get(path)
            if live is base:
                continue
            if live is None or base is None:
                if not self.view._created_alike(path, base, live):
                    failed.append(path)
            elif mode == GENERATION:
                if live.gen != base.gen:
                    failed.append(path)
            elif not _facets_equal(base, live, facets) or not self.view._listing_holds(path, live):
                failed.append(path)
        return failed

    def validate(self, mode: ConflictMode) -> bool:
        """True if every observation still holds in the live tree (see module note)."""
        view = self.view
        if view.doomed:
            return False
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
            if live is None or base is None:
                if view._created_alike(path, base, live):
                    continue
                return False
            if not _facets_equal(base, live, facets) or not view._listing_holds(path, live):
                return False
        return True
