"""pyxenstored's own record: the engine state the format has no field for, as JSON.

``state.snapshot`` writes one ``stream.PrivateData`` record of kind :data:`KIND` whose
data is a JSON document (ASCII; bytes appear as strings of code points 0-255):

* ``format`` (:data:`FORMAT`), ``priv_domid``; the tree's ``gen`` and ``changes``;
  ``gens``, the generation of each committed NODE_DATA record in stream order;
  ``wide_perms``, exact permissions of the records whose domids exceed 16 bits;
* ``births``, ``pending_features``, the conflict mode, ring features and event queue
  bound, the quota limits and tables (overrides, classes, domain classes, per-device
  allowance, backend devices), the conflict guard (credit, pauses, blame, history),
  statistics;
* ``connections``: per stream conn-id, the caller, features, counters and transaction
  id to come, watch depths, and for domains their toolstack port, target, features,
  first generation, shutdown report and ring state;
* ``transactions``: per (conn-id, tx-id), the whole transaction: request log,
  observations (a base is ``null`` for "seen absent", ``"live"`` for the live node
  itself, else a copy ``[value, perms, children, gen]``), overlay, changed facets,
  listings, implicit parents, and its flags.

Reading is strict: anything of the wrong type or out of range is a StateStreamError
naming the field, never a half-applied document.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from ..core.engine import Engine
from ..core.optable import MUTATES, TABLE
from ..core.quota import RULES, Limits
from ..core.transactions import COALESCE, CONFLICT_MODES, GENERATION, Transaction
from ..protocol.perms import Perms
from ..store.node import Node
from ..store.tree import Tree
from .stream import StateStreamError

__all__ = [
    "FORMAT",
    "KIND",
    "Doc",
    "apply_engine",
    "engine_json",
    "text",
    "transaction_from_json",
    "transaction_json",
]

#: ``PrivateData.kind`` of the engine record, and the document's layout version.
KIND = 1
FORMAT = 1

#: Mutating requests of a transaction's log, by message type and back.
_MUTATING = {op: handler for op, (handler, flags) in TABLE.items() if flags & MUTATES}
_OP_OF = {handler: op for op, handler in _MUTATING.items()}
_LIMIT_FIELDS = tuple(f.name for f in fields(Limits))
_KINDS: dict[type, str] = {int: "an integer", str: "a string", bool: "a boolean", dict: "an object"}
T = TypeVar("T")


def text(raw: bytes) -> str:
    """Bytes inside the document: each byte one code point."""
    return raw.decode("latin-1")


def _prefix(path: str) -> str:
    """What a child's path adds its name to (child lists hold paths; the document
    names, as it always did)."""
    return path + "/" if path != "/" else "/"


def _node(node: Node) -> list[Any]:
    return [text(node.value), [list(p) for p in node.perms], node.names(), node.gen]


def _ref(node: Node | None, live: Node | None) -> Any:
    """A transaction's reference to a node: absent, the live node itself, or a copy."""
    if node is None:
        return None
    return "live" if node is live else _node(node)


