"""The crash journal's format and its replay, sans I/O.

A journal is a sequence of frames, each ``tag (4 bytes) | length (u32 LE) | crc32 of
the payload (u32 LE) | payload``:

* ``SNAP``: a whole state stream (``snapshot.save`` without socket connections, open
  transactions not carried exactly). Always the first frame.
* ``TREE``: committed tree operations (``Tree.sink``, see ``core.changes``), encoded
  by :func:`encode_ops`; replayed through the same ``Tree`` methods they were made by,
  so generations, counters and child order come back exactly. Each operation is
  ``code u8 | path length u32 | value length u32 | permission count u32 | path |
  value | (mode u8, domid u32) per permission`` (little-endian; codes as in
  ``store.tree``), or ``COUNTERS u8 | gen u64 | changes u64`` after a rolled-back
  commit.
* ``META``, when a request changed more than the tree: its tree operations (a u32
  length, then as in TREE); the domains that ended (a u32 count, a u32 domid each);
  its engine operations (a u32 length, then BIRTH/DEATH as COUNTERS with domid and
  generation, DEVICE_ADD/DEVICE_REMOVE as a tree operation with a path only: see
  ``core.changes``); then a state stream without nodes (``snapshot.dump(nodes=False,
  domains=...)``) of the domains it changed (connection, event-channel port, watches,
  open transaction ids, DOMAIN_DATA), with the engine-wide record (quota tables,
  SET_FEATURE values, limits, births, devices) only if that changed. Replay keeps the
  newest record of each domain and the newest engine-wide record, plus the engine
  operations after it. One frame per request, so a request is whole or absent.

* ``RING``: where guests' rings stood when the frame was written, and the frame of the
  changes that go with it, written as one so that both are present or neither is: a
  u32 count of ring records, each ``domid u32 | req_cons u32 | rsp_prod u32 | unsent
  length u32 | partial length u32 | unsent | partial`` (:class:`RingRecord`), then an
  optional inner TREE or META frame (header included). A ring's requests are taken
  (``req_cons`` moved) only after the frame of their answers is written: after a crash
  ``req_cons`` is set to the journaled index (their answers are in the journal), or the
  requests are still in the ring and are answered by the next process; the replies and
  events not yet in the ring are found by comparing ``rsp_prod`` with the journaled one.
  A SNAP is followed by a RING frame of every ring.

A frame whose header or payload is cut short, or whose checksum does not match, ends
the journal: it and anything after it are dropped, never half-applied (a crash while
writing it). Zero bytes after the last frame are room reserved for the next ones.
:func:`replay` rebuilds the engine: the SNAP restored, every TREE applied to its tree,
then the newest records of the domains and the engine merged into one stream and
restored into a fresh engine that takes that tree, the engine operations after the
newest engine-wide record applied last. Open transactions of guests restore doomed
(EAGAIN at commit).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from ..core.changes import (
    BIRTH,
    DEATH,
    DEVICE_ADD,
    DEVICE_REMOVE,
    TXN_END,
    TXN_START,
    Changes,
)
from ..core.connection import Connection
from ..core.engine import Engine
from ..core.transactions import Transaction
from ..protocol.paths import is_canonical
from ..protocol.perms import BOTH, NONE, READ, WRITE, Perms
from ..store.tree import COUNTERS, CREATE, REMOVE, SET_PERMS, SET_VALUE, Tree
from . import private
from .snapshot import Restored, dump, load, restore, save
from .stream import (
    RING,
    ConnectionData,
    DomainData,
    GlobalData,
    GlobalQuotaData,
    PrivateData,
    Record,
    StateStreamError,
    TransactionData,
    WatchData,
    WatchDataExtended,
    decode,
    encode,
)

__all__ = [
    "META",
    "RINGS",
    "SNAP",
    "TREE",
    "JournalError",
    "Replayed",
    "RingRecord",
    "changes_frame",
    "decode_ops",
    "encode_ops",
    "frame",
    "frames",
    "replay",
    "ring_frame",
    "snapshot_frame",
    "tree_frame",
]

SNAP, TREE, META, RINGS = b"SNAP", b"TREE", b"META", b"RING"
_TAGS = (SNAP, TREE, META, RINGS)
_FRAME = struct.Struct("<4sII")
_OP = struct.Struct("<BIII")  # code, path length, value length, permission count
_COUNTERS = struct.Struct("<BQQ")
_PERM = struct.Struct("<BI")
_LEN = struct.Struct("<I")
_MODES = frozenset((NONE, READ, WRITE, BOTH))
_RING = struct.Struct("<IIIII")  # domid, req_cons, rsp_prod, unsent length, partial length


class JournalError(Exception):
    """A journal whose complete frames do not replay (not a torn end: corruption)."""


# -- frames ----------------------------------------------------------------------------------
def frame(tag: bytes, payload: bytes) -> bytes:
    """One frame: tag, length, checksum, payload."""
    return _FRAME.pack(tag, len(payload), zlib.crc32(payload)) + payload


def frames(data: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """The complete frames of ``data`` and the length they cover; a torn or corrupt
    frame ends the list (it and what follows are dropped)."""
    out = []
    pos = 0
    size = len(data)
    head = _FRAME.size
    while size - pos >= head:
        tag, length, crc = _FRAME.unpack_from(data, pos)
        stop = pos + head + length
        if stop > size or tag not in _TAGS:
            break
        payload = data[pos + head : stop]
        if zlib.crc32(payload) != crc:
            break
        out.append((tag, payload))
        pos = stop
    return out, pos


def snapshot_frame(engine: Engine) -> bytes:
    """The SNAP frame of ``engine``'s state (sockets left out)."""
    return frame(SNAP, save(engine, exact_transactions=False))


