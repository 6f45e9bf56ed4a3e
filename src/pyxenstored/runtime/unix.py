"""The Unix-socket transport: every socket client is the privileged domain, as in C.

Flow control: when a client stops reading and its write buffer passes the high-water
mark, we stop reading its requests (it cannot make us queue more replies). Watch events
caused by *other* clients still arrive; if the buffer passes ``socket_buffer_max`` the
client is cut off with a log line, so a watcher that never reads cannot grow memory
without bound or slow a writer down.

Memory bound (docs/operations.md, "Memory held for one client"): what the daemon holds
for one client (:meth:`SocketProtocol.held_bytes`: unsent output, requests read but not
answered, a partial request) stays at most

    max(socket_buffer_max, HIGH_WATER) + READ_CHUNK + PAYLOAD_MAX + 16 + O

where ``O`` is the output one request (its own or another client's) queues for that
client at once: its reply, and 16 bytes plus path and token per event it causes for the
client's watches. Each term is checked before more is taken: requests are not read past
HIGH_WATER of unsent replies, and output is cut off past ``socket_buffer_max``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from ..core.caller import Caller
from ..core.connection import Connection
from ..core.engine import Engine
from ..protocol.framing import FramingError, Packet
from ..protocol.wire import HEADER

__all__ = ["HIGH_WATER", "READ_CHUNK", "SocketProtocol", "SocketState", "listen_unix"]

log = logging.getLogger("pyxenstored.unix")

#: Bytes of unsent replies at which a client must read before we answer more.
_HIGH_WATER = 256 * 1024
HIGH_WATER = _HIGH_WATER
#: The most one read of a socket hands us (asyncio's and uvloop's read size): requests
#: received in one go are queued in ``backlog`` whatever the high-water mark says.
READ_CHUNK = 256 * 1024


@dataclass(eq=False)
class SocketState:
    """What the socket connections share, and all they know of the daemon (as uvicorn's
    ``ServerState``): the engine, what writes the crash journal, what delivers output
    queued for other connections, the cut-off for unread output, the live connections.

    The daemon's ``Server`` keeps one and updates it (a journal started or stopped, the
    ``limits/socket-buffer-bytes`` setting changed); tests build one with no daemon.
    """

    engine: Engine
    #: writes the crash journal's record of the requests just answered (before their
    #: replies leave)
    persist: Callable[[], None]
    #: delivers output queued for connections other than the current one
    flush: Callable[[], None]
    #: unread output (replies and events) past which a client is cut off
    socket_buffer_max: int = 16 << 20
    #: the connections being served
    clients: set[SocketProtocol] = field(default_factory=set)

    def track(self, proto: SocketProtocol) -> SocketProtocol:
        self.clients.add(proto)
        return proto

    def forget(self, proto: SocketProtocol) -> None:
        self.clients.discard(proto)


class SocketProtocol(asyncio.Protocol):
    """One accepted client connection.

    Requests are answered in arrival order. After each request whose replies pushed the
    transport past its high-water mark, we stop: the rest of the received requests wait
    in ``backlog`` and reading is paused until the client has drained its replies
    (``resume_writing``). So a client that pipelines thousands of requests but reads its
    replies is never mistaken for one that does not read.
    """

    __slots__ = ("backlog", "conn", "paused", "state", "transport")

    def __init__(self, state: SocketState, conn: Connection | None = None) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        #: a connection restored by a live update is adopted, not made
        self.conn: Connection | None = conn
        #: requests read but not yet answered (made when first needed: an empty deque
        #: is ~700 bytes, and most clients never pipeline past the high-water mark)
        self.backlog: deque[Packet] | None = None
        self.paused = False

    # asyncio callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        conn = self.conn
        if conn is None:
            engine = self.state.engine
            conn = engine.connect(Caller(engine.priv_domid, True), "socket")
            self.conn = conn
        conn.sink = self
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        state = self.state
        try:
            packets = conn.reader.feed(data)
        except FramingError as err:
            self._drop(str(err))
            return
        if len(packets) == 1 and not self.paused and not self.backlog:
            # The common case: one request, one answer. Our own replies need no cap
            # check here: the high-water mark pauses us before they can pile up.
            engine = state.engine
            engine.handle(conn, packets[0])
            state.persist()
            out = conn.out
            if out:
                conn.out = []
                conn.out_bytes = 0
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
            if engine.woken:
                state.flush()
            if conn.reader.error:
                self._drop(conn.reader.error)
            return
        backlog = self.backlog
        if backlog is None:
            backlog = self.backlog = deque()
        backlog.extend(packets)
        if not self.paused:
            self._drain_backlog()

    def _drop(self, why: str) -> None:
        """The peer broke the framing: cut it off (what it sent before is answered)."""
        conn = self.conn
        if conn is None or conn.closed:
            return
        log.warning("dropping socket connection %d: %s", conn.id, why)
        self.state.engine.disconnect(conn)
        if self.transport is not None:
            self.transport.abort()
        self.state.flush()

    def _drain_backlog(self) -> None:
        """Answer queued requests until done or until the client must read first."""
        conn = self.conn
        transport = self.transport
        if conn is None or transport is None:
            return
        handle = self.state.engine.handle
        backlog = self.backlog
        if backlog is None:
            backlog = self.backlog = deque()
        persist = self.state.persist
        while backlog and not conn.closed:
            handle(conn, backlog.popleft())
            persist()
            if conn.out_bytes >= _HIGH_WATER:
                self.deliver(conn)
                if self.paused:
                    # pause_writing() paused reading too; resume_writing() goes on. (A
                    # buffer of exactly the mark pauses nothing: then we go on here, or
                    # reading would go on and the backlog grow by another read.)
                    break
        if conn.out:
            self.deliver(conn)
        if self.state.engine.woken:
            self.state.flush()
        if not backlog and conn.reader.error:
            self._drop(conn.reader.error)

    def hand_back(self) -> None:
        """Live update: the requests read but not yet answered go back in front of the
        connection's partial input, so that the state dump carries them as unread."""
        conn = self.conn
        backlog = self.backlog
        if conn is None or not backlog:
            return
        raw = b"".join(
            HEADER.pack(p.op, p.req_id, p.tx_id, len(p.payload)) + p.payload for p in backlog
        )
        backlog.clear()
        conn.reader.preload(raw + conn.reader.pending_data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.backlog = None
        if self.conn is not None:
            self.state.engine.disconnect(self.conn)
        self.state.forget(self)

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            if self.backlog:
                self._drain_backlog()

    def held_bytes(self) -> int:
        """What the daemon holds for this client (the quantity the module's memory bound
        is about): output not yet taken by the kernel, requests read but not answered,
        and a partial request."""
        held = sum(len(p.payload) + 16 for p in self.backlog or ())
        conn = self.conn
        if conn is not None:
            held += conn.out_bytes + conn.reader.pending
        transport = self.transport
        if transport is not None and not transport.is_closing():
            held += transport.get_write_buffer_size()
        return held

    # delivery -------------------------------------------------------------------------
    def deliver(self, conn: Connection) -> None:
        """Hand the connection's queued messages to the socket."""
        transport = self.transport
        out = conn.take_output()
        if transport is None or transport.is_closing():
            return
        if len(out) == 1:
            transport.write(out[0])
        else:
            transport.write(b"".join(out))
        if transport.get_write_buffer_size() > self.state.socket_buffer_max:
            log.warning(
                "closing socket connection %d: %d bytes of replies and events unread",
                conn.id,
                transport.get_write_buffer_size(),
            )
            self.state.engine.disconnect(conn)
            transport.abort()


#: room in ``sockaddr_un.sun_path`` for a path and its terminating NUL
_SUN_PATH_MAX = 108


async def listen_unix(state: SocketState, path: str, backlog: int) -> asyncio.AbstractServer:
    """Bind the daemon socket: stale file removed, mode 0600, directory created.

    The socket appears at ``path`` only once it listens: it is bound under a temporary
    name in the same directory and renamed into place after ``listen()``. A client (or
    an init script) that waits for the file to exist and then connects is never
    refused in between, as it would be if the file appeared at ``bind()``.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            # What bind() would say; a rename must not replace somebody's file.
            raise OSError(errno.EADDRINUSE, "a file that is not a socket is in the way", path)
        os.unlink(path)
    except FileNotFoundError:
        pass
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}")
    if len(os.fsencode(temporary)) >= _SUN_PATH_MAX:
        temporary = path  # no room for a longer name: appear at bind(), as before
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(temporary)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    try:
        os.chmod(temporary, 0o600)
        loop = asyncio.get_running_loop()
        factory: Any = lambda: state.track(SocketProtocol(state))  # noqa: E731
        server = await loop.create_unix_server(factory, sock=sock, backlog=backlog)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    try:
        if temporary != path:
            os.rename(temporary, path)
    except BaseException:
        server.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return server
