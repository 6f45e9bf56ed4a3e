"""The socket protocol's back-pressure, with a fake transport and no daemon: the protocol
knows the daemon only through a ``SocketState`` (engine, journal writer, flush, cap).

The fake transport behaves as asyncio's: ``write`` appends to a buffer and calls
``pause_writing`` once the buffer passes the high-water mark set by the protocol, and
``drain`` (the client reading) calls ``resume_writing`` once it is back at the low mark.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pyxenstored.core.engine import Engine
from pyxenstored.protocol.framing import PacketReader
from pyxenstored.protocol.wire import Op, encode
from pyxenstored.runtime.unix import HIGH_WATER, SocketProtocol, SocketState


class FakeTransport(asyncio.Transport):
    """An in-memory transport: what was written waits in ``buffer`` until drained."""

    def __init__(self, protocol: SocketProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.buffer = bytearray()
        self.reading = True
        self.closing = False
        self.aborted = False
        self.high = 64 * 1024
        self.low = 16 * 1024
        self.writing_paused = False

    # asyncio.Transport ---------------------------------------------------------------
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high if high is not None else self.high
        self.low = low if low is not None else self.high // 4

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def write(self, data: Any) -> None:
        assert not self.closing
        self.buffer += data
        if len(self.buffer) > self.high and not self.writing_paused:
            self.writing_paused = True
            self.protocol.pause_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = self.aborted = True

    def close(self) -> None:
        self.closing = True

    # the client's side -----------------------------------------------------------------
    def drain(self, n: int | None = None) -> bytes:
        """The client reads ``n`` bytes (all if None)."""
        n = len(self.buffer) if n is None else n
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self.writing_paused and len(self.buffer) <= self.low:
            self.writing_paused = False
            self.protocol.resume_writing()
        return out


def state_for(engine: Engine, cap: int = 16 << 20) -> SocketState:
    def flush() -> None:
        woken = engine.woken
        while woken:
            conn = woken.pop()
            if conn.out and conn.sink is not None:
                conn.sink.deliver(conn)

    return SocketState(engine, lambda: None, flush, cap)


def client(state: SocketState) -> tuple[SocketProtocol, FakeTransport]:
    proto = state.track(SocketProtocol(state))
    transport = FakeTransport(proto)
    proto.connection_made(transport)
    return proto, transport


def replies(data: bytes) -> list[tuple[int, int]]:
    return [(p.op, p.req_id) for p in PacketReader().feed(data)]


def test_a_pipelining_client_is_paused_at_the_mark_and_resumed_when_it_reads() -> None:
    engine = Engine()
    state = state_for(engine)
    proto, transport = client(state)
    proto.data_received(encode(Op.WRITE, 0, 0, b"/big\0" + b"x" * 4000))
    transport.drain()
    n = 500  # 500 replies of ~4 KiB: about 2 MiB, eight times the mark
    proto.data_received(b"".join(encode(Op.READ, i + 1, 0, b"/big\0") for i in range(n)))
    # Answered up to the mark, the rest waits; reading is paused.
    assert not transport.reading
    assert proto.backlog
    assert HIGH_WATER <= transport.get_write_buffer_size() < HIGH_WATER + 2 * 4016
    got: list[tuple[int, int]] = []
    pending = b""
    for _ in range(100):
        pending += transport.drain()
        if not proto.backlog and not transport.buffer:
            break
    got = replies(pending)
    assert got == [(int(Op.READ), i + 1) for i in range(n)]
    assert transport.reading
    assert proto.held_bytes() == 0


def test_a_watcher_that_never_reads_is_cut_off_at_the_cap() -> None:
    engine = Engine()
    cap = 100_000
    state = state_for(engine, cap)
    watcher, wt = client(state)
    writer, ww = client(state)
    watcher.data_received(encode(Op.WATCH, 1, 0, b"/w\0tok\0"))
    assert replies(wt.drain()) == [(int(Op.WATCH), 1), (int(Op.WATCH_EVENT), 0)]
    for i in range(2000):
        writer.data_received(encode(Op.WRITE, i, 0, b"/w/%s%d\0v" % (b"n" * 100, i)))
        ww.drain()  # the writer reads its replies
        if wt.aborted:
            break
        assert watcher.held_bytes() <= cap + 64
    assert wt.aborted
    assert watcher.conn is not None and watcher.conn.closed
    # The writer was never slowed down by the watcher: every write was answered.
    assert not ww.buffer and ww.reading
    watcher.connection_lost(None)
    assert watcher not in state.clients and writer in state.clients


def test_the_cap_follows_the_state() -> None:
    """The daemon lowers ``socket_buffer_max`` live (a setting): the next delivery past
    it cuts the client off."""
    engine = Engine()
    state = state_for(engine)
    watcher, wt = client(state)
    writer, _ = client(state)
    watcher.data_received(encode(Op.WATCH, 1, 0, b"/w\0tok\0"))
    for i in range(200):
        writer.data_received(encode(Op.WRITE, i, 0, b"/w/%d\0v" % i))
    assert not wt.aborted
    state.socket_buffer_max = len(wt.buffer) // 2
    writer.data_received(encode(Op.WRITE, 999, 0, b"/w/last\0v"))
    assert wt.aborted