def tree_frame(ops: list[tuple[object, ...]]) -> bytes:
    """The TREE frame of a request that changed nothing but the tree."""
    if len(ops) == 1 and ops[0][0] == SET_VALUE:
        # The common case (a WRITE of an existing node), without the general loop.
        _, path, value = ops[0]
        p = path.encode("ascii")  # type: ignore[attr-defined]
        raw: bytes = _OP.pack(SET_VALUE, len(p), len(value), 0) + p + value  # type: ignore[arg-type]
    else:
        raw = encode_ops(ops)
    return _FRAME.pack(TREE, len(raw), zlib.crc32(raw)) + raw


def changes_frame(engine: Engine, changes: Changes) -> bytes:
    """The frame of one request's changes: TREE, or META when anything besides the
    tree changed. Does not clear ``changes``."""
    ops = changes.ops
    if not changes.domains and not changes.meta and not changes.engine_ops:
        return tree_frame(ops)
    raw = encode_ops(ops)
    live = {d for d in changes.domains if d in engine.domains}
    gone = sorted(changes.domains - live)
    eops = encode_ops(changes.engine_ops)
    state = b""
    if live or changes.meta:
        records = dump(
            engine, nodes=False, exact_transactions=False, domains=live, engine_doc=changes.meta
        )
        state = encode(records)
    parts = [_LEN.pack(len(raw)), raw, _LEN.pack(len(gone))]
    parts += [_LEN.pack(d) for d in gone]
    parts += [_LEN.pack(len(eops)), eops, state]
    return frame(META, b"".join(parts))


class RingRecord(NamedTuple):
    """Where one guest's ring stood when a frame was written.

    Attributes:
        domid: the guest.
        req_cons: the request index up to which requests are answered (and their
            answers journaled), whether or not the ring's ``req_cons`` has moved yet.
        rsp_prod: the ring's ``rsp_prod`` then.
        unsent: the replies and events queued for the guest and not yet in the ring
            then (the response stream from ``rsp_prod`` on).
        partial: request bytes taken but not yet a whole request.
    """

    domid: int
    req_cons: int
    rsp_prod: int
    unsent: bytes = b""
    partial: bytes = b""

    def unwritten(self, rsp_prod: int) -> bytes:
        """What of :attr:`unsent` is still to be written, the ring's ``rsp_prod`` being
        ``rsp_prod`` now (all of it written, or an index the guest moved: nothing)."""
        done = (rsp_prod - self.rsp_prod) & 0xFFFFFFFF
        return self.unsent[done:] if done <= len(self.unsent) else b""


