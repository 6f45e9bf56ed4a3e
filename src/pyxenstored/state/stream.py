"""Xen's xenstore state stream (``docs/designs/xenstore-migration.md``), sans I/O.

The stream is what a xenstored writes before it execs its successor (live update), and
what the successor reads back: a 16-byte header, then records, each an 8-byte record
header (type, length) and a body padded with zeros to a multiple of 8 bytes, ending with
an END record. This module turns records into bytes and back; it knows nothing of the
engine (``state.snapshot`` does).

API::

    encode(records, version=2, byteorder="little") -> bytes   # END is appended
    decode(data) -> (Header, [record, ...])                    # END is not returned

Records are frozen dataclasses, one per record type: :class:`GlobalData`,
:class:`ConnectionData`, :class:`WatchData`, :class:`WatchDataExtended`,
:class:`TransactionData`, :class:`NodeData`, :class:`GlobalQuotaData`,
:class:`DomainData`, plus :class:`PrivateData` (pyxenstored's own, see below) and
:class:`UnknownRecord`. Paths are ``str`` (ASCII); values, tokens and pending bytes are
``bytes``. Numbers are kept as the stream has them (``WatchDataExtended.depth`` 0xFFFF
means unlimited, ``ConnectionData.target`` :data:`DOMID_INVALID` means none).

Versions and byte order
-----------------------
Version 1 is what C xenstored 4.17 writes and reads; version 2 (4.21 and later) adds
WATCH_DATA_EXTENDED (a watch's depth) and DOMAIN_DATA's ``features`` field. ``encode``
refuses a WATCH_DATA_EXTENDED record or a non-zero ``features`` in a version 1 stream
(ValueError); ``decode`` accepts a WATCH_DATA_EXTENDED record in either version (C 4.22
writes one whatever version it was asked for) and reads ``features`` as 0 in version 1,
as the document says fields not valid in a version are to be ignored. The header is
big-endian; every record is in the byte order its ``flags`` bit 0 names (0 little, 1
big), and both are read and written. C xenstored reads only its own order (little on
x86 and Arm) and, up to 4.17, only version 1.

Record length: the document calls ``len`` the length of the body, padding excluded; C
xenstored writes the padded length and steps from record to record by ``len`` alone.
``encode`` therefore writes the padded length (C can read it), and ``decode`` steps by
``len`` rounded up to 8, which reads both forms.

Unknown record types: the document reserves types 9 and up "for future use" and does
not say whether a reader must skip or refuse them. C xenstored (4.17 to 4.22) skips them
with a log line, and so does this reader: they come back as :class:`UnknownRecord`
(body as read, padding included), so that a caller may log them or write them on.

pyxenstored's own record (:data:`PRIVATE_DATA`, type 0x70797873, "pyxs"): its body is
:data:`PRIVATE_MAGIC`, a 32-bit kind, a 32-bit length and that many bytes of data.
C xenstored skips it as an unknown type; ``state.snapshot`` carries in it what the
format has no field for. A record of that type without the magic is an
:class:`UnknownRecord` (a future Xen might assign the number).

Errors: a truncated, corrupt or inconsistent stream raises one
:class:`StateStreamError` naming the offset, the record type and what is wrong; decode
never returns part of a stream and never raises anything else.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ..protocol.perms import BOTH, NONE, READ, WRITE

__all__ = [
    "CONNECTION_DATA",
    "DOMAIN_DATA",
    "DOMID_INVALID",
    "END",
    "GLOBAL_DATA",
    "GLOBAL_QUOTA_DATA",
    "MAGIC",
    "NODE_DATA",
    "PRIVATE_DATA",
    "PRIVATE_MAGIC",
    "RING",
    "SOCKET",
    "TRANSACTION_DATA",
    "TXN_READ",
    "TXN_WRITTEN",
    "UNLIMITED_DEPTH",
    "WATCH_DATA",
    "WATCH_DATA_EXTENDED",
    "ByteOrder",
    "ConnectionData",
    "DomainData",
    "GlobalData",
    "GlobalQuotaData",
    "Header",
    "NodeData",
    "Perm",
    "PrivateData",
    "Record",
    "StateStreamError",
    "TransactionData",
    "UnknownRecord",
    "WatchData",
    "WatchDataExtended",
    "decode",
    "encode",
    "paused_gc",
    "record_name",
]

MAGIC = b"xenstore"
VERSIONS = (1, 2)

END = 0
GLOBAL_DATA = 1
CONNECTION_DATA = 2
WATCH_DATA = 3
TRANSACTION_DATA = 4
NODE_DATA = 5
GLOBAL_QUOTA_DATA = 6
DOMAIN_DATA = 7
WATCH_DATA_EXTENDED = 8
#: pyxenstored's own record type ("pyxs"), far from the numbers Xen hands out in order.
PRIVATE_DATA = 0x70797873
PRIVATE_MAGIC = b"pyxenstd"

_NAMES = {
    END: "END",
    GLOBAL_DATA: "GLOBAL_DATA",
    CONNECTION_DATA: "CONNECTION_DATA",
    WATCH_DATA: "WATCH_DATA",
    TRANSACTION_DATA: "TRANSACTION_DATA",
    NODE_DATA: "NODE_DATA",
    GLOBAL_QUOTA_DATA: "GLOBAL_QUOTA_DATA",
    DOMAIN_DATA: "DOMAIN_DATA",
    WATCH_DATA_EXTENDED: "WATCH_DATA_EXTENDED",
    PRIVATE_DATA: "PRIVATE_DATA",
}

#: conn-type of CONNECTION_DATA.
RING = 0
SOCKET = 1
#: ``tdomid`` of a ring connection that acts for nobody (xen.h's DOMID_INVALID).
DOMID_INVALID = 0x7FF4
#: WATCH_DATA_EXTENDED ``depth`` meaning "no limit".
UNLIMITED_DEPTH = 0xFFFF
#: NODE_DATA ``access`` bits of a pending node (0: deleted by the transaction).
TXN_READ = 1
TXN_WRITTEN = 2
#: CONNECTION_DATA ``fields`` bit: a unique-id follows the data.
_FIELD_UNIQUE_ID = 1
#: The node permission ``flags`` bit: a stale grant, ignored when checking.
_PERM_STALE = 1

_MODE_LETTER = {NONE: ord("n"), READ: ord("r"), WRITE: ord("w"), BOTH: ord("b")}
_LETTER_MODE = {v: k for k, v in _MODE_LETTER.items()}

ByteOrder = Literal["little", "big"]


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection meanwhile: building 100k records or nodes would
    otherwise trigger full collections that cost as much as the building itself.
    (Nothing built here is cyclic; collection resumes as it was.)"""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def record_name(rtype: int) -> str:
    """The design document's name of a record type (``type 0x...`` if it has none)."""
    return _NAMES.get(rtype, f"type {rtype:#010x}")