class Doc:
    """Typed reading of the document: a wrong type is a StateStreamError."""

    where = "the pyxenstored record"

    @classmethod
    def bad(cls, what: str) -> StateStreamError:
        return StateStreamError(what, record=cls.where)

    @classmethod
    def of(cls, v: Any, kind: type[T], what: str) -> T:
        """``v`` if it is exactly of type ``kind`` (a bool is no int here)."""
        if type(v) is not kind:
            raise cls.bad(f"{what} is not {_KINDS[kind]}")
        return v

    @classmethod
    def int_(cls, v: Any, what: str) -> int:
        return cls.of(v, int, what)

    @classmethod
    def nat(cls, v: Any, what: str) -> int:
        n = cls.int_(v, what)
        if n < 0:
            raise cls.bad(f"{what} is negative")
        return n

    @classmethod
    def gen(cls, v: Any, what: str) -> int:
        """A generation: a natural number below 2**63 (what a node can store, compiled
        or not; the tree counts one a change, so no real one comes near)."""
        n = cls.nat(v, what)
        if n >= 1 << 63:
            raise cls.bad(f"{what}: generation out of range")
        return n

    @classmethod
    def str_(cls, v: Any, what: str) -> str:
        return cls.of(v, str, what)

    @classmethod
    def bytes_(cls, v: Any, what: str) -> bytes:
        try:
            return cls.str_(v, what).encode("latin-1")
        except UnicodeEncodeError:
            raise cls.bad(f"{what} holds a character above 255") from None

    @classmethod
    def bool_(cls, v: Any, what: str) -> bool:
        return cls.of(v, bool, what)

    @classmethod
    def num(cls, v: Any, what: str) -> float:
        if type(v) not in (int, float):
            raise cls.bad(f"{what} is not a number")
        return float(v)

    @classmethod
    def list_(cls, v: Any, what: str, size: int | None = None) -> list[Any]:
        if type(v) is not list or (size is not None and len(v) != size):
            raise cls.bad(f"{what} is not a list" + (f" of {size}" if size else ""))
        return v

    @classmethod
    def dict_(cls, v: Any, what: str) -> dict[str, Any]:
        return cls.of(v, dict, what)

    @classmethod
    def pairs(cls, v: Any, what: str) -> list[list[Any]]:
        return [cls.list_(p, what, 2) for p in cls.list_(v, what)]

    @classmethod
    def perms(cls, v: Any, what: str) -> Perms:
        out = []
        for entry in cls.list_(v, what):
            mode, domid = cls.list_(entry, what, 2)
            if cls.int_(mode, what) not in (0, 1, 2, 3):
                raise cls.bad(f"{what}: bad mode {mode}")
            out.append((mode, cls.nat(domid, what)))
        if not out:
            raise cls.bad(f"{what}: no owner")
        return tuple(out)

    @classmethod
    def node(cls, v: Any, what: str) -> Node:
        value, perms, children, gen = cls.list_(v, what, 4)
        prefix = _prefix(what)  # ``what`` is the node's path
        kids = dict.fromkeys(prefix + cls.str_(c, what) for c in cls.list_(children, what))
        restored = Node(b"", ((0, 0),))
        for kid in kids:  # through add_child: small lists are tuples, wide ones lists
            restored.add_child(kid)
        return Node(
            cls.bytes_(value, what), cls.perms(perms, what), restored.children, cls.gen(gen, what)
        )


# -- transactions -----------------------------------------------------------------------------
def transaction_json(txn: Transaction, conn_id: int, live: dict[str, Node]) -> dict[str, Any]:
    """An open transaction exactly as it stands (``live``: the tree's nodes)."""
    view = txn.view
    get = live.get
    return {
        "conn": conn_id,
        "id": txn.id,
        "start_changes": txn.start_changes,
        "failed": txn.failed,
        "bytes": txn.bytes,
        "rebase": view.rebase,
        "doomed": view.doomed,
        "ops": [[_OP_OF[h], text(payload)] for h, payload in txn.ops],
        "observed": [[p, _ref(n, get(p)), f] for p, (n, f) in view.observed.items()],
        "bases": [[p, _ref(n, get(p))] for p, n in view.bases.items()],
        "overlay": [[p, _ref(n, None)] for p, n in view.overlay.items()],
        "dirty": [[p, f] for p, f in view.dirty.items()],
        "listed": [
            [p, [c[len(_prefix(p)) :] for c in shown], sorted(c[len(_prefix(p)) :] for c in own)]
            for p, (shown, own) in view.listed.items()
        ],
        "implicit": [[p, [list(e) for e in perms]] for p, perms in view.implicit_parents.items()],
    }


