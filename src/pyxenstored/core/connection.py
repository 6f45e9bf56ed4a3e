"""Per-connection state between the bytes and the engine (no I/O here).

The engine appends whole encoded messages to ``out``; the runtime takes them and hands
them to the transport. Watch events are counted separately so a watcher that never reads
can be recognised and contained (it must never stall a writer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from ..protocol.framing import PacketReader
from .caller import Caller

if TYPE_CHECKING:
    from .transactions import Transaction
    from .watches import Watch

__all__ = ["Connection", "ConnectionKind", "Sink"]

#: What carries a connection's bytes: a Unix socket, or a domain's shared ring.
ConnectionKind = Literal["socket", "ring"]


class Sink(Protocol):
    """The runtime object that delivers a connection's queued output (``conn.out``) to
    its transport: the socket protocol (``runtime/unix.py``) or a domain's ring
    (``runtime/ringsink.py``). The core only stores it; the runtime calls
    :meth:`deliver` for every connection the engine woke."""

    def deliver(self, conn: Connection) -> None:
        """Hand as much of ``conn.out`` as the transport takes now to the transport."""


class Connection:
    """One client: a socket, or a domain's ring.

    Attributes:
        id: unique for the daemon's lifetime.
        caller: identity used for permissions and quotas.
        kind: ``"socket"`` or ``"ring"``.
        out: encoded messages waiting for the transport, oldest first.
        out_bytes: the size of ``out``.
        watches: (canonical path, token) -> Watch.
        transactions: id -> Transaction.
        features: ring feature bits in force (WATCHDEPTH decides whether WATCH takes a depth).
    """

    __slots__ = (
        "caller",
        "closed",
        "events_dropped",
        "features",
        "id",
        "kind",
        "next_txid",
        "out",
        "out_bytes",
        "reader",
        "requests",
        "sink",
        "transactions",
        "watch_bytes",
        "watches",
    )

    def __init__(self, conn_id: int, caller: Caller, kind: ConnectionKind, features: int) -> None:
        self.id = conn_id
        self.caller = caller
        self.kind = kind
        self.features = features
        self.reader = PacketReader()
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.watches: dict[tuple[str, bytes], Watch] = {}
        #: Bytes of watch paths and tokens (they count against the memory quota).
        self.watch_bytes = 0
        self.transactions: dict[int, Transaction] = {}
        self.next_txid = 1
        self.closed = False
        self.requests = 0
        self.events_dropped = 0
        #: The runtime's delivery object for this connection (None until it has one).
        self.sink: Sink | None = None

    def take_output(self) -> list[bytes]:
        """Everything queued, emptying the queue (for the transport)."""
        out = self.out
        if out:
            self.out = []
            self.out_bytes = 0
        return out

    def __repr__(self) -> str:
        return f"Connection({self.id}, {self.kind}, {self.caller!r})"
