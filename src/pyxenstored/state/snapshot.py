"""Engine state <-> state stream records (live update, crash-journal snapshots), sans I/O.

API for the runtime::

    records = dump(engine, handover=..., version=2)      # -> list of stream records
    data = save(engine, handover=..., version=2)         # encode(dump(...)), bytes
    restored = restore(records, Engine(...))             # into a freshly built engine
    restored = load(data, Engine(...))                   # restore(decode(data))
    ConfigTree(restored.engine, registry, adopt=True)    # settings come from the tree

``handover(conn)`` is the runtime's say about one connection (:class:`Handover`): a
socket's descriptor, a ring's local event-channel port, and output its transport holds
but has not written. Sockets it returns None for (or all sockets, without a callback:
a crash journal) are left out of the dump, with their watches and transactions.

:class:`Restored` lists every connection to re-adopt (:class:`Adopted`): sockets by
descriptor; domains by domid, local port and state (``serve`` its ring, ``broken``: it
broke the protocol, known but not served, ``none``: no ring, a daemon without a
hypervisor); a tail of a reply already partly written (``unsent``, to be written before
anything in ``conn.out``); and whether ``engine.feed(conn, b"")`` is owed once adopted
(``pending_input``: C carries requests it had read but not answered). Restoring does no
I/O, maps nothing and fires no watch: the runtime re-maps rings, re-binds ports, checks
which domains died meanwhile, and flushes ``conn.out``.

What the stream carries
-----------------------
Every committed node in pre-order (special ``@`` nodes first, as C), with value,
permissions and C's stale-grant flag; every connection with its unread input and
unwritten output; every watch (WATCH_DATA, or WATCH_DATA_EXTENDED for a depth in
version 2); open transactions (TRANSACTION_DATA); the global quotas
(GLOBAL_QUOTA_DATA) and each introduced domain's features (version 2) and limits where
they differ from the global ones (DOMAIN_DATA). Statistics nodes are written with the
value they have at the dump (C keeps them as plain nodes; ``ConfigTree(adopt=True)``
makes them computed again). The live settings under ``/tool/xenstored/`` are nodes, so
they travel with the tree and are applied once, by the adopting ConfigTree.

The format has no field for some of the engine's state. pyxenstored writes it in one
record of its own (``stream.PRIVATE_DATA``, skipped by C as an unknown type) holding a
JSON document; a stream with that record restores *exactly*: node generations, the
tree's change counters, when each domain was first known (stale grants, XSA-322),
grants naming domids above 65535, watch depths (also in version 1), each connection's
features and counters, each domain's toolstack port, target, features, shutdown state
and ring state, SET_FEATURE values waiting for INTRODUCE, backend devices earning an
allowance, the quota tables, conflict credit and history, statistics, and every open
transaction as it is: its observations (what it read, which facets, what listings
showed, compared by value at commit), overlay and request log. Such a transaction
commits or conflicts after the update exactly as it would have before. (One exception:
one that read a statistics node may get EAGAIN if the counter moved meanwhile, since
the node it saw is a computed one again after the update; a retry is always safe.)

Streams without it (C xenstored's) restore as C would restore them, with these rules:
generations are handed out in stream order (C does the same); every domain named in a
permission or a connection is known from before every node, so its grants count, and a
grant C flagged stale (its ``ignore`` flag) is dropped, since C never shows or honours
it either; a depth-less watch is unlimited; open transactions cannot be rebuilt from the
format (C ignores TRANSACTION_DATA and has no pending nodes to give), so each is
restored *doomed*: its commit answers EAGAIN and the client retries, never a commit
that silently lost what the transaction did; no backend device counts for an allowance
until dom0 creates it again (a guest's own look-alike directories must not earn one);
GLOBAL_QUOTA_DATA and DOMAIN_DATA quotas become setting nodes under
``/tool/xenstored/`` (a domain's value becomes an override only where it differs from
the global one), and in version 2 each domain's features are taken. C names a domain's
channel only by xenstored's own port (``Adopted.port``); ``Domain.port``, the
toolstack's port, is that number too until the next INTRODUCE.

Pending nodes: the format carries a transaction's nodes as NODE_DATA records with a
non-zero conn-id. C xenstored up to 4.22 does not look at conn-id and would store them
as committed nodes, so ``dump`` writes them only with ``pending_nodes=True`` (for
readers that follow the document); ``restore`` checks that they name a transaction
recorded before them and needs nothing from them.

Versions: version 1 has no WATCH_DATA_EXTENDED and no DOMAIN_DATA features; between
pyxenstored processes both travel in the private record, so a version 1 dump restores
exactly as a version 2 one does. A C reader of version 1 (4.17) sees every depth watch
unlimited (spurious events are allowed by the protocol) and skips GLOBAL_QUOTA_DATA and
DOMAIN_DATA: it keeps the quotas of its own command line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.caller import Caller
from ..core.confighooks import CONFIG_PREFIX
from ..core.connection import Connection
from ..core.domains import Domain
from ..core.engine import Engine
from ..core.quota import QUOTA_NAMES
from ..core.transactions import Transaction
from ..core.watches import Watch
from ..errors import Invalid
from ..liveconfig.registry import Registry
from ..protocol.paths import canonicalize
from ..protocol.perms import NONE, READ, Perms
from ..protocol.wire import DOMID_ANY, DOMID_FIRST_RESERVED, HEADER, HEADER_SIZE
from ..store.node import Node
from ..store.tree import Tree
from . import private
from .private import Doc
from .stream import (
    DOMID_INVALID,
    RING,
    SOCKET,
    TXN_READ,
    TXN_WRITTEN,
    UNLIMITED_DEPTH,
    ByteOrder,
    ConnectionData,
    DomainData,
    GlobalData,
    GlobalQuotaData,
    NodeData,
    Perm,
    PrivateData,
    Record,
    StateStreamError,
    TransactionData,
    UnknownRecord,
    WatchData,
    WatchDataExtended,
    decode,
    encode,
    paused_gc,
    record_name,
)

#: One path component (protocol.paths' character set).
_NAME = re.compile(r"[A-Za-z0-9_@\-]+\Z")

__all__ = [
    "Adopted",
    "Handover",
    "Restored",
    "dump",
    "load",
    "restore",
    "save",
]


@dataclass(frozen=True, slots=True)
class Handover:
    """What the runtime knows about one connection that the engine does not.

    Attributes:
        fd: a socket's descriptor (ignored for rings).
        port: a ring's event-channel port on xenstored's side (None: the domain's
            toolstack port, as a daemon without a hypervisor has nothing else).
        unsent: bytes already taken from ``conn.out`` but not written, in order.
        partial: how many leading bytes of ``unsent`` finish a message whose start was
            already written (0 if ``unsent`` starts with a whole message).
    """

    fd: int = -1
    port: int | None = None
    unsent: bytes = b""
    partial: int = 0


@dataclass
class Adopted:
    """One connection of a restored engine, for the runtime to take over.

    Attributes:
        conn: the engine's connection (None for a domain without a ring).
        kind: ``"socket"`` or ``"ring"``.
        fd: the socket's descriptor (-1 for rings).
        domid: the ring's domain.
        port: the ring's event-channel port on xenstored's side, as the stream has it.
        ring: ``"serve"``; ``"broken"`` (it broke the protocol: known, not served, its
            connection closed); ``"none"`` (no ring: the writer had no hypervisor).
        unique_id: the domain's unique id if the stream had one (C 4.21+).
        unsent: the rest of a reply already partly written: write it before anything
            in ``conn.out``.
        pending_input: ``data_in`` held complete requests or a partial one (already in
            ``conn.reader``): call ``engine.feed(conn, b"")`` once the connection is
            served so that complete requests are answered.
    """

    conn: Connection | None
    kind: str
    fd: int = -1
    domid: int | None = None
    port: int = 0
    ring: str = "serve"
    unique_id: int | None = None
    unsent: bytes = b""
    pending_input: bool = False


@dataclass
class Restored:
    """The result of :func:`restore`.

    Attributes:
        engine: the restored engine (live configuration still to be attached).
        connections: every connection to adopt, in stream order.
        listen_fd: GLOBAL_DATA's listening socket (-1: none).
        evtchn_fd: GLOBAL_DATA's event-channel descriptor (-1: none).
        exact: the stream had pyxenstored's own record (see the module docstring).
        notes: one line per thing not carried or ignored (for the log).
    """

    engine: Engine
    connections: list[Adopted] = field(default_factory=list)
    listen_fd: int = -1
    evtchn_fd: int = -1
    exact: bool = False
    notes: list[str] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------------
def _walk(tree: Tree) -> Iterator[tuple[str, Node]]:
    """Special nodes, then every node from ``/`` in pre-order (child order kept)."""
    nodes = tree.nodes
    for path, node in nodes.items():
        if path[:1] == "@":
            yield path, node
    stack = ["/"]
    while stack:
        path = stack.pop()
        found = nodes.get(path)
        if found is None:
            raise ValueError(f"the tree lists {path} as a child, but it has no node")
        yield path, found
        stack.extend(reversed(found.children))


def _messages(data: bytes) -> list[bytes]:
    """Whole wire messages (header + payload), in order."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < HEADER_SIZE:
            raise ValueError(f"{len(data) - pos} bytes left, less than a message header")
        length = HEADER.unpack_from(data, pos)[3]
        stop = pos + HEADER_SIZE + length
        if stop > len(data):
            raise ValueError(f"a message of {length} bytes runs past the pending output")
        out.append(data[pos:stop])
        pos = stop
    return out


