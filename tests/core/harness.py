"""A sans-I/O harness for the core: an Engine, named connections, and scenario tables.

Connections are named: ``d<N>`` or ``d<N>_<tag>`` is an unprivileged connection of domain
N; any other name (``s``, ``w``, ``s2``...) is a privileged socket (dom0, as every socket
in C xenstored). By default a domain is INTRODUCEd (through a private dom0 connection) before
its first connection is made, as the toolstack does. No ring is needed: the harness's
backend (:class:`RinglessBackend`) makes an engine connection at INTRODUCE, which stands in
for the ring, so RELEASE disconnects it.

A scenario table is a list of rows run in order against one fresh Engine:

* ``(conn, tx, op, payload, expect)``: send one request. ``payload`` is bytes, or a str
  in which ``|`` stands for NUL (``"/a|hello"``). ``expect`` is bytes (the reply payload;
  the reply type must equal the request type), a str (the error name of an ``XS_ERROR``
  reply) or :data:`ANY`.
* ``events(conn, ("path", "token"), ...)``: the watch events that connection received
  since the last such row, in order, exactly.
* ``events_unordered(conn, ...)``: the same, in any order (several watches of one
  connection matching one change: C delivers them in registration order).

Every watch event received is recorded per connection (those queued on the requesting
connection before and after its reply too); replies other than to the requester are a
test failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pyxenstored.core.caller import Caller
from pyxenstored.core.connection import Connection
from pyxenstored.core.domains import Domain, NoHypervisor
from pyxenstored.core.engine import Engine
from pyxenstored.protocol.wire import HEADER, Op, encode

OK = b"OK\0"
_DOMAIN_NAME = re.compile(r"d(\d+)(?:_\w*)?")


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: Matches any reply (success or error).
ANY: Any = _Any()


class Msg(NamedTuple):
    """One decoded message from the engine."""

    op: int
    req_id: int
    tx_id: int
    payload: bytes

    @property
    def error(self) -> str | None:
        """The errno name of an XS_ERROR reply, else None."""
        if self.op != Op.ERROR:
            return None
        assert self.payload.endswith(b"\0"), self.payload
        return self.payload[:-1].decode("ascii")

    @property
    def event(self) -> tuple[str, str]:
        """(path, token) of a WATCH_EVENT."""
        assert self.op == Op.WATCH_EVENT and self.payload.endswith(b"\0"), self
        path, token, rest = self.payload.split(b"\0", 2)
        assert rest == b"", self.payload
        return path.decode("latin-1"), token.decode("latin-1")


def decode(messages: Iterable[bytes]) -> list[Msg]:
    out = []
    for m in messages:
        op, req_id, tx_id, length = HEADER.unpack_from(m)
        assert len(m) == 16 + length, "one message per output item"
        out.append(Msg(op, req_id, tx_id, m[16:]))
    return out


def wire(payload: bytes | str) -> bytes:
    """A payload: bytes as they are, str with ``|`` for NUL."""
    if isinstance(payload, bytes):
        return payload
    return payload.replace("|", "\0").encode("latin-1")


def z(*parts: str | bytes | int) -> bytes:
    """Each argument NUL-terminated: ``z("/a", "n0", "r5")``."""
    out = b""
    for p in parts:
        out += (p if isinstance(p, bytes) else str(p).encode("latin-1")) + b"\0"
    return out


@dataclass
class Events:
    """A table row: the events ``conn`` received since the previous check."""

    conn: str
    expected: list[tuple[str, str]]
    ordered: bool = True


def events(conn: str, *expected: tuple[str, str]) -> Events:
    return Events(conn, list(expected))


def events_unordered(conn: str, *expected: tuple[str, str]) -> Events:
    return Events(conn, list(expected), ordered=False)


#: One row of a table (see the module doc).
Row = tuple[str, int, int, "bytes | str", Any] | Events


@dataclass
class Result:
    """What one request produced on the requesting connection."""

    reply: Msg
    before: list[Msg] = field(default_factory=list)  # events queued before the reply
    after: list[Msg] = field(default_factory=list)  # events queued after it


class RinglessBackend(NoHypervisor):
    """Every domain exists; INTRODUCE gives the domain an engine connection (standing in
    for its ring), so RELEASE and domain death disconnect it as they would a ring."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def introduce(self, domid: int, port: int, features: int) -> Connection | None:
        assert self.engine is not None
        priv = domid == self.engine.priv_domid
        return self.engine.connect(Caller(domid, priv), "ring", features)


