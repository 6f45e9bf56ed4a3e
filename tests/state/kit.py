"""Engines with live configuration driven sans I/O, a fingerprint of everything an engine
holds, and dump/restore helpers (tests/state).

The fingerprint is what "equal state" means in these tests: every node (value,
permissions, child order, generation, whether computed), the tree's counters and
indexes, domains, connections in order (identity, features, counters, queued output,
unread input, watches), every open transaction as it stands (observations, overlay,
log, and which of its bases are the live nodes themselves), quotas, settings, conflict
credit and history, statistics. Connection ids are left out: a restored engine numbers
its connections afresh.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from kit.engine import FakeBackend

from pyxenstored.core.connection import Connection
from pyxenstored.core.engine import Engine
from pyxenstored.core.transactions import Transaction
from pyxenstored.liveconfig.registry import Registry
from pyxenstored.liveconfig.tree import ConfigTree
from pyxenstored.protocol.wire import HEADER, Op
from pyxenstored.state import snapshot
from pyxenstored.state.stream import Record, decode, encode
from pyxenstored.store.node import Node


def new_engine(config: bool = True, **kw: Any) -> Engine:
    """An engine on the kit's :class:`FakeBackend`, with live configuration unless
    ``config`` is False."""
    backend = FakeBackend()
    engine = Engine(backend=backend, **kw)
    backend.engine = engine
    if config:
        ConfigTree(engine, Registry())
    return engine


def fresh_like(engine: Engine) -> Engine:
    """A freshly built engine as the daemon would build it again (same options)."""
    backend = FakeBackend()
    fresh = Engine(backend=backend, priv_domid=engine.priv_domid)
    backend.engine = fresh
    return fresh


def handover(conn: Connection) -> snapshot.Handover:
    """Every socket handed over, with a made-up descriptor."""
    return snapshot.Handover(fd=1000 + conn.id)


def round_trip(
    engine: Engine, version: int = 2, byteorder: str = "little", **kw: Any
) -> snapshot.Restored:
    """Dump, encode, decode and restore into a fresh engine, then adopt the settings."""
    data = snapshot.save(
        engine,
        version=version,
        byteorder=byteorder,  # type: ignore[arg-type]
        handover=handover,
        **kw,
    )
    restored = snapshot.load(data, fresh_like(engine))
    if engine.config is not None:
        ConfigTree(restored.engine, Registry(), adopt=True)
    return restored


def records_of(engine: Engine, **kw: Any) -> list[Record]:
    return decode(encode(snapshot.dump(engine, handover=handover, **kw)))[1]


# -- fingerprint ---------------------------------------------------------------------------------
def _node(n: Node | None) -> Any:
    if n is None:
        return None
    # A node a transaction shares is its class's shared twin (store.node): that says
    # who holds it, not what it is, and a copy read back from a stream is not shared.
    cls = type(n).__mro__[1] if n.shared else type(n)
    return (cls.__name__, n.value, n.perms, tuple(n.children), n.gen)


def _ref(n: Node | None, live: Node | None) -> Any:
    return "live" if n is not None and n is live else _node(n)


def _txn(txn: Transaction, nodes: dict[str, Node]) -> Any:
    v = txn.view
    return {
        "id": txn.id,
        "start": txn.start_changes,
        "failed": txn.failed,
        "bytes": txn.bytes,
        "ops": [(h.__name__, p) for h, p in txn.ops],
        "rebase": v.rebase,
        "doomed": v.doomed,
        "observed": [(p, _ref(n, nodes.get(p)), f) for p, (n, f) in v.observed.items()],
        "bases": [(p, _ref(n, nodes.get(p))) for p, n in v.bases.items()],
        "overlay": [(p, _node(n)) for p, n in v.overlay.items()],
        "dirty": list(v.dirty.items()),
        "listed": [(p, names, sorted(own)) for p, (names, own) in v.listed.items()],
        "implicit": list(v.implicit_parents.items()),
        "shared": all(
            n.shared for p, (n, _) in v.observed.items() if n is not None and n is nodes.get(p)
        ),
    }


def _conn(c: Connection, nodes: dict[str, Node]) -> Any:
    return {
        "kind": c.kind,
        "caller": (c.caller.domid, c.caller.privileged, c.caller.target, c.caller.home),
        "features": c.features,
        "next_txid": c.next_txid,
        "closed": c.closed,
        "requests": c.requests,
        "events_dropped": c.events_dropped,
        "out": list(c.out),
        "out_bytes": c.out_bytes,
        "pending_in": c.reader.pending_data,
        "watches": [(w.path, w.token, w.strip, w.depth) for w in c.watches.values()],
        "watch_bytes": c.watch_bytes,
        "txns": [_txn(t, nodes) for t in c.transactions.values()],
    }


def fingerprint(e: Engine) -> dict[str, Any]:
    tree = e.tree
    nodes = tree.nodes
    conns = list(e.connections.values())
    index = {c.id: i for i, c in enumerate(conns)}
    q = e.quotas
    g = e.conflict_guard
    limits = asdict(e.limits)
    return {
        "nodes": {p: _node(n) for p, n in nodes.items()},
        "tree": (tree.gen, tree.changes, tree.root_owner),
        "accounts": (tree.owner_count, tree.owner_bytes, tree.owned, tree.granted),
        "births": e.births,
        "pending_features": e.pending_features,
        "engine": (e.priv_domid, e.conflicts, e.features, e.event_queue_max),
        "limits": limits,
        "quotas": (q.overrides, q.classes, q.domain_class, q.per_device, q.device_paths, q.devices),
        "guard": (g.burst, g.aggregate, g.credit, list(g.paused_queue), g.blamed, list(g.history)),
        "stats": (e.stats, e.op_counts),
        "domains": {
            d: (
                dom.port,
                dom.target,
                dom.features,
                dom.shutdown_reported,
                dom.born_gen,
                None if dom.conn is None else index.get(dom.conn.id, "closed"),
                None if dom.conn is None or dom.conn.id in index else _conn(dom.conn, nodes),
            )
            for d, dom in e.domains.items()
        },
        "connections": [_conn(c, nodes) for c in conns],
        "open_txns": sorted((index[c.id], t.id) for c in conns for t in c.transactions.values()),
        "settings": None if e.config is None else dict(e.config.registry.values),  # type: ignore[attr-defined]
        "problems": e.check(),
    }


# -- messages -------------------------------------------------------------------------------------
def messages(out: list[bytes]) -> list[tuple[int, int, int, bytes]]:
    """Decoded messages of a connection's output."""
    data = b"".join(out)
    got = []
    pos = 0
    while pos < len(data):
        op, rid, tx, length = HEADER.unpack_from(data, pos)
        got.append((op, rid, tx, data[pos + 16 : pos + 16 + length]))
        pos += 16 + length
    assert pos == len(data)
    return got


def is_event(msg: tuple[int, int, int, bytes]) -> bool:
    return msg[0] == Op.WATCH_EVENT
