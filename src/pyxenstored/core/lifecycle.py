"""Domain lifecycle in the engine: which domains exist and since when (stale grants,
XSA-322/XSA-417), connection resets, and the cleanup when a domain dies or is released.

A mixin of :class:`~pyxenstored.core.engine.Engine` (xenstore-protocol.md §3.6, §5.6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..protocol.perms import Perms
from ..protocol.wire import DOMID_ANY, DOMID_FIRST_RESERVED
from ..store.node import Node
from ..store.tree import Tree
from .changes import BIRTH, DEATH
from .conflicts import ConflictGuard
from .connection import Connection
from .domains import Domain, DomainBackend
from .permissions import StaleCheck
from .quota import QuotaTable
from .refusals import RefusalLog
from .watches import WatchRegistry

__all__ = ["DomainLifecycle"]


class DomainLifecycle:
    """Births, resets and deaths of domains."""

    if TYPE_CHECKING:
        tree: Tree
        backend: DomainBackend
        priv_domid: int
        domains: dict[int, Domain]
        births: dict[int, int]
        pending_features: dict[int, int]
        quotas: QuotaTable
        conflict_guard: ConflictGuard
        refusals: RefusalLog
        on_domain: Callable[[int, bool], None] | None
        past_requests: dict[int, int]
        watches: WatchRegistry
        stale: StaleCheck | None

        def disconnect(self, conn: Connection) -> None: ...
        def drop_transactions(self, conn: Connection) -> None: ...
        def removed(self, path: str, node: Node, removed: list[tuple[str, Node]]) -> None: ...
        def meta_changed(self) -> None: ...
        def domain_changed(self, domid: int) -> None: ...
        def engine_op(self, op: tuple[object, ...]) -> None: ...

    def domain_exists(self, domid: int) -> bool:
        """Whether ``domid`` is a domain the hypervisor knows; reserved ids (DOMID_SELF,
        DOMID_ANY, ... from 0x7FF0 on) never are."""
        return domid < DOMID_FIRST_RESERVED and self.backend.exists(domid)

    def domain_born(self, domid: int) -> int:
        """The generation ``domid`` was first known at; records it now if new."""
        born = self.births.get(domid)
        if born is None:
            # One more than the current generation: every node written so far is older.
            born = self.births[domid] = self.tree.gen + 1
            self.engine_op((BIRTH, domid, born))
        return born

    def note_domains(self, perms: Perms) -> bool:
        """SET_PERMS names these domains: record each one the hypervisor knows (C's
        ``domain_alloc_permrefs``). Returns False if the owner domain does not exist."""
        for i, (_, domid) in enumerate(perms):
            if domid == DOMID_ANY or domid in self.births:
                continue
            if domid == self.priv_domid or self.domain_exists(domid):
                self.domain_born(domid)
            elif i == 0:
                return False
        return True

    def _stale(self, domid: int, node_gen: int) -> bool:
        """A grant naming ``domid`` is ignored if that domain is unknown (dead, or never
        seen alive) or younger than the node (XSA-322, XSA-417)."""
        if domid == DOMID_ANY or domid == self.priv_domid:
            return False
        born = self.births.get(domid)
        return born is None or born > node_gen

    def reset_connection(self, conn: Connection) -> None:
        """Drop a ring connection's watches, transactions, queued output and partial
        input (every INTRODUCE, and the ring reconnection handshake)."""
        self.domain_changed(conn.caller.domid)
        self.watches.remove_all(conn)
        self.drop_transactions(conn)
        conn.out.clear()
        conn.out_bytes = 0
        conn.reader.reset()

    def destroy_domain(self, domid: int) -> None:
        """A domain died or was released: remove its nodes and grants, forget when it
        was born, and tell ``@releaseDomain`` watchers if it had been introduced."""
        dom = self.domains.pop(domid, None)
        if self.births.pop(domid, None) is not None:
            self.engine_op((DEATH, domid, 0))
        self.domain_changed(domid)
        self.conflict_guard.forget(domid)
        self.refusals.forget(domid)
        if domid != self.priv_domid:
            self.past_requests.pop(domid, None)
        if dom is not None and self.on_domain is not None:
            self.on_domain(domid, False)
        if dom is not None and dom.conn is not None:
            self.disconnect(dom.conn)
        tree = self.tree
        # The tree's indexes make this cost what the domain owns and is granted, not
        # the size of the store. Shallowest first: removing a subtree takes the rest.
        for path in sorted(tree.owned.get(domid, ()), key=len):
            node = tree.nodes.get(path)
            if node is None or path == "/" or node.owner != domid:
                continue
            self.removed(path, node, tree.remove(path))
        for path in list(tree.granted.get(domid, ())):
            node = tree.nodes.get(path)
            if node is None:
                continue
            perms = node.perms
            kept = (perms[0], *(e for e in perms[1:] if e[1] != domid))
            tree.set_perms(path, kept)
        for name in ("@introduceDomain", "@releaseDomain"):
            special = tree.nodes.get(name)
            if special is not None and any(d == domid for _, d in special.perms[1:]):
                perms = special.perms
                tree.set_perms(name, (perms[0], *(e for e in perms[1:] if e[1] != domid)))
        # Devices it served that outlived it (not owned by it) no longer count.
        self.quotas.forget_domain(domid)
        # Nothing of it may pass to a later domain with the same id: special nodes it
        # was given go back to the privileged domain (as C), a feature mask set for it
        # is dropped, and device models that acted for it act for nobody now.
        for name in ("@introduceDomain", "@releaseDomain"):
            special = tree.nodes.get(name)
            if special is not None and special.perms[0][1] == domid:
                tree.set_perms(name, ((special.perms[0][0], self.priv_domid), *special.perms[1:]))
        if self.pending_features.pop(domid, None) is not None:
            self.meta_changed()
        for other in self.domains.values():
            if other.target == domid:
                other.target = -1
                self.domain_changed(other.domid)
                if other.conn is not None:
                    other.conn.caller.target = -1
        if dom is not None:
            self.watches.fire_special("@releaseDomain", domid, tree, self.stale)