def ring_frame(records: list[RingRecord], inner: bytes = b"") -> bytes:
    """A RING frame: ``records``, then the frame ``inner`` (or none)."""
    pack = _RING.pack
    parts = [_LEN.pack(len(records))]
    for domid, req_cons, rsp_prod, unsent, partial in records:
        parts += (pack(domid, req_cons, rsp_prod, len(unsent), len(partial)), unsent, partial)
    parts.append(inner)
    payload = b"".join(parts)
    return _FRAME.pack(RINGS, len(payload), zlib.crc32(payload)) + payload


def _ring_records(payload: bytes) -> tuple[list[RingRecord], bytes]:
    """The records of a RING frame's payload and the inner frame after them."""
    try:
        (count,) = _LEN.unpack_from(payload)
        pos = _LEN.size
        out = []
        for _ in range(count):
            domid, cons, prod, lu, lp = _RING.unpack_from(payload, pos)
            pos += _RING.size
            unsent = payload[pos : pos + lu]
            partial = payload[pos + lu : pos + lu + lp]
            pos += lu + lp
            if pos > len(payload):
                raise JournalError("a ring record runs past its frame")
            out.append(RingRecord(domid, cons, prod, unsent, partial))
    except struct.error:
        raise JournalError("a truncated ring record") from None
    return out, payload[pos:]


# -- tree operations -------------------------------------------------------------------------
def _perm_bytes(perms: Perms, cache: dict[Perms, bytes]) -> bytes:
    raw = cache.get(perms)
    if raw is None:
        raw = b"".join(_PERM.pack(mode, domid) for mode, domid in perms)
        if len(cache) > 4096:
            cache.clear()
        cache[perms] = raw
    return raw


_PERMS_CACHE: dict[Perms, bytes] = {}


def encode_ops(ops: list[tuple[object, ...]]) -> bytes:
    """Tree operations (``Tree.sink`` entries) as bytes."""
    parts: list[bytes] = []
    add = parts.append
    pack = _OP.pack
    cache = _PERMS_CACHE
    for op in ops:
        code = op[0]
        if code == SET_VALUE:
            path = op[1].encode("ascii")  # type: ignore[attr-defined]
            value: bytes = op[2]  # type: ignore[assignment]
            add(pack(code, len(path), len(value), 0))
            add(path)
            add(value)
        elif code == CREATE:
            path = op[1].encode("ascii")  # type: ignore[attr-defined]
            value = op[2]  # type: ignore[assignment]
            perms: Perms = op[3]  # type: ignore[assignment]
            add(pack(code, len(path), len(value), len(perms)))
            add(path)
            add(value)
            add(_perm_bytes(perms, cache))
        elif code == SET_PERMS:
            path = op[1].encode("ascii")  # type: ignore[attr-defined]
            perms = op[2]  # type: ignore[assignment]
            add(pack(code, len(path), 0, len(perms)))
            add(path)
            add(_perm_bytes(perms, cache))
        elif code == REMOVE:
            path = op[1].encode("ascii")  # type: ignore[attr-defined]
            add(pack(code, len(path), 0, 0))
            add(path)
        elif code in (COUNTERS, BIRTH, DEATH, TXN_START, TXN_END):
            add(_COUNTERS.pack(code, op[1], op[2]))
        elif code in (DEVICE_ADD, DEVICE_REMOVE):
            path = op[1].encode("ascii")  # type: ignore[attr-defined]
            add(pack(code, len(path), 0, 0))
            add(path)
        else:
            raise ValueError(f"unknown operation {op!r}")
    return b"".join(parts)


