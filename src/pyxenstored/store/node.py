"""A node of the tree and the facets a transaction can observe of it.

Live nodes are mutated in place for speed *unless* ``shared`` is set: a transaction that
captured a node as the base of an observation sets it, and the tree then replaces the
node with a copy before changing it. So ``live is base`` proves that nothing changed.

Memory: most nodes are leaves, so a node without children holds the one shared
:data:`NO_CHILDREN` (an empty dict that refuses changes) instead of a dict of its own;
:meth:`Node.add_child` gives it a dict when its first child comes. Anything that adds a
child must go through ``add_child`` (removing one from a node that has it is a plain
``del``/``pop``: ``NO_CHILDREN`` has no entry to remove).
"""

from __future__ import annotations

from typing import NoReturn

from ..protocol.perms import Perms

__all__ = ["CHILDREN", "EXISTS", "NO_CHILDREN", "PERMS", "VALUE", "Node"]

#: Facets of a node that an operation may depend on (bit flags).
EXISTS = 0
VALUE = 1
PERMS = 2
CHILDREN = 4


class _NoChildren(dict[str, None]):
    """The child list of every leaf: empty, and loud if anything tries to fill it (a
    child added here would appear under every leaf)."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("NO_CHILDREN is shared by every leaf: use Node.add_child")

    # Only what adds: removing from an empty dict already fails or does nothing.
    __setitem__ = setdefault = update = __ior__ = _refuse


#: The shared, unchangeable child list of nodes without children.
NO_CHILDREN: dict[str, None] = _NoChildren()


class Node:
    """One node: value bytes, permission list, ordered child names, generation."""

    __slots__ = ("children", "gen", "perms", "shared", "value")

    def __init__(
        self, value: bytes, perms: Perms, children: dict[str, None] | None = None, gen: int = 0
    ) -> None:
        self.value = value
        self.perms = perms
        #: Child names in creation order (keys; the values are None). An empty list is
        #: NO_CHILDREN: add children with add_child() only.
        self.children: dict[str, None] = children if children else NO_CHILDREN
        self.gen = gen
        self.shared = False

    def add_child(self, name: str) -> None:
        """Append ``name`` to the child list (the first child gets the node a dict)."""
        children = self.children
        if children is NO_CHILDREN:
            self.children = {name: None}
        else:
            children[name] = None

    def copy(self) -> Node:
        """An unshared copy with its own child dict (NO_CHILDREN stays shared)."""
        children = self.children
        return Node(self.value, self.perms, dict(children) if children else None, self.gen)

    @property
    def owner(self) -> int:
        return self.perms[0][1]

    def listing(self) -> bytes:
        """Child names, each NUL-terminated (DIRECTORY's reply)."""
        if not self.children:
            return b""
        return ("\0".join(self.children) + "\0").encode("ascii")

    def size(self) -> int:
        """What the node-size quota counts: header, perms, value and child list."""
        names = sum(len(name) + 1 for name in self.children)
        return 16 + 8 * len(self.perms) + len(self.value) + names

    def __repr__(self) -> str:
        return f"Node({self.value!r}, {self.perms!r}, {list(self.children)!r}, gen={self.gen})"