class StateStreamError(Exception):
    """A state stream that cannot be read (or records that cannot be restored).

    Attributes:
        offset: byte offset of the record (or header) at fault, None if not known.
        record: the record type's name, or ``HEADER``.
        reason: what is wrong.
    """

    def __init__(self, reason: str, offset: int | None = None, record: str | None = None) -> None:
        where = []
        if offset is not None:
            where.append(f"offset {offset}")
        if record is not None:
            where.append(record)
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)
        self.offset = offset
        self.record = record
        self.reason = reason


# -- records -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Header:
    """The stream's header: the format version and the byte order of its records."""

    version: int
    byteorder: ByteOrder


@dataclass(frozen=True, slots=True)
class GlobalData:
    """GLOBAL_DATA: the listening socket and the event channel device (-1: none)."""

    socket_fd: int = -1
    evtchn_fd: int = -1


@dataclass(frozen=True, slots=True)
class ConnectionData:
    """CONNECTION_DATA: one connection (a domain's ring or a socket).

    ``domid``, ``target`` and ``evtchn`` (xenstored's own port of the interdomain
    channel) describe a ring; ``socket_fd`` a socket. ``data_in`` holds bytes read but
    not yet processed; ``data_out`` bytes not yet written, of which the first
    ``partial_out`` finish a reply already partly written. ``unique_id`` is the domain's
    unique id (4.21 and later), or None.
    """

    conn_id: int
    conn_type: int
    domid: int = 0
    target: int = DOMID_INVALID
    evtchn: int = 0
    socket_fd: int = -1
    data_in: bytes = b""
    data_out: bytes = b""
    partial_out: int = 0
    unique_id: int | None = None


@dataclass(frozen=True, slots=True)
class WatchData:
    """WATCH_DATA: a watch, its path as the WATCH request gave it (maybe relative)."""

    conn_id: int
    path: str
    token: bytes


