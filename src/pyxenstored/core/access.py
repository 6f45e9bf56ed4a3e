"""Node lookups with C's permission and error rules, shared by every tree handler.

A missing node answers ENOENT only if the caller has the requested right on the nearest
existing ancestor, else EACCES, so that a guest cannot probe for nodes it may not see
(xenstore-protocol.md §3.3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..errors import NoEntry, PermissionDenied, QuotaExceeded, XenstoreError
from ..protocol.paths import parent_of
from ..protocol.perms import WRITE, Perms
from ..store.node import PERMS, Node
from .caller import Caller
from .permissions import StaleCheck, access

__all__ = ["View", "create_path", "lookup", "missing_error"]


class View(Protocol):
    """The live tree or a transaction's view of it."""

    live: bool

    def get(self, path: str, facets: int = 0) -> Node | None: ...
    def set_value(self, path: str, value: bytes) -> None: ...
    def set_perms(self, path: str, perms: Perms) -> None: ...
    def create(self, path: str, value: bytes, perms: Perms) -> None: ...
    def remove(self, path: str) -> list[tuple[str, Node]]: ...
    def implicit(self, path: str, perms: Perms) -> None: ...


def missing_error(
    caller: Caller, view: View, path: str, need: int, stale: StaleCheck | None
) -> XenstoreError:
    """ENOENT or EACCES for a missing ``path``, decided at its nearest existing ancestor."""
    if caller.privileged or path[:1] != "/":
        return NoEntry()
    p = path
    while p != "/":
        p = parent_of(p)
        anc = view.get(p, PERMS)
        if anc is not None:
            if access(caller, anc.perms, anc, stale) & need:
                return NoEntry()
            return PermissionDenied()
    return NoEntry()


def lookup(
    caller: Caller, view: View, path: str, need: int, facets: int, stale: StaleCheck | None
) -> Node:
    """The node at ``path`` if ``caller`` has the ``need`` rights on it.

    Raises:
        NoEntry, PermissionDenied: as C decides them.
    """
    if caller.privileged:
        node = view.get(path, facets | PERMS)
        if node is None:
            raise NoEntry()
        return node
    # Permission first: a transaction observes (and depends on) only what it may see.
    node = view.get(path, PERMS)
    if node is None:
        raise missing_error(caller, view, path, need, stale)
    if not access(caller, node.perms, node, stale) & need:
        raise PermissionDenied()
    if facets & ~PERMS:
        view.get(path, facets)
    return node


def create_path(
    caller: Caller,
    view: View,
    path: str,
    value: bytes,
    stale: StaleCheck | None,
    node_quota: int,
    too_big: Callable[[int], bool] | None = None,
) -> list[str]:
    """Create ``path`` and any missing parents (implicit parents get empty values);
    return the created paths, shallowest first.

    Every new node copies its parent's permissions; an unprivileged creator becomes the
    owner (C's ``construct_node``). ``node_quota`` is how many new nodes the creator may
    still own (-1: unlimited). ``too_big(size)`` says whether a node of that size breaks
    the node-size quota; it is asked for the new node (with the permissions it inherits)
    and for the existing ancestor whose child list grows, as C rewrites both.

    Raises:
        PermissionDenied: no write right on the nearest existing ancestor.
        QuotaExceeded: the creator's node quota or the node-size quota would be exceeded.
    """
    missing = [path]
    p = path
    while True:
        p = parent_of(p)
        anc = view.get(p, PERMS)
        if anc is not None:
            break
        missing.append(p)
    if not caller.privileged and not access(caller, anc.perms, anc, stale) & WRITE:
        raise PermissionDenied()
    if 0 <= node_quota < len(missing):
        raise QuotaExceeded("nodes")
    perms = anc.perms
    if not caller.privileged and perms[0][1] != caller.domid:
        perms = ((perms[0][0], caller.domid), *perms[1:])
    if too_big is not None:
        child = missing[-1]
        grown = anc.size() + len(child) - child.rfind("/")  # the name and its NUL
        if too_big(16 + 8 * len(perms) + len(value)) or too_big(grown):
            raise QuotaExceeded("node-size")
    for p in missing[1:]:
        view.implicit(p, perms)
    missing.reverse()
    for p in missing:
        view.create(p, value if p is path else b"", perms)
    return missing