def transaction_from_json(tx_id: int, t: dict[str, Any], tree: Tree) -> Transaction:
    """Rebuild a transaction on the restored ``tree``: a ``"live"`` base becomes the
    live node itself (marked shared, so the tree copies it before changing it)."""
    D = Doc
    nodes = tree.nodes
    rebase = D.bool_(t.get("rebase"), "rebase")
    txn = Transaction(tx_id, tree, COALESCE if rebase else GENERATION)
    view = txn.view
    view.doomed = D.bool_(t.get("doomed"), "doomed")
    txn.start_changes = D.nat(t.get("start_changes"), "start_changes")
    txn.failed = D.bool_(t.get("failed"), "failed")
    txn.bytes = D.nat(t.get("bytes"), "bytes")
    for op, payload in D.pairs(t.get("ops"), "ops"):
        handler = _MUTATING.get(D.int_(op, "op"))
        if handler is None:
            raise D.bad(f"a logged request of type {op}, which changes nothing")
        txn.ops.append((handler, D.bytes_(payload, "payload")))

    def ref(path: str, v: Any) -> Node | None:
        if v is None:
            return None
        if v == "live":
            live = nodes.get(path)
            if live is None:
                raise D.bad(f"a transaction refers to the live node {path}, which is absent")
            live.share()
            return live
        return D.node(v, path)

    for entry in D.list_(t.get("observed"), "observed"):
        path, node, facets = D.list_(entry, "an observation", 3)
        path = D.str_(path, "path")
        view.observed[path] = (ref(path, node), D.nat(facets, "facets"))
    for path, node in D.pairs(t.get("bases"), "bases"):
        path = D.str_(path, "path")
        view.bases[path] = ref(path, node)
    for path, node in D.pairs(t.get("overlay"), "overlay"):
        path = D.str_(path, "path")
        view.overlay[path] = None if node is None else D.node(node, path)
    for path, facets in D.pairs(t.get("dirty"), "dirty"):
        view.dirty[D.str_(path, "path")] = D.nat(facets, "facets")
    for entry in D.list_(t.get("listed"), "listed"):
        path, names, own = D.list_(entry, "a listing", 3)
        path = D.str_(path, "path")
        prefix = _prefix(path)
        view.listed[path] = (
            [prefix + D.str_(n, "name") for n in D.list_(names, "names")],
            frozenset(prefix + D.str_(n, "name") for n in D.list_(own, "names")),
        )
    for path, perms in D.pairs(t.get("implicit"), "implicit"):
        view.implicit_parents[D.str_(path, "path")] = D.perms(perms, "implicit")
    overlay = view.overlay
    if any(p not in overlay for p in view.bases) or any(p not in overlay for p in view.dirty):
        raise D.bad("a transaction's bases or dirty facets name a path it has no copy of")
    return txn


# -- the engine as a whole ----------------------------------------------------------------------
def engine_json(engine: Engine) -> dict[str, Any]:
    """The engine-wide part of the document (snapshot adds gens, connections...)."""
    e = engine
    q = e.quotas
    g = e.conflict_guard
    return {
        "format": FORMAT,
        "priv_domid": e.priv_domid,
        "tree": {"gen": e.tree.gen, "changes": e.tree.changes},
        "births": [[d, gen] for d, gen in e.births.items()],
        "pending_features": [[d, f] for d, f in e.pending_features.items()],
        "conflicts": e.conflicts,
        "features": e.features,
        "event_queue_max": e.event_queue_max,
        "limits": {name: getattr(e.limits, name) for name in _LIMIT_FIELDS},
        "quotas": {
            "overrides": [[d, v] for d, v in q.overrides.items()],
            "classes": [[c, v] for c, v in q.classes.items()],
            "domain_class": [[d, c] for d, c in q.domain_class.items()],
            "per_device": q.per_device,
            "device_paths": list(q.device_paths),
        },
        "conflict_guard": {
            "burst": g.burst,
            "aggregate": g.aggregate,
            "credit": [[d, c] for d, c in g.credit.items()],
            "paused": list(g.paused_queue),
            "blamed": [[d, n] for d, n in g.blamed.items()],
            "history": [[c, d, sorted(paths)] for c, d, paths in g.history],
        },
        "stats": e.stats,
        "op_counts": e.op_counts,
        # Per-domain statistics (liveconfig.stats): counters go on across an update.
        "past_requests": [[d, n] for d, n in e.past_requests.items()],
        "refusals": [[d, kind, n] for (d, kind), n in e.refusals.counts.items()],
        "again": [[d, n] for d, n in e.refusals.again.items()],
    }