def decode_ops(data: bytes) -> list[tuple[object, ...]]:
    """The operations :func:`encode_ops` wrote (JournalError if malformed)."""
    out: list[tuple[object, ...]] = []
    perms_seen: dict[bytes, Perms] = {}
    pos = 0
    size = len(data)
    try:
        while pos < size:
            code = data[pos]
            if code in (COUNTERS, BIRTH, DEATH, TXN_START, TXN_END):
                _, first, second = _COUNTERS.unpack_from(data, pos)
                out.append((code, first, second))
                pos += _COUNTERS.size
                continue
            code, lp, lv, n = _OP.unpack_from(data, pos)
            pos += _OP.size
            raw_path = data[pos : pos + lp]
            if not is_canonical(raw_path):
                raise JournalError(f"a tree operation on a bad path {raw_path!r}")
            path = raw_path.decode("ascii")
            pos += lp
            value = data[pos : pos + lv]
            pos += lv
            raw = data[pos : pos + n * _PERM.size]
            pos += n * _PERM.size
            if pos > size:
                raise JournalError("a tree operation runs past its frame")
            perms = perms_seen.get(raw)
            if perms is None and n:
                perms = tuple(_PERM.iter_unpack(raw))
                if any(mode not in _MODES for mode, _ in perms):
                    raise JournalError(f"a permission mode out of range in {perms}")
                perms_seen[raw] = perms
            if code in (CREATE, SET_PERMS) and not n:
                raise JournalError(f"a node of {path} without permissions")
            if code == SET_VALUE:
                out.append((SET_VALUE, path, value))
            elif code == CREATE:
                out.append((CREATE, path, value, perms))
            elif code == SET_PERMS:
                out.append((SET_PERMS, path, perms))
            elif code == REMOVE:
                out.append((REMOVE, path))
            elif code in (DEVICE_ADD, DEVICE_REMOVE):
                out.append((code, path))
            else:
                raise JournalError(f"unknown operation code {code}")
    except (struct.error, UnicodeDecodeError) as err:
        raise JournalError(f"malformed tree operations: {err}") from None
    return out


def apply_ops(tree: Tree, ops: list[tuple[object, ...]]) -> None:
    """Replay operations on ``tree`` (JournalError if they do not fit it)."""
    nodes = tree.nodes
    try:
        for op in ops:
            code = op[0]
            if code == SET_VALUE:
                tree.set_value(op[1], op[2])  # type: ignore[arg-type]
            elif code == CREATE:
                path: str = op[1]  # type: ignore[assignment]
                if path in nodes:
                    raise JournalError(f"{path} created twice")
                tree.create(path, op[2], op[3])  # type: ignore[arg-type]
            elif code == SET_PERMS:
                tree.set_perms(op[1], op[2])  # type: ignore[arg-type]
            elif code == REMOVE:
                tree.remove(op[1])  # type: ignore[arg-type]
            elif code == COUNTERS:
                tree.gen, tree.changes = op[1], op[2]  # type: ignore[assignment]
            else:
                raise JournalError(f"operation {code} among tree operations")
    except KeyError as err:
        raise JournalError(f"a tree operation on a missing node {err}") from None


