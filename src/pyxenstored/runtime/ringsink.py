"""One guest domain's ring: the delivery object of its connection, served a turn at a time.

A :class:`RingSink` is the ``sink`` of its engine
:class:`~pyxenstored.core.connection.Connection`: :meth:`RingSink.deliver` pushes the
connection's queued output into the shared page, and :meth:`RingSink.turn` serves the
ring once (finish a reconnection, push output, read at most 1024 bytes of requests and
answer them). Scheduling, failing and unmapping belong to its
:class:`~pyxenstored.runtime.rings.RingManager`, which owns every sink; the scheduling
contract is described there. :meth:`RingSink.may_read` is the single place for the
stall rules.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..core.connection import Connection
from ..protocol.framing import FramingError
from ..protocol.wire import RingFeature
from ..state.journal import RingRecord
from ..transports.base import Mapping
from ..transports.ring import (
    CONNECTED,
    CONNECTION,
    ERROR_COMM,
    ERROR_PROTO,
    REQ_CONS,
    REQ_PROD,
    RING_SIZE,
    RSP_PROD,
    RingBroken,
    ServerRing,
)

if TYPE_CHECKING:
    from .rings import RingManager

__all__ = ["RingSink"]

# The manager's logger: ring events read as one stream whichever object reports them.
log = logging.getLogger("pyxenstored.rings")

_RECONNECTION = int(RingFeature.RECONNECTION)
_new = tuple.__new__


class RingSink:
    """One domain's ring: the delivery object of its connection and its turn."""

    __slots__ = (
        "broken",
        "closed",
        "conn",
        "domid",
        "manager",
        "mapping",
        "offset",
        "peeked",
        "port",
        "queue",
        "ring",
    )

    def __init__(
        self,
        manager: RingManager,
        domid: int,
        conn: Connection,
        mapping: Mapping,
        ring: ServerRing,
        port: int,
    ) -> None:
        self.manager = manager
        self.domid = domid
        self.conn = conn
        self.mapping = mapping
        self.ring = ring
        #: the local event-channel port
        self.port = port
        #: messages taken from ``conn.out`` but not yet fully in the ring (still counted
        #: in ``conn.out_bytes``, so the engine's event cap sees them)
        self.queue: list[bytes] = []
        #: bytes of ``queue[0]`` already written
        self.offset = 0
        #: the ring broke the protocol and is no longer served
        self.broken = False
        #: released: unmapped and unbound
        self.closed = False
        #: request bytes read in this turn, taken from the ring once journaled
        self.peeked = 0

    def __repr__(self) -> str:
        state = "closed" if self.closed else "broken" if self.broken else "ok"
        return f"RingSink(dom{self.domid}, port={self.port}, {state})"

    # -- output ---------------------------------------------------------------------------
    def deliver(self, conn: Connection) -> None:
        """Push queued output into the ring (``Server.flush`` calls this)."""
        if self.broken or self.closed:
            return
        manager = self.manager
        if conn.out_bytes > manager.privileged_cap and conn.caller.privileged:
            # The engine never drops a privileged peer's events: past the cap a ring
            # that does not read is cut off, as a privileged socket is.
            log.warning(
                "domain %d: %d bytes of replies and events undelivered, past "
                "limits/socket-buffer-bytes: its ring is no longer served",
                self.domid,
                conn.out_bytes,
            )
            manager.fail(self, ERROR_COMM, "undelivered output past the cap")
            return
        try:
            moved = self._push()
            # Room freed below the stall mark: requests left waiting can be read again.
            if moved and self.ring.has_input() and self.may_read():
                manager.wake(self)
        except RingBroken as err:
            manager.fail(self, err.code, str(err))
            return
        if moved:
            manager.xen.notify(self.port)

    def _push(self) -> bool:
        """Write as much queued output as fits; True if ``rsp_prod`` moved."""
        conn = self.conn
        queue = self.queue
        out = conn.out
        if not queue and len(out) == 1:
            # The common case, a turn's one reply: straight into the ring.
            data = out[0]
            n = self.ring.write(data)
            out.clear()
            if n < len(data):
                queue.append(data)
                self.offset = n
            if not n:
                return False
            conn.out_bytes -= n
            return True
        if out:
            queue.extend(out)
            out.clear()
        if not queue:
            return False
        offset = self.offset
        if len(queue) == 1 or len(queue[0]) - offset >= RING_SIZE:
            data = queue[0][offset:] if offset else queue[0]
        else:
            chunks = []
            size = 0
            for msg in queue:
                piece = msg[offset:] if offset else msg
                offset = 0
                chunks.append(piece)
                size += len(piece)
                if size >= RING_SIZE:
                    break
            data = b"".join(chunks)
        n = self.ring.write(data)
        if not n:
            return False
        conn.out_bytes -= n
        # Drop the messages written whole (one slice deletion: the queue is a list, whose
        # empty form costs 56 bytes per ring where a deque's costs ~700).
        offset = self.offset
        done = 0
        while n:
            left = len(queue[done]) - offset
            if left <= n:
                n -= left
                done += 1
                offset = 0
            else:
                offset += n
                n = 0
        if done:
            del queue[:done]
        self.offset = offset
        return True

    def drop_output(self) -> None:
        self.queue.clear()
        self.offset = 0

    # -- input ----------------------------------------------------------------------------
    def may_read(self) -> bool:
        """Whether requests may be read now (the stall rules live here): not while the
        guest leaves too much output unread, nor while the engine holds the domain back
        (outstanding-request or memory quota, conflict credit). Requests wait in the
        ring; none is failed."""
        conn = self.conn
        if conn.out_bytes > self.manager.read_stall:
            return False
        return not self.manager.engine.paused(conn, len(self.queue))

    def wants_turn(self) -> bool:
        """Whether a turn could do anything: input waits, output waits, or the guest
        asked to reconnect (a sweep after lost kicks skips idle rings cheaply)."""
        ring = self.ring
        return bool(ring.has_input() or self.queue or self.conn.out or ring.reconnect_requested())

    def turn(self) -> bool:
        """Serve the ring once; True if it has more input and deserves another turn."""
        if self.broken or self.closed:
            return False
        manager = self.manager
        ring = self.ring
        conn = self.conn
        # The page's u32 fields are read directly (one aligned load each, as the ring's
        # own methods do): a turn runs once per kick, and each method call costs more
        # than the load it wraps.
        words = ring.words
        try:
            if words[CONNECTION] != CONNECTED and conn.features & _RECONNECTION:
                self._reconnect()
                return False
            moved = self._push() if self.queue or conn.out else False
            more = False
            if words[REQ_PROD] == words[REQ_CONS]:
                pass
            elif not self.may_read():
                manager.stall(self)
            else:
                data = ring.peek(RING_SIZE)
                if data:
                    moved = True
                    self._answer(data)
                    if self.closed or self.broken:
                        return False
                    if conn.out or self.queue:
                        self._push()
                    more = words[REQ_PROD] != words[REQ_CONS]
        except RingBroken as err:
            manager.fail(self, err.code, str(err))
            return False
        except FramingError as err:
            manager.fail(self, ERROR_PROTO, str(err))
            return False
        if moved:
            manager.xen.notify(self.port)
        return more

    def _answer(self, data: bytes) -> None:
        """Answer the requests in ``data`` (read, not yet taken), journal the answers,
        then take the bytes from the ring: a crash before the journal leaves the
        requests in the ring for the next process, a crash after it leaves their answers
        in the journal (see ``state.journal``, RING)."""
        manager = self.manager
        self.peeked = len(data)
        if manager.journaling:
            manager.dirty[self] = None
        try:
            manager.engine.feed(self.conn, data)
        finally:
            manager.persist()
            self.peeked = 0
            if not self.closed:
                self.ring.consume(len(data))

    def journal_record(self) -> RingRecord:
        """Where this ring stands, for the crash journal: requests answered up to
        ``req_cons`` (the bytes of this turn included), the replies and events not yet
        in the ring, and a partial request."""
        words = self.ring.words
        conn = self.conn
        queue = self.queue
        out = conn.out
        if queue:
            unsent = b"".join(queue)[self.offset :]
            if out:
                unsent += b"".join(out)
        else:
            unsent = out[0] if len(out) == 1 else b"".join(out)
        # tuple.__new__ skips the named tuple's Python-level __new__ (once per request).
        return _new(
            RingRecord,
            (
                self.domid,
                (words[REQ_CONS] + self.peeked) & 0xFFFFFFFF,
                words[RSP_PROD],
                unsent,
                conn.reader.pending_data,
            ),
        )

    def _reconnect(self) -> None:
        """The guest asked to reconnect: start afresh on both sides (xenstore-ring.txt)."""
        manager = self.manager
        manager.engine.reset_connection(self.conn)
        self.drop_output()
        self.ring.reset()
        self.ring.set_connected()
        if manager.journaling:
            manager.dirty[self] = None
            manager.persist()
        manager.xen.notify(self.port)
        log.info("domain %d reconnected its ring", self.domid)
