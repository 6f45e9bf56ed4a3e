"""A node of the tree and the facets a transaction can observe of it.

Live nodes are mutated in place for speed *unless* they are ``shared``: a transaction that
captured a node as the base of an observation calls :meth:`Node.share`, and the tree then
replaces the node with a copy before changing it. So ``live is base`` proves that nothing
changed. ``shared`` is not stored in the node: ``share()`` turns the node into its
class's shared twin (:class:`SharedNode` for :class:`Node`, made for every subclass),
whose class attribute ``shared`` is True, so a node has four fields and no fifth. The
fields are stored by :class:`~.nodebase.NodeBase`: 48 bytes where its compiled build
is there, 96 (64 and a generation int) in pure Python.

A node's child list is keyed by each child's *full path*, not its name: in the live
tree that key is the very string object the tree's ``nodes`` dict holds as the child's
key, so a child costs its parent one dict entry and no string of its own, and walks and
removals go from a node to its children without building ``prefix + name``. Only
:meth:`Node.listing` and :meth:`Node.size` need the names (what DIRECTORY returns and
what the node-size quota counts), and cut them off the paths; :meth:`Node.names` gives
them to everyone else.

Memory: a child list is a *tuple* while it is small (up to :data:`SMALL_CHILDREN`
entries: 8 bytes each, where a dict costs 25-60), a *list* while it is wide (up to
:data:`WIDE_CHILDREN`: 8-9 bytes each, appends O(1), a removal one scan of the list)
and a dict (path -> None) beyond, so that a very wide directory keeps O(1) changes and
membership tests whatever its width. Most nodes are leaves and hold the empty tuple
:data:`NO_CHILDREN`; most directories of a real tree are small (``memory/``,
``device/vif/0/``, ``control/``), and the wide ones (``/local/domain``, a backend's
directory of domains) have as many children as the host has domains. A tuple is
immutable, so a copy shares it; a list or dict is copied. Change a child list only
through :meth:`Node.add_child` and :meth:`Node.remove_child`; read it as any ordered
collection of paths.
"""

from __future__ import annotations

from ..protocol.perms import Perms
from .nodebase import NodeBase, NodeStorage

__all__ = [
    "CHILDREN",
    "EXISTS",
    "NO_CHILDREN",
    "PERMS",
    "PLAIN_NODES",
    "SMALL_CHILDREN",
    "VALUE",
    "WIDE_CHILDREN",
    "Children",
    "Node",
    "SharedNode",
]

#: Facets of a node that an operation may depend on (bit flags).
EXISTS = 0
VALUE = 1
PERMS = 2
CHILDREN = 4


#: A child list: child paths in creation order, a tuple while small, a list while wide,
#: else a dict's keys.
Children = tuple[str, ...] | list[str] | dict[str, None]
#: Children a tuple holds before the list becomes a dict. A tuple costs an O(width)
#: copy per change: about a dict insert's cost at 32 children, +0.3 us per Tree.create
#: at 120 (a few % of a WRITE, within noise in the engine), for 8 bytes a child instead
#: of ~26. Directories wider than this are rare and keep O(1) changes.
SMALL_CHILDREN = 128
#: Children a list holds before it becomes a dict: a removal from a list scans it (about
#: 10 ns a child, so at most ~40 us here), for 8-9 bytes a child instead of ~26.
WIDE_CHILDREN = 4096

#: Listings remembered (child paths -> listing), and the longest listing remembered: a
#: few hundred KiB at most, whatever the tree (see Node.listing).
LISTINGS_MAX = 256
LISTING_CACHED_MAX = 4096
_LISTINGS: dict[tuple[str, ...], bytes] = {}

#: The child list of nodes without children (immutable, so shared by every leaf).
NO_CHILDREN: tuple[str, ...] = ()


class Node(NodeBase, metaclass=NodeStorage):
    """One node: value bytes, permission list, ordered child paths, generation.

    ``Node(value, perms, children=None, gen=0)``. The fields live in
    :class:`~.nodebase.NodeBase` (compiled where it was built); ``children`` holds child
    paths (full paths, not names) in creation order (see the module doc: NO_CHILDREN
    when empty, a tuple, a list or a dict's keys by width). Change it with add_child()
    and remove_child() only.
    """

    __slots__ = ()

    children: Children

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

    def __reduce__(self) -> tuple[object, ...]:
        """Copies and pickles (tests deep-copy whole engines): the four fields, and the
        slots a subclass adds as state (the compiled storage has no default for this)."""
        extra = {
            name: getattr(self, name)
            for klass in type(self).__mro__[:-2]  # not NodeBase, not object
            for name in klass.__dict__.get("__slots__", ())
            if hasattr(self, name)
        }
        fields = (type(self), self.value, self.perms, self.children, self.gen)
        return (_rebuilt, fields, (None, extra) if extra else None)

    def share(self) -> None:
        """Mark this node as held by a transaction (the tree copies it before a change)."""
        if not self.shared:
            self.__class__ = self._shared_class

    def add_child(self, path: str) -> None:
        """Append the child at ``path`` (its full path: pass the string the tree keys it
        by) to the child list (past SMALL_CHILDREN the tuple becomes a list, past
        WIDE_CHILDREN the list a dict)."""
        children = self.children
        if isinstance(children, tuple):
            if len(children) < SMALL_CHILDREN:
                self.children = children + (path,)  # noqa: RUF005 (faster than unpacking)
            else:
                self.children = [*children, path]
        elif isinstance(children, list):
            if len(children) < WIDE_CHILDREN:
                children.append(path)
            else:
                grown = dict.fromkeys(children)
                grown[path] = None
                self.children = grown
        else:
            children[path] = None

    def remove_child(self, path: str) -> None:
        """Take the child at ``path`` out of the child list, if it is there (an empty
        list becomes NO_CHILDREN again; a list or dict never shrinks back to a tuple:
        a directory that was wide is likely to be so again)."""
        children = self.children
        if isinstance(children, tuple):
            try:
                i = children.index(path)  # one scan, as for a list
            except ValueError:
                return
            self.children = children[:i] + children[i + 1 :]
        elif isinstance(children, list):
            try:
                children.remove(path)  # one scan, not "in" and then another
            except ValueError:
                return
            if not children:
                self.children = NO_CHILDREN
        else:
            children.pop(path, None)
            if not children:
                self.children = NO_CHILDREN

    def copy(self) -> Node:
        """An unshared copy (a tuple child list is shared, a list or dict copied)."""
        children = self.children
        if not isinstance(children, tuple):
            children = children.copy()
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


def _rebuilt(cls: type[Node], value: bytes, perms: Perms, children: Children, gen: int) -> Node:
    """A node of class ``cls`` with these fields, made as NodeBase makes one (a
    subclass's own __init__ takes other arguments; Node.__reduce__ restores its slots)."""
    node = NodeBase.__new__(cls)
    NodeBase.__init__(node, value, perms, children, gen)
    return node


class SharedNode(Node, metaclass=NodeStorage):
    """A :class:`Node` some transaction holds (``Node.share()`` makes one)."""

    __slots__ = ()
    shared = True


Node._shared_class = SharedNode
#: The classes of nodes that store their value (not computed statistics nodes).
PLAIN_NODES = frozenset({Node, SharedNode})
