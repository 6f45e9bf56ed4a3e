"""Drive the sans-I/O engine with domain connections, no I/O: a fake hypervisor backend
whose INTRODUCE makes a ring-kind connection, and helpers to send requests and read
replies and events."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyxenstored.core.caller import Caller
from pyxenstored.core.connection import Connection
from pyxenstored.core.domains import Domain
from pyxenstored.core.engine import Engine
from pyxenstored.errors import Invalid
from pyxenstored.protocol.framing import Packet, PacketReader
from pyxenstored.protocol.wire import Op, encode


class ReplyError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass
class FakeBackend:
    """A hypervisor where domains below 20 exist, recording what the engine asks."""

    existing: set[int] = field(default_factory=lambda: set(range(20)))
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


class Kit:
    """An engine, its fake backend and a privileged socket-like connection (dom0)."""

    def __init__(self, priv_domid: int = 0) -> None:
        self.backend = FakeBackend()
        self.engine = Engine(backend=self.backend, priv_domid=priv_domid)
        self.backend.engine = self.engine
        self.dom0 = self.engine.connect(Caller(priv_domid, True), "socket")
        self._readers: dict[int, PacketReader] = {}
        self._events: dict[int, list[tuple[str, str]]] = {}

    def packets(self, conn: Connection) -> list[Packet]:
        reader = self._readers.setdefault(conn.id, PacketReader())
        out = conn.take_output()
        return reader.feed(b"".join(out))

    def _collect(self, conn: Connection) -> list[Packet]:
        replies = []
        for p in self.packets(conn):
            if p.op == Op.WATCH_EVENT:
                path, token = p.payload.split(b"\0")[:2]
                self._events.setdefault(conn.id, []).append((path.decode(), token.decode()))
            else:
                replies.append(p)
        return replies

    def raw(self, conn: Connection, op: int, payload: bytes, tx: int = 0) -> bytes:
        self.engine.feed(conn, encode(op, 77, tx, payload))
        replies = self._collect(conn)
        for other in list(self.engine.woken):
            self._collect(other)
        self.engine.woken.clear()
        assert len(replies) == 1, replies
        reply = replies[0]
        if reply.op == Op.ERROR:
            raise ReplyError(reply.payload.rstrip(b"\0").decode())
        assert reply.op == op and reply.req_id == 77
        return reply.payload

    def call(self, conn: Connection, op: int, *args: str | bytes, tx: int = 0) -> bytes:
        payload = b"".join((a.encode() if isinstance(a, str) else a) + b"\0" for a in args)
        return self.raw(conn, op, payload, tx)

    def error(self, conn: Connection, op: int, *args: str | bytes) -> str:
        try:
            self.call(conn, op, *args)
        except ReplyError as err:
            return err.name
        raise AssertionError("expected an error reply")

    def write(self, conn: Connection, path: str, value: bytes | str) -> None:
        raw = value.encode() if isinstance(value, str) else value
        self.raw(conn, Op.WRITE, path.encode() + b"\0" + raw)

    def events(self, conn: Connection) -> list[tuple[str, str]]:
        """Watch events delivered to ``conn`` since the last call (initial ones included)."""
        self._collect(conn)
        return self._events.pop(conn.id, [])

    def introduce(self, domid: int, port: int = 1) -> Connection:
        self.call(self.dom0, Op.INTRODUCE, str(domid), "0", str(port))
        conn = self.engine.domains[domid].conn
        assert conn is not None
        return conn

    def home(self, domid: int, perms: tuple[str, ...] = ()) -> None:
        """The toolstack's /local/domain/<domid>, owned by the domain."""
        path = f"/local/domain/{domid}"
        self.call(self.dom0, Op.MKDIR, path)
        self.call(self.dom0, Op.SET_PERMS, path, f"n{domid}", *perms)
