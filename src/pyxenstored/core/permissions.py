"""Access decisions, C's ``perm_for_conn`` (xenstore-protocol.md §3.2-3.6).

1. The privileged caller, the owner, the owner's target holder, or an owner of
   DOMID_ANY get everything (read, write and owner rights).
2. Otherwise the first grant (entries 1..n) naming the caller, its target or DOMID_ANY
   decides, unless that grant is *stale*: it names a domain that is dead, or that was
   introduced after the node was last written (XSA-322, XSA-417). Stale grants are
   skipped, never deleted, so that the result changes back if the node is rewritten.
3. Otherwise the owner entry's letter is what everyone else gets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..protocol.perms import BOTH, Perms
from ..protocol.wire import DOMID_ANY
from .caller import Caller

__all__ = ["ALL", "OWNER", "Generation", "StaleCheck", "access"]

OWNER = 8
ALL = BOTH | OWNER

#: ``stale(domid, node_gen)``: True when a grant naming ``domid`` must be ignored.
StaleCheck = Callable[[int, int], bool]


class Generation(Protocol):
    """What holds the generation a stale-grant check compares: the node itself (or the
    tree, whose current generation stands for permissions just taken off a node)."""

    @property
    def gen(self) -> int: ...


def access(caller: Caller, perms: Perms, at: Generation, stale: StaleCheck | None) -> int:
    """The rights (READ|WRITE|OWNER bits) ``caller`` has on a node with ``perms``.

    ``at.gen`` is the node's generation, read only when a grant decides and may be
    stale (a compiled node makes its generation an int on each read, store.nodebase)."""
    if caller.privileged:
        return ALL
    owner = perms[0][1]
    me = caller.domid
    target = caller.target
    if owner in (me, target, DOMID_ANY):
        return ALL
    for i in range(1, len(perms)):
        mode, domid = perms[i]
        if domid in (me, target, DOMID_ANY):
            if stale is not None and stale(domid, at.gen):
                continue
            return mode
    return perms[0][0]
