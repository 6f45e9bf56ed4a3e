"""Drive the sans-I/O engine with live configuration attached, as the Server wires it
(Registry + ConfigTree), plus unprivileged guests: no sockets, no threads. Given a
``Server`` (constructed, not served), the kit drives that server's engine, so the
runtime's own reactions to settings (access log, log level) happen too.

Shared by tests/quota and tests/liveconfig (imported as ``quota.kit``).

Guests are made as a toolstack makes them: dom0 creates ``/local/domain/<d>``, gives it
to the domain (``n<d>``) and INTRODUCEs it. The backend answers INTRODUCE with an
unprivileged ring connection registered with the engine (so ``Engine.usage`` sees its
watches and transactions) and knows only domains below :data:`KNOWN_DOMAINS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyxenstored.core.caller import Caller
from pyxenstored.core.connection import Connection
from pyxenstored.core.domains import Domain
from pyxenstored.core.engine import Engine
from pyxenstored.liveconfig.registry import Registry
from pyxenstored.liveconfig.tree import ConfigTree
from pyxenstored.protocol.framing import Packet, PacketReader
from pyxenstored.protocol.wire import Op, encode
from pyxenstored.runtime.server import Server

KNOWN_DOMAINS = 1000
#: A domain the hypervisor does not know (GET/SET_QUOTA answer ENOENT for it).
UNKNOWN_DOMAIN = 4242
CONFIG = "/tool/xenstored/"


class Refused(Exception):
    """An error reply; ``name`` is its errno name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass
class RingBackend:
    """Domains below KNOWN_DOMAINS exist; INTRODUCE gives an unprivileged ring."""

    engine: Engine | None = None
    released: list[int] = field(default_factory=list)

    def exists(self, domid: int) -> bool:
        return domid < KNOWN_DOMAINS

    def introduce(self, domid: int, port: int, features: int) -> Connection | None:
        assert self.engine is not None
        return self.engine.connect(Caller(domid, domid == self.engine.priv_domid), "ring")

    def reintroduce(self, domain: Domain, port: int) -> None:
        return None

    def reset(self, domain: Domain) -> None:
        return None

    def release(self, domain: Domain) -> None:
        self.released.append(domain.domid)


def payload_of(*args: str | bytes) -> bytes:
    return b"".join((a.encode() if isinstance(a, str) else a) + b"\0" for a in args)


class Kit:
    """An engine with its live configuration, a dom0 socket connection and guests."""

    def __init__(
        self,
        rule: str = "4.21",
        settings: dict[str, Any] | None = None,
        server: Server | None = None,
    ) -> None:
        self.server = server
        if server is not None:
            # The daemon's own wiring (its backend is NoHypervisor: no ring on INTRODUCE).
            self.engine = server.engine
            self.registry = server.registry
            self.config = server.live_config
        else:
            self.backend = RingBackend()
            self.engine = Engine(backend=self.backend)
            self.backend.engine = self.engine
            self.registry = Registry({"quota/rule": rule, **(settings or {})})
            self.config = ConfigTree(self.engine, self.registry)
        self.dom0 = self.engine.connect(Caller(0, True), "socket")
        self._readers: dict[int, PacketReader] = {}
        self.events: dict[int, list[tuple[str, str]]] = {}
        self._req = 0

    # -- wire ------------------------------------------------------------------------
    def _drain(self, conn: Connection) -> list[Packet]:
        reader = self._readers.setdefault(conn.id, PacketReader())
        replies = []
        for p in reader.feed(b"".join(conn.take_output())):
            if p.op == Op.WATCH_EVENT:
                path, token = p.payload.split(b"\0")[:2]
                self.events.setdefault(conn.id, []).append((path.decode(), token.decode()))
            else:
                replies.append(p)
        return replies

    def raw(self, conn: Connection, op: int, payload: bytes, tx: int = 0) -> Packet:
        """Send one request, return its reply (events go to :attr:`events`)."""
        self._req += 1
        self.engine.feed(conn, encode(op, self._req, tx, payload))
        replies = self._drain(conn)
        for other in list(self.engine.woken):
            if other is not conn:
                self._drain(other)
        self.engine.woken.clear()
        assert len(replies) == 1, replies
        assert replies[0].req_id == self._req
        return replies[0]

    def call(self, conn: Connection, op: int, *args: str | bytes, tx: int = 0) -> bytes:
        """The reply payload; raises :class:`Refused` for an error reply."""
        reply = self.raw(conn, op, payload_of(*args), tx)
        if reply.op == Op.ERROR:
            raise Refused(reply.payload.rstrip(b"\0").decode())
        assert reply.op == op, reply
        return reply.payload

    def error(self, conn: Connection, op: int, *args: str | bytes, tx: int = 0) -> str:
        """The errno name of a request that must be refused."""
        try:
            payload = self.call(conn, op, *args, tx=tx)
        except Refused as err:
            return err.name
        raise AssertionError(f"{Op(op).name} {args!r} succeeded: {payload!r}")

    def write(self, conn: Connection, path: str, value: str | bytes, tx: int = 0) -> None:
        raw = value.encode() if isinstance(value, str) else value
        reply = self.raw(conn, Op.WRITE, path.encode() + b"\0" + raw, tx)
        if reply.op == Op.ERROR:
            raise Refused(reply.payload.rstrip(b"\0").decode())

    def write_error(self, conn: Connection, path: str, value: str | bytes, tx: int = 0) -> str:
        try:
            self.write(conn, path, value, tx)
        except Refused as err:
            return err.name
        raise AssertionError(f"WRITE {path[:80]} succeeded")

    def read(self, conn: Connection, path: str, tx: int = 0) -> bytes:
        return self.call(conn, Op.READ, path, tx=tx)

    def start(self, conn: Connection) -> int:
        """TRANSACTION_START; the new transaction id."""
        return int(self.call(conn, Op.TRANSACTION_START, "")[:-1])

    def commit(self, conn: Connection, tx: int, keep: bool = True) -> None:
        self.call(conn, Op.TRANSACTION_END, "T" if keep else "F", tx=tx)

    def take_events(self, conn: Connection) -> list[tuple[str, str]]:
        self._drain(conn)
        return self.events.pop(conn.id, [])

    # -- configuration ---------------------------------------------------------------
    def setting(self, name: str) -> str:
        """The text of a setting's node, read by dom0."""
        return self.read(self.dom0, CONFIG + name).decode()

    def set(self, name: str, value: str | int) -> None:
        """Write a node under /tool/xenstored/ as dom0."""
        self.write(self.dom0, CONFIG + name, str(value))

    def control(self, *args: str) -> bytes:
        return self.call(self.dom0, Op.CONTROL, *args)

    # -- domains ---------------------------------------------------------------------
    def guest(self, domid: int) -> Connection:
        """A toolstack-made domain: home owned by it, introduced, its ring connection."""
        home = f"/local/domain/{domid}"
        self.call(self.dom0, Op.MKDIR, home)
        self.call(self.dom0, Op.SET_PERMS, home, f"n{domid}")
        self.call(self.dom0, Op.INTRODUCE, str(domid), "0", "1")
        dom = self.engine.domains[domid]
        if dom.conn is None:  # NoHypervisor: the domain is known, its ring is ours to make
            dom.conn = self.engine.connect(Caller(domid, False), "ring")
        assert not dom.conn.caller.privileged
        return dom.conn

    def owned(self, domid: int) -> int:
        return self.engine.tree.owner_count.get(domid, 0)
