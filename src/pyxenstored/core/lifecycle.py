"""The domain life cycle: which domains exist and since when (stale grants,
XSA-322/XSA-417), introduction, connection resets, and the cleanup when a domain dies or
is released (xenstore-protocol.md §3.6, §5.6).

:class:`DomainLifecycle` is a mixin of :class:`~pyxenstored.core.engine.Engine`; the
entry points are functions of an engine, called by the INTRODUCE and RELEASE handlers and
by the runtime: :func:`introduce_domain` (also dom0's own ring at start-up),
:func:`release_domain`, and :func:`domain_died` / :func:`domain_shut_down`
(VIRQ_DOM_EXC).

Contract: a domain is introduced once (``@introduceDomain``), may be re-introduced any
number of times (its connection and ring are reset, nothing fires), and leaves exactly
once, by RELEASE or death, which deletes the nodes it owned, strips its grants everywhere
and fires ``@releaseDomain``. A guest that breaks the ring protocol is only cut off: it
leaves when it dies (XSA-325).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import NoEntry
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

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "DomainLifecycle",
    "domain_died",
    "domain_shut_down",
    "introduce_domain",
    "release_domain",
]


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


def introduce_domain(e: Engine, domid: int, port: int, *, reset: bool = True) -> Domain:
    """INTRODUCE (first or repeated), also used by the runtime for dom0's own ring.

    A first introduction maps and binds through the backend, advertises the domain's
    features (SET_FEATURE may have masked them), records the domain and fires
    ``@introduceDomain`` unless it is the privileged domain. A repeat only rebinds the
    event channel. Then, with ``reset`` (every INTRODUCE; not for a ring the daemon
    attaches to at start-up, whose guest may already be waiting), the connection loses
    its watches, transactions, queued output and partial input, the four ring indexes
    become 0 and a pending RECONNECT is completed (xenstore-protocol.md §5.6).

    Raises:
        NoEntry: the hypervisor does not know the domain.
        XenstoreError: the backend could not map or bind.
    """
    dom = e.domains.get(domid)
    e.domain_changed(domid)
    if dom is None:
        if not e.backend.exists(domid):
            raise NoEntry("no such domain")
        features = e.pending_features.get(domid, e.features)
        conn = e.backend.introduce(domid, port, features)
        if e.pending_features.pop(domid, None) is not None:
            e.meta_changed()
        dom = Domain(domid, port, conn, e.domain_born(domid), features)
        e.domains[domid] = dom
        if e.on_domain is not None:
            e.on_domain(domid, True)
        if domid != e.priv_domid:
            e.watches.fire_special("@introduceDomain", domid, e.tree, e.stale)
    else:
        dom.port = port
        e.backend.reintroduce(dom, port)
    if reset:
        if dom.conn is not None and not dom.conn.closed:
            e.reset_connection(dom.conn)
        e.backend.reset(dom)
    return dom


def release_domain(e: Engine, domid: int) -> None:
    """RELEASE, or the death of a domain: stop serving its ring, then delete the nodes
    it owned, strip its grants and fire ``@releaseDomain`` (if it was introduced)."""
    dom = e.domains.get(domid)
    if dom is not None:
        e.backend.release(dom)
    e.destroy_domain(domid)


def domain_shut_down(e: Engine, domid: int) -> None:
    """The hypervisor says ``domid`` shut down: ``@releaseDomain`` once (RESUME re-arms)."""
    dom = e.domains.get(domid)
    if dom is None or dom.shutdown_reported or domid == e.priv_domid:
        return
    dom.shutdown_reported = True
    e.domain_changed(domid)
    e.watches.fire_special("@releaseDomain", domid, e.tree, e.stale)


def domain_died(e: Engine, domid: int) -> None:
    """The hypervisor says ``domid`` is dead (or dying): forget it as RELEASE would."""
    if domid == e.priv_domid:
        return
    if domid in e.domains or domid in e.births:
        release_domain(e, domid)