# -- dump ------------------------------------------------------------------------------------
class _Dumper:
    def __init__(self, engine: Engine, version: int, extended_watches: bool) -> None:
        self.e = engine
        self.version = version
        self.extended = version >= 2 and extended_watches
        stale = engine.stale
        self.stale: Callable[[int, int], bool] = stale if stale is not None else _never
        self.records: list[Record] = []
        self.gens: list[int] = []
        self.wide: list[list[Any]] = []
        self.conns: list[dict[str, Any]] = []
        self.txns: list[dict[str, Any]] = []
        self.ids: dict[int, int] = {}  # engine connection id -> stream conn-id
        self.owners: dict[Perms, tuple[Perm, ...]] = {}  # owner-only lists, converted
        self.exact_txns = True
        self.engine_doc = True

    def perms(self, perms: Perms, gen: int, record_index: int) -> tuple[Perm, ...]:
        """Stream permissions: stale grants flagged; a domid beyond 16 bits becomes
        DOMID_INVALID flagged stale (it can grant nothing), exact in the private record."""
        if len(perms) == 1 and perms[0][1] <= 0xFFFF:  # no grant: nothing can be stale
            owner = self.owners.get(perms)
            if owner is None:
                owner = self.owners[perms] = (Perm(*perms[0]),)
            return owner
        out = []
        wide = False
        for i, (mode, domid) in enumerate(perms):
            if domid > 0xFFFF:
                wide = True
                out.append(Perm(mode, DOMID_INVALID, True))
            else:
                out.append(Perm(mode, domid, i > 0 and self.stale(domid, gen)))
        if wide and record_index >= 0:
            self.wide.append([record_index, [list(p) for p in perms]])
        return tuple(out)

    def nodes(self) -> None:
        for path, node in _walk(self.e.tree):
            self.records.append(
                NodeData(path, node.value, self.perms(node.perms, node.gen, len(self.gens)))
            )
            self.gens.append(node.gen)

    def connection(self, conn: Connection | None, dom: Domain | None, held: Handover) -> int:
        conn_id = len(self.conns) + 1
        x: dict[str, Any] = {"id": conn_id}
        data_in = b""
        data_out = held.unsent
        if conn is not None:
            self.ids[conn.id] = conn_id
            x |= {
                "domid": conn.caller.domid,
                "privileged": conn.caller.privileged,
                "features": conn.features,
                "next_txid": conn.next_txid,
                "requests": conn.requests,
                "events_dropped": conn.events_dropped,
            }
            if not conn.closed:
                data_in = conn.reader.pending_data
                data_out += b"".join(conn.out)
        if dom is None:
            rec = ConnectionData(
                conn_id,
                SOCKET,
                socket_fd=held.fd,
                data_in=data_in,
                data_out=data_out,
                partial_out=held.partial,
            )
        else:
            state = "none" if conn is None else "broken" if conn.closed else "serve"
            x |= {
                "port": dom.port,
                "born_gen": dom.born_gen,
                "dom_features": dom.features,
                "shutdown_reported": dom.shutdown_reported,
                "target": dom.target,
                "ring": state,
            }
            rec = ConnectionData(
                conn_id,
                RING,
                domid=dom.domid,
                target=dom.target if 0 <= dom.target <= 0xFFFF else DOMID_INVALID,
                evtchn=dom.port if held.port is None else held.port,
                data_in=data_in,
                data_out=data_out,
                partial_out=held.partial,
            )
        self.records.append(rec)
        if conn is not None and not conn.closed:
            self.watches(conn, conn_id, x)
        self.conns.append(x)
        return conn_id

    def watches(self, conn: Connection, conn_id: int, x: dict[str, Any]) -> None:
        depths = []
        for w in conn.watches.values():
            raw = w.path[w.strip :] if w.strip else w.path
            if w.depth < 0:
                self.records.append(WatchData(conn_id, raw, w.token))
                continue
            depths.append([raw, private.text(w.token), w.depth])
            if self.extended:
                # No path is anywhere near 65534 levels deep: a larger depth is the same.
                depth = min(w.depth, UNLIMITED_DEPTH - 1)
                self.records.append(WatchDataExtended(conn_id, raw, w.token, depth))
            else:
                self.records.append(WatchData(conn_id, raw, w.token))
        if depths:
            x["depths"] = depths

    def transaction(self, conn_id: int, txn: Transaction, pending: bool) -> None:
        self.records.append(TransactionData(conn_id, txn.id))
        self.txns.append(private.transaction_json(txn, conn_id, self.e.tree.nodes))
        if pending:
            self.pending_nodes(conn_id, txn)

    def pending_nodes(self, conn_id: int, txn: Transaction) -> None:
        """The format's view of a transaction: the nodes it read (as it saw them) and
        those it wrote or deleted."""
        view = txn.view
        for path, node in view.overlay.items():
            seen = view.observed.get(path)
            read = TXN_READ if seen is not None and seen[0] is not None else 0
            if node is None:
                self.records.append(NodeData(path, b"", (), conn_id, txn.id, 0))
            else:
                perms = self.perms(node.perms, node.gen, -1)
                self.records.append(
                    NodeData(path, node.value, perms, conn_id, txn.id, read | TXN_WRITTEN)
                )
        for path, (base, _) in view.observed.items():
            if base is None or path in view.overlay:
                continue
            perms = self.perms(base.perms, base.gen, -1)
            self.records.append(NodeData(path, base.value, perms, conn_id, txn.id, TXN_READ))

    def domain_data(self, dom: Domain) -> DomainData:
        """A domain's features (version 2) and its limits where they are not the
        global ones (overrides, classes and device allowance included)."""
        e = self.e
        quotas: list[tuple[str, int]] = []
        if dom.domid != e.priv_domid:
            for name in QUOTA_NAMES:
                value = e.quota(dom.domid, name)
                if value != e.limits.value(name):
                    quotas.append((name, value))
        return DomainData(dom.domid, dom.features if self.version >= 2 else 0, tuple(quotas))

    def document(self) -> bytes:
        if not self.engine_doc:
            # Only what the crash journal needs of its changed domains (not restorable).
            doc: dict[str, Any] = {"connections": self.conns}
            return json.dumps(doc, separators=(",", ":")).encode("ascii")
        doc = private.engine_json(self.e)
        doc |= {
            "gens": self.gens,
            "wide_perms": self.wide,
            "connections": self.conns,
            "transactions": self.txns if self.exact_txns else [],
        }
        return json.dumps(doc, separators=(",", ":")).encode("ascii")