@dataclass(frozen=True, slots=True)
class WatchDataExtended:
    """WATCH_DATA_EXTENDED (version 2): a watch with a depth (:data:`UNLIMITED_DEPTH`)."""

    conn_id: int
    path: str
    token: bytes
    depth: int


@dataclass(frozen=True, slots=True)
class TransactionData:
    """TRANSACTION_DATA: an open transaction of a connection."""

    conn_id: int
    tx_id: int


class Perm(NamedTuple):
    """One node permission: mode (protocol.perms NONE/READ/WRITE/BOTH), domain, and
    whether it is a stale grant that checks ignore (the ``flags`` bit 0x01)."""

    mode: int
    domid: int
    stale: bool = False


@dataclass(frozen=True, slots=True)
class NodeData:
    """NODE_DATA: a committed node (``conn_id`` 0) or a transaction's pending node.

    ``access`` (pending nodes only) is :data:`TXN_READ` | :data:`TXN_WRITTEN`, 0 for a
    node the transaction deleted (which has no permissions and an empty value).
    """

    path: str
    value: bytes
    perms: tuple[Perm, ...]
    conn_id: int = 0
    tx_id: int = 0
    access: int = 0


@dataclass(frozen=True, slots=True)
class GlobalQuotaData:
    """GLOBAL_QUOTA_DATA: quota values by name, those applying to each domain by
    default, then those applying globally only (0: unlimited)."""

    domain: tuple[tuple[str, int], ...] = ()
    global_only: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class DomainData:
    """DOMAIN_DATA: one domain's ring features (version 2; 0 in version 1) and its own
    quota values by name (0: unlimited)."""

    domid: int
    features: int = 0
    quotas: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PrivateData:
    """pyxenstored's own record (:data:`PRIVATE_DATA`): a kind and opaque data."""

    kind: int
    data: bytes


@dataclass(frozen=True, slots=True)
class UnknownRecord:
    """A record of a type this reader does not know, kept as it was read."""

    type: int
    body: bytes


Record = (
    GlobalData
    | ConnectionData
    | WatchData
    | WatchDataExtended
    | TransactionData
    | NodeData
    | GlobalQuotaData
    | DomainData
    | PrivateData
    | UnknownRecord
)


# -- encoding ------------------------------------------------------------------------------
def _pad(n: int) -> int:
    return -n & 7


