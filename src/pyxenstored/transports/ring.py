"""The shared xenstore ring page: pure index arithmetic, no I/O (xenstore-protocol.md §7).

The page is ``struct xenstore_domain_interface`` (§7.1): two 1024-byte byte rings, four
free-running u32 indexes, ``server_features``, ``connection``, ``error`` and
``evtchn_port``. This module works on any 4096-byte writable buffer (an ``mmap`` of a
grant mapping, of ``/proc/xen/xsd_kva``, of a simulated page, or a ``bytearray`` in
tests); it never notifies anyone: callers notify the peer whenever a method reports that
an index moved.

Contract, for both ends:

* Every index and every other u32 field is read and written as **one aligned 32-bit
  access** through ``memoryview(page).cast("I")``. ``struct.pack_into`` is never used:
  it clears the four bytes before writing them, so the peer could see a torn index of 0
  and declare a healthy ring broken.
* Each transfer loads the producer and the consumer index **once**, validates
  ``(prod - cons) mod 2**32 <= 1024`` (XSA-38) and raises :class:`RingBroken` with
  :data:`ERROR_RINGIDX` otherwise; nothing is copied from or to a broken ring.
* Indexes run freely modulo 2**32; byte ``x`` of a stream lives at ``x & 1023``. Neither
  side assumes they start at 0. A transfer copies the data first and publishes the new
  index after it (the order a barrier would enforce; on x86 stores are not reordered
  with older stores and CPython performs the copy and the index store in program order).
* Messages are byte streams here: any message may be split over any number of
  transfers. Framing belongs to ``protocol.framing``.

:class:`ServerRing` is the daemon's end (reads requests, writes responses and owns
``server_features`` and ``error``); :class:`GuestRing` is the guest's end, used by the
guest-side client and by tests.
"""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = [
    "CONNECTED",
    "ERROR_COMM",
    "ERROR_NONE",
    "ERROR_PROTO",
    "ERROR_RINGIDX",
    "PAGE_SIZE",
    "RECONNECT",
    "RING_SIZE",
    "GuestRing",
    "RingBroken",
    "ServerRing",
]

PAGE_SIZE = 4096
RING_SIZE = 1024
_MASK = RING_SIZE - 1
_U32 = 0xFFFFFFFF

#: byte offsets of the two data rings
REQ_OFFSET = 0
RSP_OFFSET = 1024
#: u32 word indexes of the fields after the rings (byte offset / 4)
REQ_CONS = 2048 // 4
REQ_PROD = 2052 // 4
RSP_CONS = 2056 // 4
RSP_PROD = 2060 // 4
SERVER_FEATURES = 2064 // 4
CONNECTION = 2068 // 4
ERROR = 2072 // 4
EVTCHN_PORT = 2076 // 4

#: ``connection`` values (xenstore-ring.txt)
CONNECTED = 0
RECONNECT = 1

#: ``error`` values (xs_wire.h:137-140)
ERROR_NONE = 0
ERROR_COMM = 1
ERROR_RINGIDX = 2
ERROR_PROTO = 3


#: what the write methods accept
Bytes: TypeAlias = bytes | bytearray | memoryview