def _never(domid: int, gen: int) -> bool:
    return False


def dump(
    engine: Engine,
    *,
    handover: Callable[[Connection], Handover | None] | None = None,
    version: int = 2,
    transactions: bool = True,
    pending_nodes: bool = False,
    extended_watches: bool = True,
    listen_fd: int = -1,
    evtchn_fd: int = -1,
    nodes: bool = True,
    exact_transactions: bool = True,
    domains: Collection[int] | None = None,
    engine_doc: bool = True,
) -> list[Record]:
    """The records of ``engine``'s whole state, in the order C xenstored writes them
    (see the module docstring for what is carried and how).

    Args:
        engine: the engine to dump (left untouched).
        handover: the runtime's part of each connection (:class:`Handover`); sockets it
            returns None for, or all sockets if it is None, are left out.
        version: the stream version the records are meant for (1 or 2).
        transactions: write open transactions (False: they are dropped, C's ``-F``).
        pending_nodes: also write each transaction's nodes as the format describes
            them (NODE_DATA with a conn-id). C xenstored would take them for committed
            nodes: never for a stream a C xenstored may read.
        extended_watches: in version 2, a watch with a depth is WATCH_DATA_EXTENDED
            as the document lays it out. False writes WATCH_DATA (no limit: spurious
            events are allowed) for a C reader: 4.21 skips WATCH_DATA_EXTENDED (the
            watch would be lost) and 4.22 reads it from the wrong offset. The depth
            still travels in pyxenstored's own record.
        listen_fd, evtchn_fd: GLOBAL_DATA's descriptors.
        nodes: write the nodes (False: everything else, as the crash journal records
            the engine beside its tree; such records restore with an empty tree).
        exact_transactions: write each open transaction's state in the private record
            (False: they restore doomed, failing with EAGAIN at commit).
        domains: write only these domains (their connections, watches, transactions
            and DOMAIN_DATA); None: all. The crash journal records changed ones.
        engine_doc: False leaves the engine-wide part out of pyxenstored's record (it
            then holds the connections' part only, and the records cannot be
            restored alone: the crash journal merges them with a whole record).

    Raises:
        ValueError: a ring connection that belongs to no domain (the format names ring
            connections by domain), or an inconsistent tree.
    """
    if version not in (1, 2):
        raise ValueError(f"unsupported state stream version {version}")
    d = _Dumper(engine, version, extended_watches)
    d.exact_txns = exact_transactions
    d.engine_doc = engine_doc
    with paused_gc():
        return _dump(d, handover, transactions, pending_nodes, listen_fd, evtchn_fd, nodes, domains)