def apply_engine(doc: dict[str, Any], engine: Engine) -> list[str]:
    """Apply the engine-wide part of ``doc`` (the tree's counters excepted) to a
    restored engine; return notes for the log."""
    D = Doc
    e = engine
    notes = []
    if D.int_(doc.get("priv_domid"), "priv_domid") != e.priv_domid:
        notes.append(
            f"the stream's privileged domain is {doc.get('priv_domid')}, this daemon's "
            f"{e.priv_domid}"
        )
    births = D.pairs(doc.get("births"), "births")
    e.births = {D.nat(d, "domid"): D.nat(g, "gen") for d, g in births}
    e.pending_features = {
        D.nat(d, "domid"): D.nat(f, "features")
        for d, f in D.pairs(doc.get("pending_features"), "pending_features")
    }
    conflicts = D.str_(doc.get("conflicts"), "conflicts")
    mode = next((m for m in CONFLICT_MODES if m == conflicts), None)
    if mode is None:
        raise D.bad(f"conflict mode {conflicts!r}")
    e.conflicts = mode
    e.features = D.nat(doc.get("features"), "features")
    e.event_queue_max = D.nat(doc.get("event_queue_max"), "event_queue_max")
    limits = D.dict_(doc.get("limits"), "limits")
    for name in _LIMIT_FIELDS:
        value = limits.get(name)
        if name == "rule":
            if value not in RULES:
                raise D.bad(f"quota rule {value!r}")
            e.limits.rule = value
        else:
            setattr(e.limits, name, D.nat(value, name))
    q = e.quotas
    qx = D.dict_(doc.get("quotas"), "quotas")
    for d, values in D.pairs(qx.get("overrides"), "overrides"):
        for name, v in D.dict_(values, "overrides").items():
            q.set_override(D.nat(d, "domid"), name, D.nat(v, name))
    q.classes.clear()
    for c, values in D.pairs(qx.get("classes"), "classes"):
        for name, v in D.dict_(values, "classes").items():
            q.set_class_value(D.str_(c, "class"), name, D.nat(v, name))
    for d, c in D.pairs(qx.get("domain_class"), "domain_class"):
        q.set_domain_class(D.nat(d, "domid"), D.str_(c, "class"))
    for name, v in D.dict_(qx.get("per_device"), "per_device").items():
        q.set_per_device(name, D.nat(v, name))
    q.devices_added([D.str_(p, "device") for p in D.list_(qx.get("device_paths"), "devices")])
    g = e.conflict_guard
    gx = D.dict_(doc.get("conflict_guard"), "conflict_guard")
    g.burst = D.num(gx.get("burst"), "burst")
    g.aggregate = D.bool_(gx.get("aggregate"), "aggregate")
    credit = D.pairs(gx.get("credit"), "credit")
    g.credit = {D.nat(d, "domid"): D.num(c, "credit") for d, c in credit}
    g.paused_queue = {D.nat(d, "domid"): None for d in D.list_(gx.get("paused"), "paused")}
    blamed = D.pairs(gx.get("blamed"), "blamed")
    g.blamed = {D.nat(d, "domid"): D.nat(n, "blamed") for d, n in blamed}
    for entry in D.list_(gx.get("history"), "history"):
        counter, domid, paths = D.list_(entry, "history", 3)
        names = [D.str_(p, "path") for p in D.list_(paths, "paths")]
        g.record(D.nat(counter, "counter"), D.nat(domid, "domid"), names)
    stats = D.dict_(doc.get("stats"), "stats")
    for name in e.stats:
        e.stats[name] = D.nat(stats.get(name, 0), name)
    counts = D.list_(doc.get("op_counts"), "op_counts", len(e.op_counts))
    e.op_counts = [D.nat(n, "op count") for n in counts]
    # Absent from streams of versions that kept no per-domain statistics.
    past = D.pairs(doc.get("past_requests", []), "past_requests")
    e.past_requests = {D.nat(d, "domid"): D.nat(n, "requests") for d, n in past}
    refusals = e.refusals
    refusals.counts = {}
    for entry in D.list_(doc.get("refusals", []), "refusals"):
        d, kind, n = D.list_(entry, "refusals", 3)
        refusals.counts[(D.nat(d, "domid"), D.str_(kind, "kind"))] = D.nat(n, "refusals")
    again = D.pairs(doc.get("again", []), "again")
    refusals.again = {D.nat(d, "domid"): D.nat(n, "again") for d, n in again}
    return notes