class Harness:
    """One Engine and its named connections."""

    def __init__(self, engine: Engine | None = None, **engine_kw: Any) -> None:
        if engine is None:
            backend = engine_kw.setdefault("backend", RinglessBackend())
            engine = Engine(**engine_kw)
            if isinstance(backend, RinglessBackend):
                backend.engine = engine
        self.engine = engine
        self.conns: dict[str, Connection] = {}
        self.received: dict[str, list[Msg]] = {}
        self._admin: Connection | None = None
        self._req_id = 0

    # -- connections ---------------------------------------------------------------------
    def sock(self, name: str = "s", features: int | None = None) -> Connection:
        """A privileged socket connection (dom0)."""
        assert name not in self.conns, name
        conn = self.engine.connect(Caller(self.engine.priv_domid, True), "socket", features)
        self.conns[name] = conn
        self.received[name] = []
        return conn

    def introduce(self, domid: int) -> None:
        """INTRODUCE ``domid`` from dom0 (no ring: the default backend has none)."""
        if self._admin is None:
            self._admin = self.engine.connect(Caller(self.engine.priv_domid, True), "socket")
        self.engine.feed(self._admin, encode(Op.INTRODUCE, 0, 0, z(domid, 0, 1)))
        [reply] = decode(self._admin.take_output())
        assert reply.payload == OK, reply

    def dom(
        self,
        name: str,
        domid: int,
        introduce: bool = True,
        features: int | None = None,
        privileged: bool = False,
    ) -> Connection:
        """A connection of domain ``domid`` (unprivileged unless asked): the domain's own
        connection made at INTRODUCE if it is still free, else a new one."""
        assert name not in self.conns, name
        if introduce and domid not in self.engine.domains:
            self.introduce(domid)
        dom: Domain | None = self.engine.domains.get(domid)
        own = dom.conn if dom is not None else None
        if (
            own is not None
            and not own.closed
            and own not in self.conns.values()
            and features is None
            and not privileged
        ):
            conn = own
        else:
            conn = self.engine.connect(Caller(domid, privileged), "ring", features)
        self.conns[name] = conn
        self.received[name] = []
        return conn

    def conn(self, name: str) -> Connection:
        """The connection called ``name``, made on first use (see module doc)."""
        found = self.conns.get(name)
        if found is not None:
            return found
        m = _DOMAIN_NAME.fullmatch(name)
        if m is None:
            return self.sock(name)
        return self.dom(name, int(m.group(1)))

    # -- requests ------------------------------------------------------------------------
    def feed(self, name: str, data: bytes) -> list[Msg]:
        """Feed raw bytes; return everything now queued on that connection, in order.

        Events queued to other connections are recorded for them.
        """
        conn = self.conn(name)
        self.engine.feed(conn, data)
        mine = decode(conn.take_output())
        self._collect_others(name)
        return mine

    def _collect_others(self, name: str) -> None:
        for other, c in self.conns.items():
            if other == name:
                continue
            for m in decode(c.take_output()):
                assert m.op == Op.WATCH_EVENT, f"{other} got a non-event {m}"
                self.received[other].append(m)
        self.engine.woken.clear()
        if self._admin is not None:
            self._admin.take_output()
        for dom in self.engine.domains.values():
            if dom.conn is not None and dom.conn not in self.conns.values():
                dom.conn.take_output()  # a domain nobody named: its ring is not read

    def request(self, name: str, op: int, payload: bytes | str, tx: int = 0) -> Result:
        """Send one request; return its reply and the events around it on ``name``."""
        self._req_id = (self._req_id + 1) & 0xFFFFFFFF
        msgs = self.feed(name, encode(op, self._req_id, tx, wire(payload)))
        replies = [i for i, m in enumerate(msgs) if not (m.op == Op.WATCH_EVENT and m.req_id == 0)]
        assert len(replies) == 1, f"expected one reply, got {msgs}"
        i = replies[0]
        reply = msgs[i]
        assert reply.req_id == self._req_id and reply.tx_id == tx, reply
        result = Result(reply, msgs[:i], msgs[i + 1 :])
        self.received[name].extend(result.before + result.after)
        return result

    def call(self, name: str, op: int, payload: bytes | str, tx: int = 0) -> bytes | str:
        """The reply payload, or the error name of an error reply."""
        reply = self.request(name, op, payload, tx).reply
        if reply.op == Op.ERROR:
            assert reply.error is not None
            return reply.error
        assert reply.op == op, reply
        return reply.payload

    def ok(self, name: str, op: int, payload: bytes | str, tx: int = 0) -> bytes:
        """Like :meth:`call`, asserting success."""
        got = self.call(name, op, payload, tx)
        assert isinstance(got, bytes), f"{Op(op).name} {payload!r}: {got}"
        return got

    def write(self, name: str, path: str, value: bytes | str = b"", tx: int = 0) -> None:
        value = value.encode() if isinstance(value, str) else value
        assert self.call(name, Op.WRITE, path.encode() + b"\0" + value, tx) == OK

    def set_perms(self, name: str, path: str, *perms: str, tx: int = 0) -> None:
        assert self.call(name, Op.SET_PERMS, z(path, *perms), tx) == OK

    def start(self, name: str) -> int:
        return int(self.ok(name, Op.TRANSACTION_START, b"\0")[:-1])

    def take_events(self, name: str) -> list[tuple[str, str]]:
        """Events ``name`` received since the last call, as (path, token)."""
        got = [m.event for m in self.received[name]]
        self.received[name] = []
        return got

    # -- tables --------------------------------------------------------------------------
    def run(self, rows: Sequence[Any]) -> None:
        for n, row in enumerate(rows):
            if isinstance(row, Events):
                seen = self.take_events(row.conn)
                want = row.expected
                if not row.ordered:
                    seen, want = sorted(seen), sorted(want)
                assert seen == want, f"row {n}: events of {row.conn}: {seen} != {want}"
                continue
            name, tx, op, payload, expect = row
            got = self.call(name, op, payload, tx)
            if expect is ANY:
                continue
            assert got == expect, (
                f"row {n}: {name} tx={tx} {Op(op).name if op in Op._value2member_map_ else op} "
                f"{wire(payload)!r}: got {got!r}, expected {expect!r}"
            )


def run_table(rows: Sequence[Any], **engine_kw: Any) -> Harness:
    """Run ``rows`` against a fresh Engine; return the harness for further checks."""
    h = Harness(**engine_kw)
    h.run(rows)
    return h