def _dump(
    d: _Dumper,
    handover: Callable[[Connection], Handover | None] | None,
    transactions: bool,
    pending_nodes: bool,
    listen_fd: int,
    evtchn_fd: int,
    nodes: bool = True,
    domains: Collection[int] | None = None,
) -> list[Record]:
    e = d.e
    d.records.append(GlobalData(listen_fd, evtchn_fd))
    if d.engine_doc:
        d.records.append(
            GlobalQuotaData(tuple((name, e.limits.value(name)) for name in QUOTA_NAMES))
        )
    doms: Iterable[Domain] = e.domains.values()
    conns: Iterable[Connection] = e.connections.values()
    if domains is not None:
        # Only these (the crash journal's changed domains): cost by them, not by all.
        doms = [e.domains[x] for x in domains if x in e.domains]
        conns = [c for c in (x.conn for x in doms) if c is not None and c.id in e.connections]
    by_conn = {dom.conn.id: dom for dom in doms if dom.conn is not None}
    written: list[tuple[Connection, int]] = []
    for conn in conns:
        held = handover(conn) if handover is not None else None
        if conn.kind == "socket":
            if held is None:
                continue
            written.append((conn, d.connection(conn, None, held)))
            continue
        dom = by_conn.get(conn.id)
        if dom is None:
            raise ValueError(f"{conn!r} is a ring connection of no domain")
        written.append((conn, d.connection(conn, dom, held or Handover())))
    # Domains whose ring broke the protocol (their connection is closed) or that have
    # none: C writes a connection for them too, so that they stay known.
    for dom in doms:
        if dom.conn is None or dom.conn.closed:
            held = handover(dom.conn) if handover is not None and dom.conn is not None else None
            d.connection(dom.conn, dom, held or Handover())
    if nodes:
        d.nodes()
    if transactions:
        for conn, conn_id in written:
            for txn in conn.transactions.values():
                d.transaction(conn_id, txn, pending_nodes)
    for dom in doms:
        d.records.append(d.domain_data(dom))
    d.records.append(PrivateData(private.KIND, d.document()))
    return d.records


