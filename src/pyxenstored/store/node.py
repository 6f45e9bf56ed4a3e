"""A node of the tree and the facets a transaction can observe of it.

Live nodes are mutated in place for speed *unless* they are ``shared``: a transaction that
captured a node as the base of an observation calls :meth:`Node.share`, and the tree then
replaces the node with a copy before changing it. So ``live is base`` proves that nothing
changed. ``shared`` is not stored in the node: ``share()`` turns the node into its
class's shared twin (:class:`SharedNode` for :class:`Node`, made for every subclass),
whose class attribute ``shared`` is True. Four slots instead of five make a node 64
bytes, one allocator size class less than 80.

A node's child list is keyed by each child's *full path*, not its name: in the live
tree that key is the very string object the tree's ``nodes`` dict holds as the child's
key, so a child costs its parent one dict entry and no string of its own, and walks and
removals go from a node to its children without building ``prefix + name``. Only
:meth:`Node.listing` and :meth:`Node.size` need the names (what DIRECTORY returns and
what the node-size quota counts), and cut them off the paths; :meth:`Node.names` gives
them to everyone else.

Memory: a child list is a *tuple* while it is small (up to :data:`SMALL_CHILDREN`
entries: 8 bytes each, where a dict costs 25-60) and a dict (path -> None) beyond, so
that adding to and removing from a wide directory stay O(1). Most nodes are leaves and
hold the empty tuple :data:`NO_CHILDREN`; most directories of a real tree are small
(``memory/``, ``device/vif/0/``, ``control/``). A tuple is immutable, so a copy shares
it. Change a child list only through :meth:`Node.add_child` and
:meth:`Node.remove_child`; read it as any ordered collection of paths.
"""

from __future__ import annotations

from ..protocol.perms import Perms

__all__ = [
    "CHILDREN",
    "EXISTS",
    "NO_CHILDREN",
    "PERMS",
    "PLAIN_NODES",
    "SMALL_CHILDREN",
    "VALUE",
    "Children",
    "Node",
    "SharedNode",
]

#: Facets of a node that an operation may depend on (bit flags).
EXISTS = 0
VALUE = 1
PERMS = 2
CHILDREN = 4


#: A child list: child paths in creation order, a tuple while small, else a dict's keys.
Children = tuple[str, ...] | dict[str, None]
#: Children a tuple holds before the list becomes a dict. A tuple costs an O(width)
#: copy per change: about a dict insert's cost at 32 children, +0.3 us per Tree.create
#: at 120 (a few % of a WRITE, within noise in the engine), for 8 bytes a child instead
#: of ~26. Directories wider than this are rare and keep O(1) changes.
SMALL_CHILDREN = 128

#: Listings remembered (child paths -> listing), and the longest listing remembered: a
#: few hundred KiB at most, whatever the tree (see Node.listing).
LISTINGS_MAX = 256
LISTING_CACHED_MAX = 4096
_LISTINGS: dict[tuple[str, ...], bytes] = {}

#: The child list of nodes without children (immutable, so shared by every leaf).
NO_CHILDREN: tuple[str, ...] = ()


class Node:
    """One node: value bytes, permission list, ordered child paths, generation."""

    __slots__ = ("children", "gen", "perms", "value")

    #: A transaction holds this node (see the module doc): change a copy instead.
    shared = False
    #: The class share() turns a node of this class into (made by __init_subclass__).
    _shared_class: type[Node]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("shared", False):
            # The shared twin: the same layout (no slots of its own), so that a node can
            # become one in place.
            cls._shared_class = type(
                f"Shared{cls.__name__}", (cls,), {"__slots__": (), "shared": True}
            )

    def __init__(
        self, value: bytes, perms: Perms, children: Children | None = None, gen: int = 0
    ) -> None:
        self.value = value
        self.perms = perms
        #: Child paths (full paths, not names) in creation order (see the module doc:
        #: a tuple, NO_CHILDREN when empty, or a dict's keys). Change it with
        #: add_child() and remove_child() only.
        self.children: Children = children if children else NO_CHILDREN
        self.gen = gen

    def share(self) -> None:
        """Mark this node as held by a transaction (the tree copies it before a change)."""
        if not self.shared:
            self.__class__ = self._shared_class

    def add_child(self, path: str) -> None:
        """Append the child at ``path`` (its full path: pass the string the tree keys it
        by) to the child list (past SMALL_CHILDREN the tuple becomes a dict)."""
        children = self.children
        if isinstance(children, dict):
            children[path] = None
        elif len(children) < SMALL_CHILDREN:
            self.children = children + (path,)  # noqa: RUF005 (faster than unpacking)
        else:
            grown = dict.fromkeys(children)
            grown[path] = None
            self.children = grown

    def remove_child(self, path: str) -> None:
        """Take the child at ``path`` out of the child list, if it is there (an empty
        list becomes NO_CHILDREN again)."""
        children = self.children
        if isinstance(children, dict):
            children.pop(path, None)
            if not children:
                self.children = NO_CHILDREN
        elif path in children:
            i = children.index(path)
            self.children = children[:i] + children[i + 1 :]

    def copy(self) -> Node:
        """An unshared copy (a tuple child list is shared, a dict copied)."""
        children = self.children
        if isinstance(children, dict):
            children = dict(children)
        return Node(self.value, self.perms, children, self.gen)

    @property
    def owner(self) -> int:
        return self.perms[0][1]

    def names(self) -> list[str]:
        """The children's names, in order."""
        children = self.children
        if not children:
            return []
        # Every child path is this node's path, "/", then the name: one cut for all.
        first = next(iter(children))
        cut = first.rfind("/") + 1
        return "\0".join(children)[cut:].split("\0" + first[:cut])

    def listing(self) -> bytes:
        """Child names, each NUL-terminated (DIRECTORY's reply)."""
        children = self.children
        if not children:
            return b""
        # A listing is a function of the child paths alone, so the tuple of them is a
        # key that can never be stale: a directory listed again unchanged costs a tuple
        # and a probe (about what joining the names did before child lists held paths).
        key = tuple(children)
        found = _LISTINGS.get(key)
        if found is not None:
            return found
        # One join and one replace (both in C) instead of a slice per child: names hold
        # no NUL, so "\0" + the parent's prefix occurs only where a child path starts.
        first = key[0]
        cut = first.rfind("/") + 1
        joined = "\0".join(key)[cut:].replace("\0" + first[:cut], "\0")
        out = (joined + "\0").encode("ascii")
        if len(out) <= LISTING_CACHED_MAX:
            if len(_LISTINGS) >= LISTINGS_MAX:
                _LISTINGS.clear()  # bounded: start again
            _LISTINGS[key] = out
        return out

    def size(self) -> int:
        """What the node-size quota counts: header, perms, value and child list (each
        name and its NUL)."""
        children = self.children
        names = 0
        if children:
            cut = next(iter(children)).rfind("/") + 1
            names = sum(map(len, children)) - (cut - 1) * len(children)
        return 16 + 8 * len(self.perms) + len(self.value) + names

    def __repr__(self) -> str:
        return f"Node({self.value!r}, {self.perms!r}, {self.names()!r}, gen={self.gen})"


class SharedNode(Node):
    """A :class:`Node` some transaction holds (``Node.share()`` makes one)."""

    __slots__ = ()
    shared = True


Node._shared_class = SharedNode
#: The classes of nodes that store their value (not computed statistics nodes).
PLAIN_NODES = frozenset({Node, SharedNode})