# -- replay ----------------------------------------------------------------------------------
class _Latest:
    """The newest record of everything but the nodes: each domain's records (its
    connection, watches, transactions, DOMAIN_DATA and private entry), the global
    quotas and the engine-wide part of the private record."""

    def __init__(self) -> None:
        self.groups: dict[int, list[Record]] = {}
        self.domain_data: dict[int, DomainData] = {}
        self.conn_x: dict[int, dict[str, Any]] = {}
        self.quota: GlobalQuotaData | None = None
        self.doc: dict[str, Any] | None = None
        #: guests' transactions started or ended after their domain's newest record
        self.txn_ops: dict[int, list[tuple[int, int]]] = {}

    def engine_ops(self, ops: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        """Keep the transaction operations by domain; return the others."""
        rest = []
        for op in ops:
            if op[0] in (TXN_START, TXN_END):
                self.txn_ops.setdefault(op[1], []).append((op[0], op[2]))  # type: ignore[arg-type]
            else:
                rest.append(op)
        return rest

    def absorb(self, records: list[Record], gone: list[int]) -> bool:
        """Take newer records; True if they held the engine-wide record."""
        for domid in gone:
            self.groups.pop(domid, None)
            self.domain_data.pop(domid, None)
            self.conn_x.pop(domid, None)
            self.txn_ops.pop(domid, None)
        owner: dict[int, int] = {}
        whole = False
        for rec in records:
            if isinstance(rec, ConnectionData):
                if rec.conn_type != RING:
                    raise JournalError("a socket connection in the journal")
                owner[rec.conn_id] = rec.domid
                self.groups[rec.domid] = [rec]
                self.conn_x.pop(rec.domid, None)
                self.txn_ops.pop(rec.domid, None)  # the record has them
            elif isinstance(rec, WatchData | WatchDataExtended | TransactionData):
                if rec.conn_id not in owner:
                    raise JournalError("a record of an unknown connection")
                self.groups[owner[rec.conn_id]].append(rec)
            elif isinstance(rec, DomainData):
                self.domain_data[rec.domid] = rec
            elif isinstance(rec, GlobalQuotaData):
                self.quota = rec
            elif isinstance(rec, PrivateData) and rec.kind == private.KIND:
                try:
                    doc = json.loads(rec.data)
                    for x in doc.pop("connections"):
                        self.conn_x[owner[x["id"]]] = x
                except (ValueError, KeyError, TypeError, RecursionError) as err:
                    raise JournalError(f"a bad engine record: {err!r}") from None
                if "format" in doc:
                    self.doc = doc
                    whole = True
        return whole

    def records(self) -> list[Record]:
        """One stream of all of it, connections numbered afresh (no nodes)."""
        out: list[Record] = [GlobalData()]
        if self.quota is not None:
            out.append(self.quota)
        conns = []
        for n, (domid, group) in enumerate(self.groups.items(), 1):
            out.extend(replace(rec, conn_id=n) for rec in group)  # type: ignore[arg-type]
            x = self.conn_x.get(domid)
            if x is not None:
                conns.append(x | {"id": n})
        out.extend(self.domain_data.values())
        if self.doc is not None:
            doc = self.doc | {"gens": [], "wide_perms": [], "connections": conns}
            doc["transactions"] = []
            out.append(PrivateData(private.KIND, json.dumps(doc).encode("ascii")))
        return out


@dataclass
class Replayed:
    """What :func:`replay` found.

    Attributes:
        restored: the state to serve from (as ``snapshot.restore`` gives it).
        used: bytes of the journal replayed (complete frames).
        dropped: bytes dropped at its end (a torn last frame; reserved zero bytes
            after the last frame are not counted).
        frames: frames replayed.
        snapshot: bytes of its snapshot frame.
        notes: what the restore noticed.
    """

    restored: Restored
    used: int
    dropped: int
    frames: int
    snapshot: int = 0
    notes: list[str] = field(default_factory=list)
    #: the newest ring record of each domain still introduced
    rings: dict[int, RingRecord] = field(default_factory=dict)


def _apply_engine_ops(engine: Engine, ops: list[tuple[object, ...]]) -> None:
    """Births, deaths and device allowances recorded after the last engine record."""
    quotas = engine.quotas
    for op in ops:
        code = op[0]
        if code == BIRTH:
            engine.births[op[1]] = op[2]  # type: ignore[index,assignment]
        elif code == DEATH:
            engine.births.pop(op[1], None)  # type: ignore[call-overload]
        elif code == DEVICE_ADD:
            quotas.device_added(op[1])  # type: ignore[arg-type]
        elif code == DEVICE_REMOVE:
            quotas.device_removed(op[1])  # type: ignore[arg-type]
        else:
            raise JournalError(f"operation {code} among engine operations")


def _doomed(engine: Engine, conn: Connection, tx_id: int) -> None:
    txn = Transaction(tx_id, engine.tree, engine.conflicts)
    txn.view.doomed = True
    engine.transaction_started(conn, txn)


def _apply_txn_ops(engine: Engine, txn_ops: dict[int, list[tuple[int, int]]]) -> None:
    """Guests' transactions started (doomed) or ended after their domain's record."""
    for domid, ops in txn_ops.items():
        dom = engine.domains.get(domid)
        conn = dom.conn if dom is not None else None
        if conn is None or conn.closed:
            continue
        for code, tx_id in ops:
            if code == TXN_START:
                if tx_id not in conn.transactions:
                    _doomed(engine, conn, tx_id)
                conn.next_txid = (tx_id + 1) & 0xFFFFFFFF
            else:
                txn = conn.transactions.get(tx_id)
                if txn is not None:
                    engine.transaction_ended(conn, txn)


def _records(data: bytes) -> list[Record]:
    try:
        return decode(data)[1]
    except StateStreamError as err:
        raise JournalError(f"an engine record: {err}") from None


def replay(data: bytes, new_engine: Callable[[], Engine]) -> Replayed:
    """Rebuild the state a journal records.

    Args:
        data: the journal's bytes (a torn end is dropped).
        new_engine: builds a fresh Engine as the daemon does (called once or twice).

    Raises:
        JournalError: no complete snapshot, or complete frames that do not replay.
    """
    found, used = frames(data)
    if not found or found[0][0] != SNAP:
        raise JournalError("no complete snapshot at the start")
    try:
        restored = load(found[0][1], new_engine())
    except (StateStreamError, ValueError) as err:
        raise JournalError(f"the snapshot: {err}") from None
    tree = restored.engine.tree
    latest = _Latest()
    latest.absorb(_records(found[0][1]), [])
    metas = 0
    engine_ops: list[tuple[object, ...]] = []
    rings: dict[int, RingRecord] = {}
    for tag, payload in found[1:]:
        records: list[RingRecord] = []
        if tag == RINGS:
            records, inner = _ring_records(payload)
            if inner:
                nested, length = frames(inner)
                if len(nested) != 1 or length != len(inner) or nested[0][0] not in (TREE, META):
                    raise JournalError("a ring frame holds something else than one change")
                tag, payload = nested[0]
        if tag == RINGS:
            pass  # ring records alone
        elif tag == TREE:
            apply_ops(tree, decode_ops(payload))
        elif tag == META:
            metas += 1
            try:
                cut = _LEN.size + _LEN.unpack_from(payload)[0]
                apply_ops(tree, decode_ops(payload[_LEN.size : cut]))
                n = _LEN.unpack_from(payload, cut)[0]
                gone = [_LEN.unpack_from(payload, cut + 4 + 4 * i)[0] for i in range(n)]
                pos = cut + 4 + 4 * n
                stop = pos + _LEN.size + _LEN.unpack_from(payload, pos)[0]
                engine_ops += latest.engine_ops(decode_ops(payload[pos + _LEN.size : stop]))
            except struct.error:
                raise JournalError("a truncated engine record") from None
            state = payload[stop:]
            for domid in gone:
                rings.pop(domid, None)
            if (state or gone) and latest.absorb(_records(state) if state else [], gone):
                engine_ops = []  # the engine-wide record written after them has them
        else:
            raise JournalError("a second snapshot")
        for rec in records:  # where the rings stood after the changes
            rings[rec.domid] = rec
    notes = list(restored.notes)
    if metas:
        try:
            restored = restore(latest.records(), new_engine())
        except (StateStreamError, ValueError) as err:
            raise JournalError(f"the engine records: {err}") from None
        notes += restored.notes
        engine = restored.engine
        engine.tree = tree
        _apply_engine_ops(engine, engine_ops)
        # Doomed transactions were made on the record's empty tree: remake them on ours.
        for conn in engine.connections.values():
            for txn in list(conn.transactions.values()):
                engine.transaction_ended(conn, txn)
                _doomed(engine, conn, txn.id)
        _apply_txn_ops(engine, latest.txn_ops)
    dropped = len(data) - used
    if dropped and data.count(0, used) == dropped:
        dropped = 0  # the journal's reserved room, never written
    snap = _FRAME.size + len(found[0][1])
    domains = restored.engine.domains
    live = {domid: rec for domid, rec in rings.items() if domid in domains}
    return Replayed(restored, used, dropped, len(found), snap, notes, live)