def save(
    engine: Engine,
    *,
    byteorder: ByteOrder = "little",
    version: int = 2,
    **kwargs: Any,
) -> bytes:
    """``encode(dump(engine, version=version, **kwargs), version, byteorder)``."""
    return encode(dump(engine, version=version, **kwargs), version, byteorder)


# -- restore ---------------------------------------------------------------------------------
class _Restorer:
    def __init__(self, engine: Engine, records: list[Record]) -> None:
        self.e = engine
        self.records = records
        self.out = Restored(engine)
        self.x: dict[str, Any] | None = None
        self.conns: dict[int, tuple[Connection | None, Adopted]] = {}
        self.conn_x: dict[int, dict[str, Any]] = {}
        self.txns: set[tuple[int, int]] = set()
        #: permission lists converted so far (nodes share them, as the engine's do)
        self.perm_lists: dict[tuple[Perm, ...], Perms] = {}

    @staticmethod
    def bad(index: int, rec: Record, what: str) -> StateStreamError:
        return StateStreamError(what, record=f"record {index} ({_name(rec)})")

    # -- order and references -------------------------------------------------------------
    def check_order(self) -> None:
        """Records that others depend on come first (the document's rule), each
        connection and transaction is recorded once, and at most one private record."""
        conns: set[int] = set()
        txns: set[tuple[int, int]] = set()
        ours = 0
        for i, rec in enumerate(self.records):
            if isinstance(rec, ConnectionData):
                if rec.conn_id == 0 or rec.conn_id in conns:
                    raise self.bad(i, rec, f"conn-id {rec.conn_id} is 0 or used twice")
                conns.add(rec.conn_id)
            elif isinstance(rec, WatchData | WatchDataExtended | TransactionData):
                if rec.conn_id not in conns:
                    raise self.bad(i, rec, f"connection {rec.conn_id} is not recorded before")
                if isinstance(rec, TransactionData):
                    key = (rec.conn_id, rec.tx_id)
                    if rec.tx_id == 0 or key in txns:
                        raise self.bad(i, rec, f"transaction {rec.tx_id} is 0 or recorded twice")
                    txns.add(key)
            elif isinstance(rec, NodeData) and rec.conn_id:
                if (rec.conn_id, rec.tx_id) not in txns:
                    raise self.bad(
                        i, rec, f"pending node of transaction {rec.tx_id} not recorded before"
                    )
            elif isinstance(rec, PrivateData) and rec.kind == private.KIND:
                ours += 1
                if ours > 1:
                    raise self.bad(i, rec, "a second pyxenstored record")

    def load_private(self) -> None:
        for rec in self.records:
            if isinstance(rec, PrivateData) and rec.kind == private.KIND:
                try:
                    doc = json.loads(rec.data)
                except (ValueError, RecursionError) as err:
                    raise StateStreamError(f"not JSON: {err}", record=Doc.where) from None
                doc = Doc.dict_(doc, "the document")
                if doc.get("format") != private.FORMAT:
                    self.out.notes.append(
                        f"pyxenstored record of format {doc.get('format')!r} not understood: "
                        "restored as a foreign stream"
                    )
                    return
                self.x = doc
                self.out.exact = True
                for c in Doc.list_(doc.get("connections", []), "connections"):
                    c = Doc.dict_(c, "a connection")
                    self.conn_x[Doc.nat(c.get("id"), "a connection id")] = c
            elif isinstance(rec, PrivateData):
                self.out.notes.append(f"pyxenstored record of kind {rec.kind} ignored")
            elif isinstance(rec, UnknownRecord):
                self.out.notes.append(f"{record_name(rec.type)} record ignored")

    # -- tree -----------------------------------------------------------------------------
    def perms(self, index: int, rec: NodeData, wide: dict[int, Perms], n: int) -> Perms:
        if n in wide:
            return wide[n]
        perms = self.perm_lists.get(rec.perms)
        if perms is not None:
            return perms
        if not rec.perms:
            raise self.bad(index, rec, f"{rec.path} has no permissions")
        if self.x is not None:
            perms = tuple((p.mode, p.domid) for p in rec.perms)
        else:
            # C's stale flag: such a grant is never shown nor honoured by C; drop it.
            owner = rec.perms[0]
            grants = ((p.mode, p.domid) for p in rec.perms[1:] if not p.stale)
            perms = ((owner.mode, owner.domid), *grants)
        self.perm_lists[rec.perms] = perms
        return perms

    def tree(self) -> None:
        e = self.e
        x = self.x
        committed = [
            (i, r) for i, r in enumerate(self.records) if isinstance(r, NodeData) and not r.conn_id
        ]
        wide: dict[int, Perms] = {}
        gens: list[int] | None = None
        if x is not None:
            gens = [Doc.gen(g, "a generation") for g in Doc.list_(x.get("gens"), "gens")]
            if len(gens) != len(committed):
                raise Doc.bad(f"{len(gens)} generations for {len(committed)} committed nodes")
            for n, perms in Doc.pairs(x.get("wide_perms", []), "wide_perms"):
                wide[Doc.nat(n, "a node index")] = Doc.perms(perms, "wide_perms")
        root = next(((i, r) for i, r in committed if r.path == "/"), None)
        # As the engine builds it: the privileged domain is the root's owner of record
        # (its nodes are not indexed for domain death), whoever owns "/" now.
        tree = Tree(((NONE, e.priv_domid),))
        if root is not None:
            tree.set_perms("/", self.perms(root[0], root[1], wide, committed.index(root)))
        nodes = tree.nodes
        seen_root = False
        for n, (i, rec) in enumerate(committed):
            path = rec.path
            perms = self.perms(i, rec, wide, n)
            if path == "/":
                if seen_root:
                    raise self.bad(i, rec, "/ recorded twice")
                seen_root = True
                if rec.value:
                    tree.set_value("/", rec.value)
                continue
            if path in nodes:
                raise self.bad(i, rec, f"{path} recorded twice")
            if path[:1] == "@":
                _check_special(self, i, rec, path)
                tree.create_special(path, perms)
                nodes[path].value = rec.value
                continue
            # The parent was checked before (or is "/"): only the last name is left.
            cut = path.rfind("/")
            parent = path[:cut] if cut > 0 else "/"
            if cut < 0 or (cut and path[cut - 1] == "/") or not _NAME.match(path, cut + 1):
                raise self.bad(i, rec, f"bad path {path!r}")
            if parent not in nodes:
                raise self.bad(i, rec, f"the parent of {path} is not recorded before it")
            tree.attach(path, rec.value, perms, 0)
        # Generations: exactly as they were, or handed out in stream order as C does.
        for n, (_, rec) in enumerate(committed):
            nodes[rec.path].gen = gens[n] if gens is not None else n + 1
        if x is not None:
            counters = Doc.dict_(x.get("tree"), "tree")
            tree.gen = Doc.nat(counters.get("gen"), "tree gen")
            tree.changes = Doc.nat(counters.get("changes"), "tree changes")
        else:
            tree.gen = tree.changes = len(committed)
        pd = e.priv_domid
        for path, perms in (
            ("@introduceDomain", ((NONE, pd),)),
            ("@releaseDomain", ((NONE, pd), (READ, DOMID_ANY))),
        ):
            if path not in nodes:
                tree.create_special(path, perms)
        for path in ("/tool", "/tool/xenstored"):
            if path not in nodes:
                tree.create(path, b"", ((NONE, pd),))
        e.tree = tree

    # -- connections, domains, watches ----------------------------------------------------------
    def connections(self) -> None:
        e = self.e
        for i, rec in enumerate(self.records):
            if not isinstance(rec, ConnectionData):
                continue
            x = self.conn_x.get(rec.conn_id, {})
            features = Doc.nat(x.get("features", e.features), "features")
            adopted = Adopted(None, "socket", unique_id=rec.unique_id)
            conn: Connection | None
            if rec.conn_type == SOCKET:
                caller = Caller(
                    Doc.nat(x.get("domid", e.priv_domid), "domid"),
                    Doc.bool_(x.get("privileged", True), "privileged"),
                )
                conn = e.connect(caller, "socket", features)
                adopted.fd = rec.socket_fd
            else:
                conn = self.domain(i, rec, x, features, adopted)
            adopted.conn = conn
            if rec.partial_out:
                adopted.unsent = rec.data_out[: rec.partial_out]
            if conn is not None:
                conn.next_txid = Doc.nat(x.get("next_txid", 1), "next_txid")
                conn.requests = Doc.nat(x.get("requests", 0), "requests")
                conn.events_dropped = Doc.nat(x.get("events_dropped", 0), "events_dropped")
            if conn is not None and not conn.closed:
                try:
                    conn.out = _messages(rec.data_out[rec.partial_out :])
                except ValueError as err:
                    raise self.bad(i, rec, f"pending output: {err}") from None
                conn.out_bytes = sum(len(m) for m in conn.out)
                if conn.out:
                    e.woken.add(conn)
                if rec.data_in:
                    conn.reader.preload(rec.data_in)
                    adopted.pending_input = True
            self.conns[rec.conn_id] = (conn, adopted)
            self.out.connections.append(adopted)

    def domain(
        self, i: int, rec: ConnectionData, x: dict[str, Any], features: int, adopted: Adopted
    ) -> Connection | None:
        e = self.e
        domid = rec.domid
        if domid in e.domains:
            raise self.bad(i, rec, f"domain {domid} has two connections")
        state = Doc.str_(x.get("ring", "serve"), "ring")
        if state not in ("serve", "broken", "none"):
            raise Doc.bad(f"ring state {state!r}")
        target = rec.target if rec.target != DOMID_INVALID else -1
        target = Doc.int_(x.get("target", target), "target")
        conn = None
        if state != "none":
            conn = e.connect(Caller(domid, domid == e.priv_domid, target), "ring", features)
        born = e.births.get(domid, 0)
        dom = Domain(
            domid,
            Doc.nat(x.get("port", rec.evtchn), "port"),
            conn,
            Doc.nat(x.get("born_gen", born), "born_gen"),
            Doc.nat(x.get("dom_features", features), "dom_features"),
        )
        dom.target = target
        dom.shutdown_reported = Doc.bool_(x.get("shutdown_reported", False), "shutdown_reported")
        e.domains[domid] = dom
        if self.x is None:
            e.births.setdefault(domid, 0)
        if state == "broken" and conn is not None:
            e.disconnect(conn)
        adopted.kind = "ring"
        adopted.domid = domid
        adopted.port = rec.evtchn
        adopted.ring = state
        return conn

    def watches(self) -> None:
        depths: dict[int, dict[tuple[str, bytes], int]] = {}
        for conn_id, x in self.conn_x.items():
            for entry in Doc.list_(x.get("depths", []), "depths"):
                raw, token, depth = Doc.list_(entry, "a watch depth", 3)
                key = (Doc.str_(raw, "watch path"), Doc.bytes_(token, "token"))
                depths.setdefault(conn_id, {})[key] = Doc.nat(depth, "depth")
        registry = self.e.watches
        for i, rec in enumerate(self.records):
            if not isinstance(rec, WatchData | WatchDataExtended):
                continue
            conn = self.conns[rec.conn_id][0]
            if conn is None or conn.closed:
                raise self.bad(i, rec, f"connection {rec.conn_id} is not served")
            caller = conn.caller
            try:
                path = canonicalize(rec.path.encode("ascii"), caller.home, True, 0)
            except (Invalid, UnicodeEncodeError):
                raise self.bad(i, rec, f"bad watch path {rec.path!r}") from None
            if (path, rec.token) in conn.watches:
                raise self.bad(i, rec, f"watch {rec.path} {rec.token!r} recorded twice")
            depth = -1
            if isinstance(rec, WatchDataExtended) and rec.depth != UNLIMITED_DEPTH:
                depth = rec.depth
            depth = depths.get(rec.conn_id, {}).get((rec.path, rec.token), depth)
            strip = 0 if rec.path[:1] in ("/", "@") else len(caller.home) + 1
            registry.add(Watch(conn, path, rec.token, strip, depth))

    # -- transactions ---------------------------------------------------------------------------
    def transactions(self) -> None:
        exact: dict[tuple[int, int], dict[str, Any]] = {}
        if self.x is not None:
            for t in Doc.list_(self.x.get("transactions", []), "transactions"):
                t = Doc.dict_(t, "a transaction")
                exact[(Doc.nat(t.get("conn"), "conn"), Doc.nat(t.get("id"), "id"))] = t
        doomed = 0
        for i, rec in enumerate(self.records):
            if not isinstance(rec, TransactionData):
                continue
            conn = self.conns[rec.conn_id][0]
            if conn is None or conn.closed:
                raise self.bad(i, rec, f"connection {rec.conn_id} is not served")
            t = exact.get((rec.conn_id, rec.tx_id))
            if t is None:
                txn = Transaction(rec.tx_id, self.e.tree, self.e.conflicts)
                txn.view.doomed = True
                doomed += 1
            else:
                txn = private.transaction_from_json(rec.tx_id, t, self.e.tree)
            self.e.transaction_started(conn, txn)
            if conn.next_txid <= rec.tx_id and rec.conn_id not in self.conn_x:
                conn.next_txid = (rec.tx_id + 1) & 0xFFFFFFFF or 1
        if doomed:
            self.out.notes.append(
                f"{doomed} open transaction(s) without their state: restored to fail "
                "with EAGAIN at commit (the client retries)"
            )

    # -- quotas, domains' own data, the engine record -------------------------------------------
    def foreign_data(self) -> None:
        """A stream without pyxenstored's record: births for every domain it names,
        and its quota records as setting nodes."""
        e = self.e
        for path, node in e.tree.nodes.items():
            if path[:1] == "@":
                continue
            for _, domid in node.perms:
                if domid < DOMID_FIRST_RESERVED and domid != e.priv_domid:
                    e.births.setdefault(domid, 0)
        registry = Registry()
        for i, rec in enumerate(self.records):
            if isinstance(rec, GlobalQuotaData):
                for name, value in (*rec.domain, *rec.global_only):
                    self.global_quota(registry, name, value)
            elif isinstance(rec, DomainData):
                self.domain_quotas(i, rec)

    def global_quota(self, registry: Registry, name: str, value: int) -> None:
        setting = "quota-soft/memory" if name == "soft-memory" else f"quota/{name}"
        if name not in QUOTA_NAMES:
            self.out.notes.append(f"global quota {name!r} ignored")
            return
        try:
            registry.parse(setting, str(value))
        except Invalid:
            self.out.notes.append(f"global quota {name}={value} ignored: out of range")
            return
        setattr(self.e.limits, name.replace("-", "_"), value)
        _config_node(self.e, setting, str(value))

    def domain_quotas(self, i: int, rec: DomainData) -> None:
        e = self.e
        dom = e.domains.get(rec.domid)
        if rec.features:
            if dom is not None:
                dom.features = rec.features
                if dom.conn is not None:
                    dom.conn.features = rec.features
            elif rec.features != e.features:
                e.pending_features[rec.domid] = rec.features
        for name, value in rec.quotas:
            if name not in QUOTA_NAMES:
                self.out.notes.append(f"quota {name!r} of domain {rec.domid} ignored")
                continue
            rel = f"domain/{rec.domid}/quota/{name}"
            if value != e.limits.value(name):
                e.quotas.set_override(rec.domid, name, value)
                _config_node(e, rel, str(value))
            else:
                e.quotas.clear_override(rec.domid, name)
                if CONFIG_PREFIX + rel in e.tree.nodes:
                    e.tree.remove(CONFIG_PREFIX + rel)

    def run(self) -> Restored:
        self.check_order()
        self.load_private()
        self.tree()
        if self.x is not None:
            self.out.notes += private.apply_engine(self.x, self.e)
        self.connections()
        self.watches()
        self.transactions()
        if self.x is None:
            self.foreign_data()
        for rec in self.records:
            if isinstance(rec, GlobalData):
                self.out.listen_fd = rec.socket_fd
                self.out.evtchn_fd = rec.evtchn_fd
        return self.out


