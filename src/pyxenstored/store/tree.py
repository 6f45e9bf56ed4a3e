"""The live tree: a flat map from absolute path to :class:`Node`.

Paths are keys, so lookups cost one dict probe whatever the depth, and nothing here
recurses (XSA-418: a deep tree must not exhaust the stack). Special ``@`` nodes live in
the same map but are nobody's children.

Every change bumps a global generation and stamps the changed node (and a parent whose
child list changed) with it, as C does; ``changes`` counts modifications so that a
transaction can tell "nothing happened since I started" in O(1). Per-owner node counts
are kept exact on every create, remove and owner change. An optional journal records
the prior state of every path it touches so that a failed commit can be rolled back.

``sink``, when a list, receives every change made to the tree as an operation tuple
(:data:`CREATE`, :data:`SET_VALUE`, :data:`SET_PERMS`, :data:`REMOVE`, and
:data:`COUNTERS` after a rollback) in the order made: replaying them through the same
methods on an equal tree gives an equal tree, generations and child order included
(the crash journal; see ``state.journal``). A rolled-back commit leaves no operation of
its own, only the counters it moved.

Memory (what a node costs is what the store costs): a node's fields are stored compiled
where that was built (``store.nodebase``: 48 bytes a node instead of 96), leaves share
one empty child list, small child lists are tuples and wide ones lists, and a child
list holds the children's paths, the same string objects as the keys of ``nodes``
(``store.node``): a child costs no name string.
Permission lists and the short values of new nodes are *interned*: equal ones share one
object, through two small caches (bounded: a cache that fills up is emptied and starts
again, so hostile input costs at most the cache, and what nodes already hold stays
shared). Values repeat across a real
tree (``4``, ``online``, ``x86_64-abi``, ``xenconsoled``, feature flags, small numbers):
a shared value saves its 48-64 bytes per node. The per-domain indexes are dicts (path ->
None), which Python keeps denser than sets of the same small size, and ``owned`` holds
only the *tops* of what each domain owns (a node it owns under a parent it does not
own): removing those removes everything it owns, and a guest's home of a hundred nodes
is one entry. An owner change re-files the children it turns into tops or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from ..protocol.paths import parent_of
from ..protocol.perms import Perms
from .node import PLAIN_NODES, SMALL_CHILDREN, Node

__all__ = ["COUNTERS", "CREATE", "REMOVE", "SET_PERMS", "SET_VALUE", "Tree", "node_bytes"]

#: Operation codes of ``Tree.sink`` entries: ``(CREATE, path, value, perms)``,
#: ``(SET_VALUE, path, value)``, ``(SET_PERMS, path, perms)``, ``(REMOVE, path)``,
#: ``(COUNTERS, gen, changes)``.
CREATE, SET_VALUE, SET_PERMS, REMOVE, COUNTERS = range(1, 6)

_ABSENT: Node | None = None

#: Entries each interning cache holds before it starts again (a few hundred KiB at most).
INTERN_MAX = 4096
#: Longest value interned: short values are the ones that repeat (and one byte or none
#: is shared by Python already).
VALUE_INTERN_MAX = 64

_T = TypeVar("_T")


def node_bytes(path: str, node: Node) -> int:
    """What a node costs its owner's memory quota: path, value and permissions."""
    # Statistics nodes (subclasses) compute their value; they store nothing.
    value = node.value if type(node) in PLAIN_NODES else b""
    return len(path) + len(value) + 8 * len(node.perms)


def _intern(cache: dict[_T, _T], value: _T) -> _T:
    """The value equal to ``value`` that ``cache`` holds, ``value`` itself the first
    time (a cache past INTERN_MAX entries starts afresh: bounded, never wrong)."""
    shared = cache.get(value)
    if shared is not None:
        return shared
    if len(cache) >= INTERN_MAX:
        cache.clear()
    cache[value] = value
    return value