def _z(text: str | bytes) -> bytes:
    """``text`` NUL-terminated; refuses an embedded NUL."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    if b"\0" in raw:
        raise ValueError(f"NUL inside {raw!r}")
    return raw + b"\0"


def _quota_body(fmt: str, head: tuple[int, ...], pairs: Iterable[tuple[str, int]]) -> bytes:
    items = list(pairs)
    values = struct.pack(f"{fmt[0]}{len(items)}I", *(v for _, v in items))
    names = b"".join(_z(n) for n, _ in items)
    return struct.pack(fmt, *head) + values + names


def _encode_body(rec: Record, o: str, version: int) -> tuple[int, bytes]:
    """(type, body) of one record; ``o`` is the struct byte-order prefix."""
    if isinstance(rec, NodeData):
        path = _z(rec.path)
        perms = b"".join(
            struct.pack(f"{o}BBH", _MODE_LETTER[p.mode], _PERM_STALE if p.stale else 0, p.domid)
            for p in rec.perms
        )
        head = struct.pack(
            f"{o}IIHHHH",
            rec.conn_id,
            rec.tx_id,
            len(path),
            len(rec.value),
            rec.access,
            len(rec.perms),
        )
        return NODE_DATA, head + perms + path + rec.value
    if isinstance(rec, ConnectionData):
        if rec.conn_type == RING:
            spec = struct.pack(f"{o}HHI", rec.domid, rec.target, rec.evtchn)
        elif rec.conn_type == SOCKET:
            spec = struct.pack(f"{o}iI", rec.socket_fd, 0)
        else:
            raise ValueError(f"unknown connection type {rec.conn_type}")
        if not 0 <= rec.partial_out <= len(rec.data_out):
            raise ValueError("partial_out must lie within data_out")
        fields = 0 if rec.unique_id is None else _FIELD_UNIQUE_ID
        body = (
            struct.pack(f"{o}IHH", rec.conn_id, rec.conn_type, fields)
            + spec
            + struct.pack(f"{o}HHI", len(rec.data_in), rec.partial_out, len(rec.data_out))
            + rec.data_in
            + rec.data_out
        )
        if rec.unique_id is not None:
            body += bytes(_pad(len(body))) + struct.pack(f"{o}Q", rec.unique_id)
        return CONNECTION_DATA, body
    if isinstance(rec, WatchData | WatchDataExtended):
        path, token = _z(rec.path), _z(rec.token)
        head = struct.pack(f"{o}IHH", rec.conn_id, len(path), len(token))
        if isinstance(rec, WatchData):
            return WATCH_DATA, head + path + token
        if version < 2:
            raise ValueError("WATCH_DATA_EXTENDED needs version 2")
        return WATCH_DATA_EXTENDED, head + struct.pack(f"{o}HH", rec.depth, 0) + path + token
    if isinstance(rec, TransactionData):
        return TRANSACTION_DATA, struct.pack(f"{o}II", rec.conn_id, rec.tx_id)
    if isinstance(rec, GlobalData):
        return GLOBAL_DATA, struct.pack(f"{o}ii", rec.socket_fd, rec.evtchn_fd)
    if isinstance(rec, GlobalQuotaData):
        counts = (len(rec.domain), len(rec.global_only))
        return GLOBAL_QUOTA_DATA, _quota_body(f"{o}HH", counts, (*rec.domain, *rec.global_only))
    if isinstance(rec, DomainData):
        if version < 2 and rec.features:
            raise ValueError("DOMAIN_DATA features need version 2")
        fixed = (rec.domid, len(rec.quotas), rec.features)
        return DOMAIN_DATA, _quota_body(f"{o}HHI", fixed, rec.quotas)
    if isinstance(rec, PrivateData):
        head = struct.pack(f"{o}II", rec.kind, len(rec.data))
        return PRIVATE_DATA, PRIVATE_MAGIC + head + rec.data
    if isinstance(rec, UnknownRecord):
        if rec.type <= WATCH_DATA_EXTENDED or (
            rec.type == PRIVATE_DATA and rec.body[:8] == PRIVATE_MAGIC
        ):
            raise ValueError(f"{record_name(rec.type)} is not an unknown record type")
        return rec.type, rec.body
    raise TypeError(f"not a state record: {rec!r}")


def encode(records: Iterable[Record], version: int = 2, byteorder: ByteOrder = "little") -> bytes:
    """The stream holding ``records`` (END is appended).

    Raises:
        ValueError: a field does not fit the format, or the record needs version 2.
    """
    if version not in VERSIONS:
        raise ValueError(f"unsupported state stream version {version}")
    o = "<" if byteorder == "little" else ">"
    if byteorder not in ("little", "big"):
        raise ValueError(f"byte order must be little or big, not {byteorder!r}")
    out = [MAGIC, struct.pack(">II", version, 0 if byteorder == "little" else 1)]
    pack_head = struct.Struct(f"{o}II").pack
    for rec in records:
        try:
            rtype, body = _encode_body(rec, o, version)
        except (struct.error, OverflowError, UnicodeEncodeError, KeyError) as err:
            raise ValueError(f"{rec!r} does not fit the state format: {err}") from None
        pad = _pad(len(body))
        out.append(pack_head(rtype, len(body) + pad))
        out.append(body)
        if pad:
            out.append(bytes(pad))
    out.append(pack_head(END, 0))
    return b"".join(out)


# -- decoding ------------------------------------------------------------------------------
class _Bad(Exception):
    """What is wrong with one record (decode adds the offset and the type)."""


def _string(data: bytes, start: int, length: int, what: str) -> bytes:
    """``length`` bytes at ``start`` that must be one NUL-terminated string."""
    if length < 1:
        raise _Bad(f"{what} length is 0 (it counts the NUL terminator)")
    raw = data[start : start + length]
    if raw[-1:] != b"\0" or b"\0" in raw[:-1]:
        raise _Bad(f"{what} is not one NUL-terminated string of {length} bytes")
    return raw[:-1]


def _ascii(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise _Bad(f"{what} is not ASCII") from None


def _need(stop: int, end: int, what: str) -> None:
    """``what`` ends at ``stop``, which must not pass the record's ``end``."""
    if stop > end:
        raise _Bad(f"{what} runs {stop - end} bytes past the end of the record")


