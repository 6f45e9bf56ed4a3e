"""Incremental framing: bytes in, whole packets out, across any split.

:class:`PacketReader` is fed whatever a transport received and returns the packets that
are now complete. A header announcing more than :data:`PAYLOAD_MAX` bytes is a broken
peer, not a bad request: :class:`FramingError` tells the transport to cut the connection
(a socket is closed; a ring gets error 3, XENSTORE_ERROR_PROTO) (xenstore-protocol.md §1.2).
"""

from __future__ import annotations

from typing import NamedTuple

from .wire import HEADER, HEADER_SIZE, PAYLOAD_MAX

__all__ = ["FramingError", "Packet", "PacketReader"]

_unpack_from = HEADER.unpack_from
_new = tuple.__new__


class Packet(NamedTuple):
    """One decoded message."""

    op: int
    req_id: int
    tx_id: int
    payload: bytes


class FramingError(Exception):
    """The peer broke the framing rules; the connection must be dropped."""


class PacketReader:
    """Reassembles packets from a byte stream.

    ``feed`` never raises for a partial packet; it keeps the remainder. After a
    :class:`FramingError` the reader must not be used again.
    """

    __slots__ = ("_buf", "error")

    def __init__(self) -> None:
        self._buf = b""
        #: set when a bad header followed complete packets in one chunk: those packets
        #: are returned, and the peer must then be dropped
        self.error = ""

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete packet."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial packet (ring reconnection, INTRODUCE)."""
        self._buf = b""

    @property
    def pending_data(self) -> bytes:
        """The bytes received but not yet part of a complete packet (state dumps)."""
        return self._buf

    def preload(self, data: bytes) -> None:
        """Start from ``data`` as if it had been received (state restore). Complete
        packets in it come out of the next :meth:`feed` (``feed(b"")`` will do)."""
        self._buf = bytes(data)
        self.error = ""

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data`` and return every packet completed by it, in order.

        Raises:
            FramingError: a header announced a payload longer than PAYLOAD_MAX (when
                complete packets came before it, they are returned and ``error`` is
                set instead).
        """
        if self.error:
            raise FramingError(self.error)
        buf = self._buf + data if self._buf else data
        end = len(buf)
        if end < HEADER_SIZE:
            self._buf = bytes(buf)
            return []
        op, req_id, tx_id, length = _unpack_from(buf, 0)
        if length > PAYLOAD_MAX:
            self._buf = b""
            raise FramingError(f"payload length {length} exceeds {PAYLOAD_MAX}")
        stop = HEADER_SIZE + length
        if stop == end:
            # The common case: exactly one whole request.
            self._buf = b""
            return [_new(Packet, (op, req_id, tx_id, bytes(buf[HEADER_SIZE:])))]
        out: list[Packet] = []
        pos = 0
        while True:
            if stop > end:
                break
            out.append(_new(Packet, (op, req_id, tx_id, bytes(buf[pos + HEADER_SIZE : stop]))))
            pos = stop
            if end - pos < HEADER_SIZE:
                break
            op, req_id, tx_id, length = _unpack_from(buf, pos)
            if length > PAYLOAD_MAX:
                # The requests before the bad header are answered first (as C, which
                # reads one message at a time); ``error`` then tells to drop the peer.
                self._buf = b""
                self.error = f"payload length {length} exceeds {PAYLOAD_MAX}"
                return out
            stop = pos + HEADER_SIZE + length
        self._buf = bytes(buf[pos:]) if pos < end else b""
        return out
