"""Drive one sans-I/O Engine: connections, requests, replies and watch events, no I/O.

One error convention for every test:

* :meth:`Kit.call` returns the reply payload (``bytes``) or, for an ``XS_ERROR`` reply, the
  error name (``str``, e.g. ``"ENOENT"``); :meth:`Kit.error` insists on an error and
  returns its name; :meth:`Kit.end` (TRANSACTION_END) answers the same way, because its
  outcome is the point of the tests that end transactions.
* :meth:`Kit.ok` and the methods named for an operation (:meth:`~Kit.write`,
  :meth:`~Kit.read`, :meth:`~Kit.start`, :meth:`~Kit.commit`, :meth:`~Kit.set_perms`,
  :meth:`~Kit.introduce`, :meth:`~Kit.guest`, ...) require success and raise
  :class:`ErrorReply` (an ``AssertionError`` carrying the name) otherwise.

A payload is ``bytes`` as they are, or a ``str`` in which ``|`` stands for NUL
(``"/a|hello"``); :func:`z` NUL-terminates each of its arguments (``z("/a", "n0", "r5")``).

Connections are either :class:`~pyxenstored.core.connection.Connection` objects the kit
handed out, or names: ``d<N>`` or ``d<N>_<tag>`` is an unprivileged connection of domain
N (the domain is INTRODUCEd by :attr:`Kit.dom0` first, as a toolstack does); any other
name (``s``, ``w``, ...) is a privileged socket (dom0, as every socket in C xenstored).

Every watch event a connection receives is kept for :meth:`Kit.take_events`; a reply on
any connection but the requester's is a test failure.

The engine runs on :class:`FakeBackend`: domains below :data:`KNOWN_DOMAINS` exist, and
INTRODUCE gives the domain a ring-kind engine connection (standing in for its ring, so
RELEASE and domain death disconnect it), recording every call the engine makes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pyxenstored.core.caller import Caller
from pyxenstored.core.connection import Connection
from pyxenstored.core.domains import Domain
from pyxenstored.core.engine import Engine
from pyxenstored.errors import Invalid
from pyxenstored.protocol.wire import HEADER, OK, Op, encode

__all__ = [
    "KNOWN_DOMAINS",
    "OK",
    "UNKNOWN_DOMAIN",
    "ErrorReply",
    "FakeBackend",
    "Kit",
    "Msg",
    "Result",
    "Who",
    "decode",
    "op_name",
    "wire",
    "z",
]

#: Domains below this exist in :class:`FakeBackend` (unless a test removes them).
KNOWN_DOMAINS = 1000
#: A domain the hypervisor does not know (ENOENT wherever a domain must exist).
UNKNOWN_DOMAIN = 4242

_DOMAIN_NAME = re.compile(r"d(\d+)(?:_\w*)?")

#: A connection, as the kit handed it out or by name (see the module doc).
Who = str | Connection


class ErrorReply(AssertionError):
    """An error reply where success was required; ``name`` is its errno name."""

    def __init__(self, name: str, what: str = "") -> None:
        super().__init__(f"{name}: {what}" if what else name)
        self.name = name


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
    """The messages in a connection's output (whole messages, however they were queued)."""
    data = b"".join(messages)
    out = []
    at = 0
    while at < len(data):
        op, req_id, tx_id, length = HEADER.unpack_from(data, at)
        end = at + 16 + length
        assert end <= len(data), "a connection's output ends inside a message"
        out.append(Msg(op, req_id, tx_id, data[at + 16 : end]))
        at = end
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
class FakeBackend:
    """A hypervisor where the domains in ``existing`` exist, recording what the engine
    asks (``calls``); INTRODUCE of a domain in ``refuse`` fails as a mapping failure."""

    existing: set[int] = field(default_factory=lambda: set(range(KNOWN_DOMAINS)))
    refuse: set[int] = field(default_factory=set)
    calls: list[tuple[object, ...]] = field(default_factory=list)
    engine: Engine | None = None

    def exists(self, domid: int) -> bool:
        return domid in self.existing

    def introduce(self, domid: int, port: int, features: int) -> Connection | None:
        self.calls.append(("introduce", domid, port, features))
        if domid in self.refuse:
            raise Invalid("cannot map")
        assert self.engine is not None
        priv = domid == self.engine.priv_domid
        return self.engine.connect(Caller(domid, priv), "ring", features)

    def reintroduce(self, domain: Domain, port: int) -> None:
        self.calls.append(("reintroduce", domain.domid, port))

    def reset(self, domain: Domain) -> None:
        self.calls.append(("reset", domain.domid))

    def release(self, domain: Domain) -> None:
        self.calls.append(("release", domain.domid))

    @property
    def released(self) -> list[int]:
        """The domains released, in order."""
        return [int(str(c[1])) for c in self.calls if c[0] == "release"]