def _names(data: bytes, pos: int, end: int, count: int) -> list[str]:
    names: list[str] = []
    for _ in range(count):
        cut = data.find(b"\0", pos, end)
        if cut < 0:
            raise _Bad(f"{count} quota names expected, found {len(names)}")
        names.append(_ascii(data[pos:cut], "a quota name"))
        pos = cut + 1
    return names


def _quota_pairs(data: bytes, o: str, pos: int, end: int, count: int) -> list[tuple[str, int]]:
    _need(pos + 4 * count, end, f"{count} quota values")
    values = struct.unpack_from(f"{o}{count}I", data, pos)
    return list(zip(_names(data, pos + 4 * count, end, count), values, strict=True))


#: Permission lists already decoded, by their bytes and byte order: a store has few
#: distinct lists, so most nodes share one tuple (and decoding skips the loop).
_PERMS_SEEN: dict[tuple[str, bytes], tuple[Perm, ...]] = {}
_NODE_HEAD = {o: struct.Struct(f"{o}IIHHHH").unpack_from for o in "<>"}


def _perms(data: bytes, o: str, q: int, nperm: int) -> tuple[Perm, ...]:
    key = (o, data[q : q + 4 * nperm])
    perms = _PERMS_SEEN.get(key)
    if perms is not None:
        return perms
    found = []
    for i in range(nperm):
        letter, flags, domid = struct.unpack_from(f"{o}BBH", data, q + 4 * i)
        mode = _LETTER_MODE.get(letter)
        if mode is None:
            raise _Bad(f"permission {i} has the unknown mode {letter:#04x}")
        found.append(Perm(mode, domid, bool(flags & _PERM_STALE)))
    perms = tuple(found)
    if len(_PERMS_SEEN) >= 4096:
        _PERMS_SEEN.clear()
    _PERMS_SEEN[key] = perms
    return perms


def _node(data: bytes, o: str, p: int, end: int) -> NodeData:
    _need(p + 16, end, "the node header")
    conn_id, tx_id, path_len, value_len, access, nperm = _NODE_HEAD[o](data, p)
    q = p + 16
    _need(q + 4 * nperm + path_len + value_len, end, "the permissions, path and value")
    perms = _perms(data, o, q, nperm) if nperm else ()
    q += 4 * nperm
    path = _ascii(_string(data, q, path_len, "path"), "path")
    q += path_len
    return NodeData(path, data[q : q + value_len], perms, conn_id, tx_id, access)


def _connection(data: bytes, o: str, p: int, end: int) -> ConnectionData:
    _need(p + 24, end, "the connection header")
    conn_id, conn_type, fields = struct.unpack_from(f"{o}IHH", data, p)
    in_len, resp_len, out_len = struct.unpack_from(f"{o}HHI", data, p + 16)
    q = p + 24
    _need(q + in_len + out_len, end, "the pending data")
    if resp_len > out_len:
        raise _Bad(f"out-resp-len {resp_len} exceeds out-data-len {out_len}")
    data_in = data[q : q + in_len]
    data_out = data[q + in_len : q + in_len + out_len]
    unique_id = None
    if fields & _FIELD_UNIQUE_ID:
        at = q + in_len + out_len
        at += _pad(at - p)
        _need(at + 8, end, "the unique-id")
        (unique_id,) = struct.unpack_from(f"{o}Q", data, at)
    if conn_type == RING:
        domid, target, evtchn = struct.unpack_from(f"{o}HHI", data, p + 8)
        return ConnectionData(
            conn_id, RING, domid, target, evtchn, -1, data_in, data_out, resp_len, unique_id
        )
    if conn_type == SOCKET:
        (fd,) = struct.unpack_from(f"{o}i", data, p + 8)
        return ConnectionData(
            conn_id,
            SOCKET,
            socket_fd=fd,
            data_in=data_in,
            data_out=data_out,
            partial_out=resp_len,
            unique_id=unique_id,
        )
    raise _Bad(f"unknown connection type {conn_type:#06x}")


def _watch(data: bytes, o: str, p: int, end: int, extended: bool) -> Record:
    fixed = 12 if extended else 8
    _need(p + fixed, end, "the watch header")
    conn_id, path_len, token_len = struct.unpack_from(f"{o}IHH", data, p)
    q = p + fixed
    _need(q + path_len + token_len, end, "the path and token")
    path = _ascii(_string(data, q, path_len, "watch path"), "watch path")
    token = _string(data, q + path_len, token_len, "token")
    if not extended:
        return WatchData(conn_id, path, token)
    (depth,) = struct.unpack_from(f"{o}H", data, p + 8)
    return WatchDataExtended(conn_id, path, token, depth)


