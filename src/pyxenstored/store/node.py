"""A node of the tree and the facets a transaction can observe of it.

Live nodes are mutated in place for speed *unless* ``shared`` is set: a transaction that
captured a node as the base of an observation sets it, and the tree then replaces the
node with a copy before changing it. So ``live is base`` proves that nothing changed.
"""

from __future__ import annotations

from ..protocol.perms import Perms

__all__ = ["CHILDREN", "EXISTS", "PERMS", "VALUE", "Node"]

#: Facets of a node that an operation may depend on (bit flags).
EXISTS = 0
VALUE = 1
PERMS = 2
CHILDREN = 4


class Node:
    """One node: value bytes, permission list, ordered child names, generation."""

    __slots__ = ("children", "gen", "perms", "shared", "value")

    def __init__(
        self, value: bytes, perms: Perms, children: dict[str, None] | None = None, gen: int = 0
    ) -> None:
        self.value = value
        self.perms = perms
        self.children: dict[str, None] = {} if children is None else children
        self.gen = gen
        self.shared = False

    def copy(self) -> Node:
        """An unshared copy with its own child dict."""
        return Node(self.value, self.perms, dict(self.children), self.gen)

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
