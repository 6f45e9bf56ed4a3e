"""asyncio clients for the bootstorm: one ``Conn`` interface over a socket or a guest's ring.

``SocketConn`` is standard library only.  ``GuestConn`` wraps a client that the caller
builds with pyxenstored's ``client.aio`` (``guests.import_client``, ring mode only).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from xsbench.wire import HEADER, XS_ERROR, XS_WATCH_EVENT, XsError, error_name, try_connect

PACK = HEADER.pack
UNPACK_FROM = HEADER.unpack_from

CONNECT_TIMEOUT = 120.0

Reply = tuple[int, bytes]


class Conn(Protocol):
    """What a VM start needs from a connection: one request, its reply (type, payload)."""

    def call(self, op: int, payload: bytes, tx: int = 0) -> Awaitable[Reply]: ...


class _XsProtocol(asyncio.BufferedProtocol):
    """A Unix-socket xenstore connection: replies matched by req_id, events counted.

    A BufferedProtocol: the transport reads into one preallocated buffer
    (``recv_into``) rather than allocating asyncio's 256 KiB ``recv`` buffer for
    every reply, which halves the client's CPU time per request.
    """

    SIZE = 65536

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray(self.SIZE)
        self.view = memoryview(self.buf)
        self.start = 0  # first unparsed byte
        self.end = 0  # end of the received bytes
        self.waiting: dict[int, asyncio.Future[Reply]] = {}
        self.events = 0
        self.on_event: Callable[[bytes], None] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        start, end = self.start, self.end
        if start == end:
            self.start = self.end = 0
        elif self.SIZE - end < 8192:  # keep room for a whole message (at most 4112 bytes)
            self.buf[: end - start] = self.buf[start:end]
            self.start, self.end = 0, end - start
        return self.view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        buf = self.buf
        end = self.end = self.end + nbytes
        off = self.start
        waiting = self.waiting
        while end - off >= 16:
            op, req_id, _tx, length = UNPACK_FROM(buf, off)
            stop = off + 16 + length
            if stop > end:
                break
            payload = bytes(buf[off + 16 : stop])
            off = stop
            if op == XS_WATCH_EVENT:
                self.events += 1
                if self.on_event is not None:
                    self.on_event(payload)
                continue
            fut = waiting.pop(req_id, None)
            if fut is not None and not fut.done():
                fut.set_result((op, payload))
        self.start = off

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost fails the waiters

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        err = ConnectionError(f"daemon closed the connection ({exc or 'EOF'})")
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(err)
        self.waiting.clear()


async def connect_unix_async(path: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A connected non-blocking socket; retries while the daemon's backlog is full.

    See ``wire.try_connect``.  Refused or missing sockets are not retried: the daemon
    was serving when the run began.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 1e-4
    while (sock := try_connect(path, (BlockingIOError, InterruptedError))) is None:
        if loop.time() > deadline:
            raise TimeoutError(f"could not connect to {path} within {timeout:.0f} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5e-3)
    return sock


class SocketConn:
    """A Unix-socket connection (the dom0 toolstack, or a watcher)."""

    def __init__(self, transport: asyncio.Transport, proto: _XsProtocol, counter: list[int]):
        self.transport = transport
        self.proto = proto
        self.counter = counter  # counter[0] += 1 per request
        self.next_id = 1
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, path: str, counter: list[int]) -> SocketConn:
        sock = await connect_unix_async(path)
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_unix_connection(_XsProtocol, sock=sock)
        assert isinstance(transport, asyncio.Transport)
        return cls(transport, proto, counter)

    def call(self, op: int, payload: bytes, tx: int = 0) -> asyncio.Future[Reply]:
        req_id = self.next_id
        self.next_id = req_id + 1
        fut: asyncio.Future[Reply] = self.loop.create_future()
        if self.proto.lost:
            fut.set_exception(ConnectionError("daemon closed the connection"))
            return fut
        self.proto.waiting[req_id] = fut
        self.transport.write(PACK(op, req_id, tx, len(payload)) + payload)
        self.counter[0] += 1
        return fut

    def close(self) -> None:
        self.transport.close()


class GuestConn:
    """A simulated guest's connection over its ring (pyxenstored.client, ring mode only)."""

    def __init__(self, client: Any, counter: list[int]) -> None:
        self.client = client
        self.counter = counter

    async def call(self, op: int, payload: bytes, tx: int = 0) -> Reply:
        self.counter[0] += 1
        packet = await self.client.exchange(op, payload, tx)
        return packet.op, packet.payload


async def request(
    conn: Conn, op: int, payload: bytes, tx: int = 0, allow: Sequence[str] = ()
) -> bytes | None:
    """One round trip; the reply payload, None for an allowed error, else XsError."""
    rtype, reply = await conn.call(op, payload, tx)
    if rtype != XS_ERROR:
        return reply
    name = error_name(reply)
    if name in allow:
        return None
    raise XsError(name, op, payload)