def _body(rtype: int, data: bytes, o: str, p: int, end: int, version: int) -> Record:
    """Parse the body at ``data[p:end]``."""
    if rtype == NODE_DATA:
        return _node(data, o, p, end)
    if rtype == CONNECTION_DATA:
        return _connection(data, o, p, end)
    if rtype in (WATCH_DATA, WATCH_DATA_EXTENDED):
        return _watch(data, o, p, end, rtype == WATCH_DATA_EXTENDED)
    if rtype == TRANSACTION_DATA:
        _need(p + 8, end, "TRANSACTION_DATA")
        return TransactionData(*struct.unpack_from(f"{o}II", data, p))
    if rtype == GLOBAL_DATA:
        _need(p + 8, end, "GLOBAL_DATA")
        return GlobalData(*struct.unpack_from(f"{o}ii", data, p))
    if rtype == GLOBAL_QUOTA_DATA:
        _need(p + 4, end, "the quota counts")
        n_dom, n_glob = struct.unpack_from(f"{o}HH", data, p)
        pairs = _quota_pairs(data, o, p + 4, end, n_dom + n_glob)
        return GlobalQuotaData(tuple(pairs[:n_dom]), tuple(pairs[n_dom:]))
    if rtype == DOMAIN_DATA:
        _need(p + 8, end, "the domain header")
        domid, count, features = struct.unpack_from(f"{o}HHI", data, p)
        pairs = _quota_pairs(data, o, p + 8, end, count)
        return DomainData(domid, features if version >= 2 else 0, tuple(pairs))
    if rtype == PRIVATE_DATA and data[p : p + 8] == PRIVATE_MAGIC and end - p >= 16:
        kind, length = struct.unpack_from(f"{o}II", data, p + 8)
        _need(p + 16 + length, end, "the private data")
        return PrivateData(kind, data[p + 16 : p + 16 + length])
    return UnknownRecord(rtype, data[p:end])


def decode(data: bytes) -> tuple[Header, list[Record]]:
    """The header and the records of a whole stream (END not included).

    Raises:
        StateStreamError: the stream is truncated, corrupt or not a xenstore stream.
    """
    data = bytes(data)
    size = len(data)
    if size < 16:
        raise StateStreamError(f"{size} bytes, the header alone is 16", 0, "HEADER")
    if data[:8] != MAGIC:
        raise StateStreamError(f"ident is {data[:8]!r}, not {MAGIC!r}", 0, "HEADER")
    version, flags = struct.unpack_from(">II", data, 8)
    if version not in VERSIONS:
        raise StateStreamError(f"unsupported version {version}", 8, "HEADER")
    if flags & ~1:
        raise StateStreamError(f"reserved flag bits set ({flags:#x})", 12, "HEADER")
    byteorder: ByteOrder = "big" if flags & 1 else "little"
    o = ">" if flags & 1 else "<"
    with paused_gc():
        return _records(data, Header(version, byteorder), o)


def _records(data: bytes, header: Header, o: str) -> tuple[Header, list[Record]]:
    size = len(data)
    version = header.version
    head: Callable[[bytes, int], tuple[int, int]] = struct.Struct(f"{o}II").unpack_from
    records: list[Record] = []
    append = records.append
    pos = 16
    while True:
        if pos + 8 > size:
            raise StateStreamError(
                f"the stream ends inside a record header ({size - pos} of 8 bytes); no END",
                pos,
                "record header",
            )
        rtype, length = head(data, pos)
        body = pos + 8
        end = body + length
        stop = end + _pad(length)
        if stop > size:
            raise StateStreamError(
                f"body of {length} bytes (padded {stop - body}) runs past the end of the "
                f"stream ({size - body} bytes left)",
                pos,
                record_name(rtype),
            )
        if rtype == END:
            if stop != size:
                raise StateStreamError(f"{size - stop} bytes after END", pos, "END")
            return header, records
        try:
            append(_body(rtype, data, o, body, end, version))
        except _Bad as err:
            raise StateStreamError(str(err), pos, record_name(rtype)) from None
        except (struct.error, ValueError, IndexError) as err:  # a safety net
            raise StateStreamError(f"malformed: {err}", pos, record_name(rtype)) from None
        pos = stop