def _name(rec: Record) -> str:
    if isinstance(rec, NodeData):
        return f"NODE_DATA {rec.path}"
    if isinstance(rec, UnknownRecord):
        return record_name(rec.type)
    return type(rec).__name__


def _check_special(r: _Restorer, i: int, rec: NodeData, path: str) -> None:
    """A special node's path must be canonical."""
    try:
        ok = canonicalize(path.encode("ascii"), "", True, 0) == path
    except (Invalid, UnicodeEncodeError):
        ok = False
    if not ok:
        raise r.bad(i, rec, f"bad path {path!r}")


def _config_node(engine: Engine, rel: str, text: str) -> None:
    """Create or set ``CONFIG_PREFIX + rel`` directly in the tree (no watch fires)."""
    tree = engine.tree
    perms: Perms = ((NONE, engine.priv_domid),)
    path = CONFIG_PREFIX + rel
    missing = []
    p = path
    while p not in tree.nodes:
        missing.append(p)
        p = p[: p.rfind("/")]
    for p in reversed(missing):
        tree.create(p, b"", perms)
    tree.set_value(path, text.encode("ascii"))


def _fresh(engine: Engine) -> None:
    if engine.connections or engine.domains or engine.open_txns or engine.config is not None:
        raise ValueError(
            "restore needs a freshly built engine (no connections, domains, "
            "transactions or live configuration)"
        )


def restore(records: Iterable[Record], engine: Engine | None = None) -> Restored:
    """Rebuild an engine from ``records`` (see the module docstring).

    Args:
        records: the records of a stream (``stream.decode``'s second item).
        engine: a freshly built Engine (its backend, privileged domain and limits as the
            daemon's options say); a new ``Engine()`` if None.

    Raises:
        StateStreamError: the records are inconsistent (a watch of an unknown
            connection, a node whose parent is unknown, a corrupt private record...).
            Nothing is half-restored: the engine must then be discarded.
        ValueError: ``engine`` is not fresh.
    """
    engine = engine if engine is not None else Engine()
    _fresh(engine)
    with paused_gc():
        return _Restorer(engine, list(records)).run()


def load(data: bytes, engine: Engine | None = None) -> Restored:
    """``restore(decode(data)[1], engine)``."""
    return restore(decode(data)[1], engine)
