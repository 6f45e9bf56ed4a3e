"""Read-only statistics nodes: their value is computed when it is read.

A :class:`LiveNode` is a tree node whose ``value`` is produced by a function, so the
counters cost nothing until someone reads them (no tree write per request). They are
created under ``/tool/xenstored/stats/`` with the privileged owner's ``n`` permission.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocol.perms import Perms
from ..store.node import Node

__all__ = ["LiveNode"]


class LiveNode(Node):
    """A node whose value is ``compute()`` at the time of each read."""

    __slots__ = ("compute",)

    def __init__(self, compute: Callable[[], str], perms: Perms) -> None:
        self.compute = compute
        super().__init__(b"", perms)

    @property
    def value(self) -> bytes:
        return self.compute().encode("ascii")

    @value.setter
    def value(self, _: bytes) -> None:
        # Statistics are read-only; the config tree refuses writes before they get here.
        pass

    def copy(self) -> Node:
        return Node(self.value, self.perms, dict(self.children), self.gen)