class Tree:
    """The live store. Callers check permissions and quotas before calling."""

    __slots__ = (
        "_perms",
        "_values",
        "changes",
        "gen",
        "granted",
        "journal",
        "log",
        "nodes",
        "owned",
        "owner_bytes",
        "owner_count",
        "root_owner",
        "sink",
        "sink_mark",
    )

    #: Changes made through this view are real: handlers fire watches for them.
    live = True

    def __init__(self, root_perms: Perms) -> None:
        self.nodes: dict[str, Node] = {"/": Node(b"", root_perms, gen=0)}
        self.root_owner = root_perms[0][1]
        #: domid -> paths (keys) of the tops of what it owns: the nodes it owns whose
        #: parent it does not own (not for the root's owner; see the module doc)
        self.owned: dict[int, dict[str, None]] = {}
        #: domid -> paths (keys) of the nodes whose permission entries 1.. name it
        self.granted: dict[int, dict[str, None]] = {}
        #: Interning caches: permission list -> itself, short value -> itself.
        self._perms: dict[Perms, Perms] = {}
        self._values: dict[bytes, bytes] = {}
        self.gen = 0
        self.changes = 0
        self.owner_count: dict[int, int] = {root_perms[0][1]: 1}
        #: Bytes of path, value and permissions of the nodes each domain owns.
        self.owner_bytes: dict[int, int] = {root_perms[0][1]: 1 + 8 * len(root_perms)}
        self.journal: list[tuple[str, Node | None]] | None = None
        #: When a list, every changed path is appended to it (conflict blame); a removed
        #: subtree appears once, as its root followed by "/".
        self.log: list[str] | None = None
        #: When a list, every change is appended to it as an operation (module docstring).
        self.sink: list[tuple[object, ...]] | None = None
        self.sink_mark = 0

    # -- reading ---------------------------------------------------------------------
    def get(self, path: str, facets: int = 0) -> Node | None:
        """The node at ``path`` or None. ``facets`` matters only to transaction views."""
        return self.nodes.get(path)

    def __len__(self) -> int:
        return len(self.nodes)

    # -- interning -------------------------------------------------------------------
    def intern_perms(self, perms: Perms) -> Perms:
        """The shared permission list equal to ``perms``."""
        return _intern(self._perms, perms)

    def intern_value(self, value: bytes) -> bytes:
        """The shared bytes equal to ``value`` if it is short (else ``value``)."""
        if 1 < len(value) <= VALUE_INTERN_MAX:
            return _intern(self._values, value)
        return value

    # -- writing ---------------------------------------------------------------------
    def _own(self, path: str, node: Node) -> Node:
        """The node to mutate: a fresh copy if a transaction holds the old one."""
        shared = node.shared  # a class attribute (see store.node): look it up once
        if self.journal is not None:
            self.journal.append((path, node if shared else node.copy()))
        if shared:
            node = node.copy()
            self.nodes[path] = node
        return node

    def _stamp(self, node: Node) -> None:
        self.gen += 1
        self.changes += 1
        node.gen = self.gen

    def set_value(self, path: str, value: bytes) -> None:
        """Replace the value of an existing node."""
        node = self._own(path, self.nodes[path])
        owner = node.perms[0][1]
        self.owner_bytes[owner] = self.owner_bytes.get(owner, 0) + len(value) - len(node.value)
        # Not interned: values that repeat are mostly written once, when their node is
        # created; interning every rewrite cost WRITE 2-3 % (benchmarks/core.py).
        node.value = value
        self._stamp(node)
        if self.log is not None:
            self.log.append(path)
        if self.sink is not None:
            self.sink.append((SET_VALUE, path, value))

    def set_perms(self, path: str, perms: Perms) -> None:
        """Replace the permissions of an existing node (the owner count follows)."""
        node = self._own(path, self.nodes[path])
        special = path[:1] == "@"  # special nodes are nobody's: never charged
        old_owner = node.perms[0][1]
        if not special:
            self._charge(path, node, -1)
        node.perms = perms = self.intern_perms(perms)
        if not special:
            self._charge(path, node, 1)
            if perms[0][1] != old_owner:
                self._refile(node.children, old_owner, perms[0][1])
        self._stamp(node)
        if self.log is not None:
            self.log.append(path)
        if self.sink is not None:
            self.sink.append((SET_PERMS, path, perms))

    def create(self, path: str, value: bytes, perms: Perms) -> None:
        """Create a node whose parent exists and which does not exist itself."""
        cut = path.rfind("/")
        parent_path = path[:cut] if cut > 0 else "/"
        parent = self._own(parent_path, self.nodes[parent_path])
        # Node.add_child() inline: this is every create's cost. The child list's key is
        # ``path`` itself, the object ``nodes`` keys the new node by (no name string).
        children = parent.children
        if type(children) is tuple and len(children) < SMALL_CHILDREN:
            parent.children = children + (path,)  # noqa: RUF005 (faster than unpacking)
        else:
            parent.add_child(path)
        self._stamp(parent)
        if perms is not parent.perms:  # inherited permissions are shared already
            perms = self.intern_perms(perms)
        if 1 < len(value) <= VALUE_INTERN_MAX:  # intern_value() inline
            values = self._values
            shared = values.get(value)
            if shared is not None:
                value = shared
            else:
                if len(values) >= INTERN_MAX:
                    values.clear()
                values[value] = value
        node = Node(value, perms, gen=parent.gen)
        if self.journal is not None:
            self.journal.append((path, _ABSENT))
        self.nodes[path] = node
        self._charge(path, node, 1)
        if self.log is not None:
            self.log += (parent_path, path)
        if self.sink is not None:
            self.sink.append((CREATE, path, value, perms))

    def implicit(self, path: str, perms: Perms) -> None:
        """Only transaction views care which parents a write created implicitly."""

    def attach(self, path: str, value: bytes, perms: Perms, gen: int) -> None:
        """Add a node under its existing parent as it was recorded (a state restore):
        ``gen`` is kept, nothing is stamped, journaled or logged; accounts stay exact."""
        self.nodes[parent_of(path)].add_child(path)
        node = self.nodes[path] = Node(self.intern_value(value), self.intern_perms(perms), gen=gen)
        self._charge(path, node, 1)

    def replace(self, path: str, node: Node) -> None:
        """Put ``node`` at the existing ``path`` in place of its node, keeping the
        generation, the child list and the owner accounts exact (live configuration
        swaps a restored statistics node for a computed one). Not a change: no stamp."""
        old = self.nodes[path]
        node.gen = old.gen
        node.children = old.children
        if path[:1] != "@":
            self._charge(path, old, -1)
            self._charge(path, node, 1)
            if node.perms[0][1] != old.perms[0][1]:
                self._refile(node.children, old.perms[0][1], node.perms[0][1])
        self.nodes[path] = node

    def create_special(self, path: str, perms: Perms) -> None:
        """Create an ``@`` node, outside the tree."""
        self.nodes[path] = Node(b"", perms, gen=self.gen)

    def remove(self, path: str) -> list[tuple[str, Node]]:
        """Remove ``path`` and its subtree; return them deepest first (post-order).

        The walk is iterative. The returned nodes are the removed objects, so callers
        can still see their permissions when firing watches.
        """
        nodes = self.nodes
        order: list[tuple[str, Node]] = []
        stack = [path]
        while stack:
            p = stack.pop()
            node = nodes[p]
            order.append((p, node))
            stack.extend(node.children)
        # Pre-order reversed is a valid post-order: every child precedes its parent.
        order.reverse()
        journal = self.journal
        for p, node in order:
            if journal is not None:
                journal.append((p, node))
            del nodes[p]
            self._charge(p, node, -1)
        parent_path = parent_of(path)
        parent = self._own(parent_path, nodes[parent_path])
        parent.remove_child(path)
        self._stamp(parent)
        if self.log is not None:
            # The parent's child list changed; the subtree is named by its root only
            # (blame matches a failed path below it), so a deep or wide removal costs
            # the log two entries.
            self.log.append(parent_path)
            self.log.append(path + "/")
        if self.sink is not None:
            self.sink.append((REMOVE, path))
        return order

    @staticmethod
    def _index(index: dict[int, dict[str, None]], domid: int, path: str, sign: int) -> None:
        paths = index.get(domid)
        if sign > 0:
            if paths is None:
                index[domid] = {path: None}
            else:
                paths[path] = None
        elif paths is not None:
            paths.pop(path, None)
            if not paths:
                del index[domid]

    def _refile(self, children: Iterable[str], old: int, new: int) -> None:
        """A parent's owner went from ``old`` to ``new``: of its children, those ``old``
        owns are tops of what it owns now, those ``new`` owns are not any more."""
        nodes = self.nodes
        owned = self.owned
        root = self.root_owner
        for child in children:
            node = nodes.get(child)
            if node is None:
                continue  # not there (yet): charging it will file it
            owner = node.perms[0][1]
            if owner == root:
                continue
            if owner == old:
                self._index(owned, old, child, 1)
            elif owner == new:
                self._index(owned, new, child, -1)

    def _charge(self, path: str, node: Node, sign: int) -> None:
        """Add (sign 1) or take away (sign -1) a node from its owner's accounts."""
        perms = node.perms
        owner = perms[0][1]
        # Indexes for domain death: the tops of what each domain owns (the privileged
        # owner of the root is left out: it never dies) and the nodes granting it rights.
        if owner != self.root_owner:
            if sign < 0:
                self._index(self.owned, owner, path, sign)
            else:
                parent = self.nodes.get(parent_of(path)) if path != "/" else None
                if parent is None or parent.perms[0][1] != owner:
                    self._index(self.owned, owner, path, sign)
        for i in range(1, len(perms)):
            self._index(self.granted, perms[i][1], path, sign)
        counts = self.owner_count
        n = counts.get(owner, 0) + sign
        size = self.owner_bytes.get(owner, 0) + sign * node_bytes(path, node)
        if n:
            counts[owner] = n
            self.owner_bytes[owner] = size
        else:
            counts.pop(owner, None)
            self.owner_bytes.pop(owner, None)

    # -- journal ---------------------------------------------------------------------
    def begin_journal(self) -> None:
        """Start recording prior states (for an all-or-nothing commit)."""
        self.journal = []
        if self.sink is not None:
            self.sink_mark = len(self.sink)

    def end_journal(self, rollback: bool) -> None:
        """Stop recording; with ``rollback`` restore every journaled path."""
        journal, self.journal = self.journal, None
        if not rollback:
            return
        sink = self.sink
        if sink is not None:
            del sink[self.sink_mark :]
        if not journal:
            return
        nodes = self.nodes
        for path, before in reversed(journal):
            current = nodes.get(path)
            if current is not None:
                self._charge(path, current, -1)
            if before is None:
                nodes.pop(path, None)
            else:
                nodes[path] = before
                self._charge(path, before, 1)
                if current is not None and current.perms[0][1] != before.perms[0][1]:
                    self._refile(before.children, current.perms[0][1], before.perms[0][1])
        self.changes += 1
        if sink is not None:
            sink.append((COUNTERS, self.gen, self.changes))
