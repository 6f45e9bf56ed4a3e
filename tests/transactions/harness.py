"""A small sans-I/O harness: an Engine, connections, and requests as (type, payload)."""

from __future__ import annotations

from pyxenstored.core.caller import Caller
from pyxenstored.core.connection import Connection
from pyxenstored.core.engine import Engine
from pyxenstored.protocol.wire import HEADER, Op, encode

Reply = tuple[int, bytes]


class Harness:
    """Drive an Engine with raw requests; collect replies and watch events."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or Engine()
        self.events: dict[int, list[bytes]] = {}

    def conn(self, domid: int = 0, privileged: bool | None = None) -> Connection:
        priv = domid == 0 if privileged is None else privileged
        conn = self.engine.connect(Caller(domid, priv), "socket" if priv else "ring")
        self.events[conn.id] = []
        return conn

    def req(self, conn: Connection, op: int, payload: bytes, tx: int = 0) -> Reply:
        """Send one request; return its reply; keep any watch events aside."""
        self.engine.feed(conn, encode(op, 1, tx, payload))
        self.drain()
        replies = [m for m in self._take(conn) if HEADER.unpack_from(m)[0] != Op.WATCH_EVENT]
        assert len(replies) == 1, replies
        return (HEADER.unpack_from(replies[0])[0], replies[0][16:])

    def _take(self, conn: Connection) -> list[bytes]:
        out = conn.take_output()
        self.events.setdefault(conn.id, []).extend(
            m[16:] for m in out if HEADER.unpack_from(m)[0] == Op.WATCH_EVENT
        )
        return out

    def drain(self) -> None:
        """Collect the watch events queued to every other connection."""
        woken = self.engine.woken
        while woken:
            c = woken.pop()
            # Replies of other connections never appear here: only events.
            for m in c.take_output():
                assert HEADER.unpack_from(m)[0] == Op.WATCH_EVENT
                self.events.setdefault(c.id, []).append(m[16:])

    # conveniences ---------------------------------------------------------------------
    def write(self, conn: Connection, path: str, value: bytes = b"", tx: int = 0) -> Reply:
        return self.req(conn, Op.WRITE, path.encode() + b"\0" + value, tx)

    def read(self, conn: Connection, path: str, tx: int = 0) -> Reply:
        return self.req(conn, Op.READ, path.encode() + b"\0", tx)

    def start(self, conn: Connection) -> int:
        op, body = self.req(conn, Op.TRANSACTION_START, b"\0")
        assert op == Op.TRANSACTION_START, body
        return int(body[:-1])

    def end(self, conn: Connection, tx: int, commit: bool = True) -> Reply:
        return self.req(conn, Op.TRANSACTION_END, b"T\0" if commit else b"F\0", tx)


OK_END = (Op.TRANSACTION_END, b"OK\0")
EAGAIN = (Op.ERROR, b"EAGAIN\0")