class RingBroken(Exception):
    """The peer broke the ring protocol; ``code`` is the value for the ``error`` field."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Page:
    """Typed access to one page: bytes through ``mem``, u32 fields through ``words``."""

    __slots__ = ("mem", "words")

    def __init__(self, page: Any) -> None:
        mem = memoryview(page)
        if mem.format != "B" or mem.ndim != 1 or mem.nbytes < PAGE_SIZE or mem.readonly:
            mem.release()
            raise ValueError("a ring needs a writable 4096-byte page of bytes")
        self.mem = mem
        self.words = mem.cast("I")

    def release(self) -> None:
        """Drop the buffer exports, so that the underlying mmap can be closed."""
        self.words.release()
        self.mem.release()

    # -- fields shared by both ends ------------------------------------------------------
    @property
    def server_features(self) -> int:
        return int(self.words[SERVER_FEATURES])

    @property
    def connection(self) -> int:
        return int(self.words[CONNECTION])

    @property
    def error(self) -> int:
        return int(self.words[ERROR])

    @property
    def evtchn_port(self) -> int:
        return int(self.words[EVTCHN_PORT])

    # -- the two transfer primitives --------------------------------------------------
    def _consume(self, data_off: int, cons_w: int, prod_w: int, limit: int) -> bytes:
        words = self.words
        cons = words[cons_w]
        data = self._copy(data_off, cons, words[prod_w], limit)
        if data:
            words[cons_w] = (cons + len(data)) & _U32
        return data

    def _copy(self, data_off: int, cons: int, prod: int, limit: int) -> bytes:
        """The bytes between ``cons`` and ``prod`` (loaded once by the caller), at most
        ``limit``."""
        avail = (prod - cons) & _U32
        if avail > RING_SIZE:
            raise RingBroken(ERROR_RINGIDX, f"bad ring indexes cons={cons} prod={prod}")
        n = min(avail, limit)
        if not n:
            return b""
        start = cons & _MASK
        first = min(n, RING_SIZE - start)
        mem = self.mem
        base = data_off + start
        if first == n:
            return bytes(mem[base : base + n])
        return bytes(mem[base : base + first]) + bytes(mem[data_off : data_off + n - first])

    def _produce(self, data_off: int, cons_w: int, prod_w: int, data: Bytes) -> int:
        words = self.words
        cons = words[cons_w]
        prod = words[prod_w]
        used = (prod - cons) & _U32
        if used > RING_SIZE:
            raise RingBroken(ERROR_RINGIDX, f"bad ring indexes cons={cons} prod={prod}")
        n = min(RING_SIZE - used, len(data))
        if not n:
            return 0
        start = prod & _MASK
        first = min(n, RING_SIZE - start)
        mem = self.mem
        base = data_off + start
        mem[base : base + first] = data[:first]
        if first < n:
            mem[data_off : data_off + n - first] = data[first:n]
        words[prod_w] = (prod + n) & _U32
        return n

    def _used(self, cons_w: int, prod_w: int) -> int:
        words = self.words
        used = (words[prod_w] - words[cons_w]) & _U32
        if used > RING_SIZE:
            raise RingBroken(ERROR_RINGIDX, "bad ring indexes")
        return int(used)


class ServerRing(_Page):
    """The daemon's end of a ring page."""

    __slots__ = ()

    def read(self, limit: int = RING_SIZE) -> bytes:
        """Take up to ``limit`` request bytes (both wrapped pieces); ``b""`` if none.

        ``req_cons`` moves when the result is not empty: notify the guest then.

        Raises:
            RingBroken: the request indexes are out of range.
        """
        return self._consume(REQ_OFFSET, REQ_CONS, REQ_PROD, limit)

    def peek(self, limit: int = RING_SIZE) -> bytes:
        """Copy up to ``limit`` request bytes without taking them (``req_cons`` stays):
        :meth:`consume` takes them once they are answered and journaled, so that a
        daemon that dies in between finds them still in the ring.

        Raises:
            RingBroken: the request indexes are out of range.
        """
        words = self.words
        return self._copy(REQ_OFFSET, words[REQ_CONS], words[REQ_PROD], limit)

    def consume(self, n: int) -> None:
        """Take ``n`` request bytes that :meth:`peek` returned (``req_cons`` moves by
        ``n``: notify the guest)."""
        words = self.words
        words[REQ_CONS] = (words[REQ_CONS] + n) & _U32

    @property
    def req_cons(self) -> int:
        return int(self.words[REQ_CONS])

    @property
    def rsp_prod(self) -> int:
        return int(self.words[RSP_PROD])

    def settle(self, req_cons: int) -> bool:
        """Recovery: set ``req_cons`` to ``req_cons`` (the index a journal says its
        requests were answered up to) if that is ahead of the current one by no more than
        the bytes the guest has produced; False (nothing changed) otherwise.
        """
        words = self.words
        cons = words[REQ_CONS]
        ahead = (req_cons - cons) & _U32
        avail = (words[REQ_PROD] - cons) & _U32
        if not ahead:
            return True
        if avail > RING_SIZE or ahead > avail:
            return False
        words[REQ_CONS] = req_cons & _U32
        return True

    def write(self, data: Bytes) -> int:
        """Put as much of ``data`` as fits into the response ring; return the count.

        ``rsp_prod`` moves when the count is not 0: notify the guest then.

        Raises:
            RingBroken: the response indexes are out of range.
        """
        return self._produce(RSP_OFFSET, RSP_CONS, RSP_PROD, data)

    def has_input(self) -> bool:
        """Whether request bytes are waiting (no validation: a read validates)."""
        words = self.words
        return bool(words[REQ_PROD] != words[REQ_CONS])

    def free(self) -> int:
        """Room in the response ring.

        Raises:
            RingBroken: the response indexes are out of range.
        """
        return RING_SIZE - self._used(RSP_CONS, RSP_PROD)

    def reset(self) -> None:
        """Set all four indexes to 0 (INTRODUCE, reconnection)."""
        words = self.words
        words[REQ_CONS] = 0
        words[REQ_PROD] = 0
        words[RSP_CONS] = 0
        words[RSP_PROD] = 0

    def reconnect_requested(self) -> bool:
        return bool(self.words[CONNECTION] != CONNECTED)

    def set_connected(self) -> None:
        self.words[CONNECTION] = CONNECTED

    def advertise(self, features: int) -> None:
        """Write ``server_features`` (the caller never clears a bit it advertised)."""
        self.words[SERVER_FEATURES] = features & _U32

    def set_error(self, code: int) -> None:
        self.words[ERROR] = code & _U32


class GuestRing(_Page):
    """The guest's end of a ring page."""

    __slots__ = ()

    def write(self, data: Bytes) -> int:
        """Put as much of ``data`` as fits into the request ring; return the count.

        Raises:
            RingBroken: the request indexes are out of range.
        """
        return self._produce(REQ_OFFSET, REQ_CONS, REQ_PROD, data)

    def read(self, limit: int = RING_SIZE) -> bytes:
        """Take up to ``limit`` response bytes; ``b""`` if none.

        Raises:
            RingBroken: the response indexes are out of range.
        """
        return self._consume(RSP_OFFSET, RSP_CONS, RSP_PROD, limit)

    def free(self) -> int:
        """Room in the request ring.

        Raises:
            RingBroken: the request indexes are out of range.
        """
        return RING_SIZE - self._used(REQ_CONS, REQ_PROD)

    def request_reconnect(self) -> None:
        """Start the reconnection handshake (only if RECONNECTION is advertised)."""
        self.words[CONNECTION] = RECONNECT

    def set_evtchn_port(self, port: int) -> None:
        self.words[EVTCHN_PORT] = port & _U32