@dataclass
class Result:
    """What one request produced on the requesting connection."""

    reply: Msg
    before: list[Msg] = field(default_factory=list)  # events queued before the reply
    after: list[Msg] = field(default_factory=list)  # events queued after it


class Kit:
    """One Engine (on a :class:`FakeBackend` unless an engine is given) and its
    connections; ``engine_kw`` are :class:`Engine` options."""

    def __init__(self, engine: Engine | None = None, **engine_kw: Any) -> None:
        if engine is None:
            backend = engine_kw.setdefault("backend", FakeBackend())
            engine = Engine(**engine_kw)
            if isinstance(backend, FakeBackend):
                backend.engine = engine
        self.engine = engine
        #: Connections by name.
        self.conns: dict[str, Connection] = {}
        #: Watch events received, by connection id.
        self.received: dict[int, list[Msg]] = {}
        self._seen: dict[int, Connection] = {}
        self._dom0: Connection | None = None
        self._req_id = 0

    @property
    def backend(self) -> FakeBackend:
        """The engine's backend (a :class:`FakeBackend` unless the test gave an engine)."""
        backend = self.engine.backend
        assert isinstance(backend, FakeBackend), backend
        return backend

    # -- connections ---------------------------------------------------------------------
    def _track(self, conn: Connection) -> Connection:
        self._seen.setdefault(conn.id, conn)
        self.received.setdefault(conn.id, [])
        return conn

    def add(self, name: str, conn: Connection) -> Connection:
        """Call ``conn`` (made by the test) ``name``."""
        assert name not in self.conns, name
        self.conns[name] = self._track(conn)
        return conn

    def sock(self, name: str | None = None, features: int | None = None) -> Connection:
        """A new privileged socket connection (dom0), named if ``name`` is given."""
        conn = self.engine.connect(Caller(self.engine.priv_domid, True), "socket", features)
        return self.add(name, conn) if name is not None else self._track(conn)

    @property
    def dom0(self) -> Connection:
        """The toolstack's own privileged socket (made on first use)."""
        if self._dom0 is None:
            self._dom0 = self.sock()
        return self._dom0

    def _introduce(self, domid: int, port: int = 1) -> Domain:
        self.ok(self.dom0, Op.INTRODUCE, z(domid, 0, port))
        dom = self.engine.domains[domid]
        if dom.conn is not None:
            self._track(dom.conn)
        return dom

    def introduce(self, domid: int, port: int = 1) -> Connection:
        """INTRODUCE ``domid`` from dom0; the connection the backend made for its ring."""
        conn = self._introduce(domid, port).conn
        assert conn is not None, "the engine's backend makes no ring connection"
        return conn

    def home(self, domid: int, *perms: str) -> str:
        """The toolstack's /local/domain/<domid>, owned by the domain (then ``perms``)."""
        path = f"/local/domain/{domid}"
        self.ok(self.dom0, Op.MKDIR, z(path))
        self.ok(self.dom0, Op.SET_PERMS, z(path, f"n{domid}", *perms))
        return path

    def guest(self, domid: int) -> Connection:
        """A toolstack-made domain: its home, INTRODUCE, and its unprivileged ring
        connection (made here when the engine's backend maps no ring)."""
        self.home(domid)
        dom = self._introduce(domid)
        if dom.conn is None:
            dom.conn = self._track(self.engine.connect(Caller(domid, False), "ring"))
        assert not dom.conn.caller.privileged
        return dom.conn

    def dom(
        self,
        name: str | None,
        domid: int,
        introduce: bool = True,
        features: int | None = None,
        privileged: bool = False,
    ) -> Connection:
        """A connection of domain ``domid`` (unprivileged unless asked), named if ``name``
        is given: the domain's own connection made at INTRODUCE if it is still free, else
        a new one."""
        assert name is None or name not in self.conns, name
        if introduce and domid not in self.engine.domains:
            self._introduce(domid)
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
        return self.add(name, conn) if name is not None else self._track(conn)

    def conn(self, who: Who) -> Connection:
        """The connection ``who`` (a name is made on first use; see the module doc)."""
        if isinstance(who, Connection):
            return self._track(who)
        found = self.conns.get(who)
        if found is not None:
            return found
        m = _DOMAIN_NAME.fullmatch(who)
        if m is None:
            return self.sock(who)
        return self.dom(who, int(m.group(1)))

    def owned(self, domid: int) -> int:
        """How many nodes ``domid`` owns."""
        return self.engine.tree.owner_count.get(domid, 0)

    # -- requests ------------------------------------------------------------------------
    def feed(self, who: Who, data: bytes) -> list[Msg]:
        """Feed raw bytes; return everything now queued on that connection, in order.

        Whatever other connections received is collected too (it must be watch events).
        """
        conn = self.conn(who)
        self.engine.feed(conn, data)
        mine = decode(conn.take_output())
        self._collect(skip=conn)
        return mine

    def _collect(self, skip: Connection | None = None) -> None:
        """Keep the events queued on every connection but ``skip``."""
        woken = self.engine.woken
        for other in list(woken):
            self._track(other)
        woken.clear()
        for other in self._seen.values():
            if other is skip:
                continue
            for m in decode(other.take_output()):
                assert m.op == Op.WATCH_EVENT, f"{other} got a non-event {m}"
                self.received[other.id].append(m)

    def request(self, who: Who, op: int, payload: bytes | str, tx: int = 0) -> Result:
        """Send one request; return its reply and the events around it on ``who``."""
        self._req_id = (self._req_id + 1) & 0xFFFFFFFF
        conn = self.conn(who)
        msgs = self.feed(conn, encode(op, self._req_id, tx, wire(payload)))
        replies = [i for i, m in enumerate(msgs) if not (m.op == Op.WATCH_EVENT and m.req_id == 0)]
        assert len(replies) == 1, f"expected one reply, got {msgs}"
        i = replies[0]
        reply = msgs[i]
        assert reply.req_id == self._req_id and reply.tx_id == tx, reply
        result = Result(reply, msgs[:i], msgs[i + 1 :])
        self.received[conn.id].extend(result.before + result.after)
        return result

    def call(self, who: Who, op: int, payload: bytes | str, tx: int = 0) -> bytes | str:
        """The reply payload, or the error name of an error reply."""
        reply = self.request(who, op, payload, tx).reply
        if reply.error is not None:
            return reply.error
        assert reply.op == op, reply
        return reply.payload

    def ok(self, who: Who, op: int, payload: bytes | str, tx: int = 0) -> bytes:
        """The reply payload of a request that must succeed (else :class:`ErrorReply`)."""
        got = self.call(who, op, payload, tx)
        if isinstance(got, str):
            raise ErrorReply(got, f"{op_name(op)} {wire(payload)[:80]!r}")
        return got

    def error(self, who: Who, op: int, payload: bytes | str, tx: int = 0) -> str:
        """The errno name of a request that must be refused."""
        got = self.call(who, op, payload, tx)
        assert isinstance(got, str), f"{op_name(op)} {wire(payload)[:80]!r} succeeded: {got!r}"
        return got

    def write(self, who: Who, path: str, value: bytes | str = b"", tx: int = 0) -> None:
        raw = value.encode() if isinstance(value, str) else value
        self.ok(who, Op.WRITE, path.encode() + b"\0" + raw, tx)

    def write_error(self, who: Who, path: str, value: bytes | str = b"", tx: int = 0) -> str:
        """The errno name of a WRITE that must be refused."""
        raw = value.encode() if isinstance(value, str) else value
        return self.error(who, Op.WRITE, path.encode() + b"\0" + raw, tx)

    def read(self, who: Who, path: str, tx: int = 0) -> bytes:
        return self.ok(who, Op.READ, z(path), tx)

    def set_perms(self, who: Who, path: str, *perms: str, tx: int = 0) -> None:
        self.ok(who, Op.SET_PERMS, z(path, *perms), tx)

    def start(self, who: Who) -> int:
        """TRANSACTION_START; the new transaction id."""
        return int(self.ok(who, Op.TRANSACTION_START, b"\0")[:-1])

    def commit(self, who: Who, tx: int, keep: bool = True) -> None:
        """TRANSACTION_END ``T`` (``F`` unless ``keep``), which must succeed."""
        self.ok(who, Op.TRANSACTION_END, b"T\0" if keep else b"F\0", tx)

    def end(self, who: Who, tx: int, commit: bool = True) -> bytes | str:
        """TRANSACTION_END (``T`` or ``F``): ``OK`` or the error name, as :meth:`call`."""
        return self.call(who, Op.TRANSACTION_END, b"T\0" if commit else b"F\0", tx)

    def take_events(self, who: Who) -> list[tuple[str, str]]:
        """Events ``who`` received since the last call, as (path, token)."""
        conn = self.conn(who)
        self._collect()  # also what arrived outside the kit's requests
        got = [m.event for m in self.received[conn.id]]
        self.received[conn.id] = []
        return got


def op_name(op: int) -> str:
    """An op's name for a failure message (its number if it has none)."""
    return Op(op).name if op in Op._value2member_map_ else str(op)
