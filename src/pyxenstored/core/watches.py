"""Watches: registration, matching and delivery (xenstore-protocol.md §4).

Watches are indexed by their canonical path. An event for path P visits P and each of
its ancestors (SUBTREE) or only P (EXACT, used for the descendants of a removed node), so
its cost depends on the depth of P and the number of matching watches, never on the
number of watches registered elsewhere or on the number of connections.

Delivery filters unprivileged watchers by read permission on the node or its parent
(XSA-115; for SET_PERMS the old permissions count too). The initial event after WATCH is
never filtered. An event longer than the payload limit is dropped, as C does.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocol.paths import ancestors, parent_of
from ..protocol.perms import READ, Perms
from ..protocol.wire import HEADER, PAYLOAD_MAX, Op
from ..store.tree import Tree
from .connection import Connection
from .permissions import StaleCheck, access

__all__ = ["Watch", "WatchRegistry"]

_pack = HEADER.pack
_WATCH_EVENT = int(Op.WATCH_EVENT)


class Watch:
    """One (path, token) registration of one connection."""

    __slots__ = ("conn", "depth", "path", "strip", "token")

    def __init__(self, conn: Connection, path: str, token: bytes, strip: int, depth: int) -> None:
        self.conn = conn
        self.path = path
        self.token = token
        #: characters to cut from the front of event paths (relative watches), else 0.
        self.strip = strip
        #: maximum depth below ``path`` (-1: unlimited).
        self.depth = depth


def event_message(epath: str, token: bytes) -> bytes | None:
    """An encoded WATCH_EVENT, or None if it would exceed the payload limit."""
    body = epath.encode("ascii") + b"\0" + token + b"\0"
    if len(body) > PAYLOAD_MAX:
        return None
    return _pack(_WATCH_EVENT, 0, 0, len(body)) + body


class WatchRegistry:
    """Every watch of every connection, by canonical path, then by connection."""

    __slots__ = ("by_path", "count", "enqueue", "tree_paths")

    def __init__(self, enqueue: Callable[[Connection, bytes], None]) -> None:
        #: path -> connection -> its watches on that path (in registration order)
        self.by_path: dict[str, dict[Connection, list[Watch]]] = {}
        self.count = 0
        #: how many keys of ``by_path`` are tree paths (not ``@introduceDomain``...): none
        #: means a change in the tree has no watcher to look for (a host where only the
        #: toolstack's special watches are set pays nothing per write)
        self.tree_paths = 0
        #: how an event reaches a connection (the engine bounds queues there).
        self.enqueue = enqueue

    def add(self, watch: Watch) -> None:
        groups = self.by_path.get(watch.path)
        if groups is None:
            groups = self.by_path[watch.path] = {}
            if watch.path[:1] != "@":
                self.tree_paths += 1
        groups.setdefault(watch.conn, []).append(watch)
        watch.conn.watches[(watch.path, watch.token)] = watch
        watch.conn.watch_bytes += len(watch.path) + len(watch.token)
        self.count += 1

    def remove(self, watch: Watch) -> None:
        groups = self.by_path.get(watch.path)
        if groups is not None:
            mine = groups.get(watch.conn)
            if mine is not None and watch in mine:
                mine.remove(watch)
                self.count -= 1
                if not mine:
                    del groups[watch.conn]
                    if not groups:
                        del self.by_path[watch.path]
                        if watch.path[:1] != "@":
                            self.tree_paths -= 1
        if watch.conn.watches.pop((watch.path, watch.token), None) is not None:
            watch.conn.watch_bytes -= len(watch.path) + len(watch.token)

    def remove_all(self, conn: Connection) -> None:
        for watch in list(conn.watches.values()):
            self.remove(watch)

    def fire(
        self,
        path: str,
        exact: bool,
        tree: Tree,
        extra: tuple[Perms, ...],
        stale: StaleCheck | None,
    ) -> None:
        """Deliver the event for a change at ``path``.

        Args:
            path: the changed node (absolute).
            exact: only watches on ``path`` itself (descendants of a removed node).
            tree: the live tree, for the current permissions of the node and its parent.
            extra: permissions that also grant the event (old perms, a removed node's).
            stale: the stale-grant rule for permission checks.
        """
        by_path = self.by_path
        if not self.tree_paths and path[:1] == "/":
            return  # no watch on any tree path: none can match
        if not by_path:
            return
        # Whether each unprivileged connection may see this event is decided once per
        # connection, however many of its watches match (a guest's 128 watches on /
        # must not cost 128 permission checks on every write).
        allowed: dict[int, bool] = {}
        for anc in (path,) if exact else ancestors(path):
            groups = by_path.get(anc)
            if not groups:
                continue
            below = 0 if anc == path else path.count("/") - (0 if anc == "/" else anc.count("/"))
            for conn, watches in groups.items():
                if not conn.caller.privileged:
                    ok = allowed.get(conn.id)
                    if ok is None:
                        ok = allowed[conn.id] = _may_see(conn, path, tree, extra, stale)
                    if not ok:
                        continue
                for w in watches:
                    if w.depth >= 0 and below > w.depth:
                        continue
                    msg = event_message(path[w.strip :] if w.strip else path, w.token)
                    if msg is not None:
                        self.enqueue(conn, msg)

    def fire_special(
        self, name: str, domid: int | None, tree: Tree, stale: StaleCheck | None = None
    ) -> None:
        """Deliver ``@introduceDomain`` / ``@releaseDomain`` (§4.5).

        A watch on the bare name without depth gets the bare name; with depth 1 it gets
        ``name/<domid>``; a watch on ``name/<domid>`` gets only that domain's events.
        Readers need read permission on the special node.
        """
        node = tree.nodes.get(name)
        targets: list[tuple[dict[Connection, list[Watch]], str | None]] = []
        if name in self.by_path:
            targets.append((self.by_path[name], None))
        if domid is not None:
            own = f"{name}/{domid}"
            if own in self.by_path:
                targets.append((self.by_path[own], own))
        for groups, fixed in targets:
            for conn, watches in groups.items():
                if not conn.caller.privileged and (
                    node is None or not access(conn.caller, node.perms, node, stale) & READ
                ):
                    continue
                for w in watches:
                    if fixed is None and domid is None and w.depth > 0:
                        continue
                    if fixed is not None:
                        epath = fixed
                    elif w.depth > 0 and domid is not None:
                        epath = f"{name}/{domid}"
                    else:
                        epath = name
                    msg = event_message(epath, w.token)
                    if msg is not None:
                        self.enqueue(conn, msg)


def _may_see(
    conn: Connection, path: str, tree: Tree, extra: tuple[Perms, ...], stale: StaleCheck | None
) -> bool:
    caller = conn.caller
    for perms in extra:  # permissions taken off a node now: the tree's generation
        if access(caller, perms, tree, stale) & READ:
            return True
    node = tree.nodes.get(path)
    if node is not None and access(caller, node.perms, node, stale) & READ:
        return True
    if path == "/":
        return False
    parent = tree.nodes.get(parent_of(path))
    return parent is not None and bool(access(caller, parent.perms, parent, stale) & READ)
