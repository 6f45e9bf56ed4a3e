"""A raw socket to the daemon: exact bytes out, packets in, for tests that must see
message order or send what no well-behaved client would."""

from __future__ import annotations

import socket
import time
from collections import deque

from pyxenstored.protocol.framing import Packet, PacketReader
from pyxenstored.protocol.wire import Op, encode


class RawConn:
    """One Unix-socket connection with framing but no policy."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.timeout = timeout
        self._framing = PacketReader()
        self._packets: deque[Packet] = deque()
        self.events: list[Packet] = []

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_msg(self, op: int, payload: bytes, req_id: int = 0, tx_id: int = 0) -> None:
        self.sock.sendall(encode(op, req_id, tx_id, payload))

    def recv_packet(self, timeout: float | None = None) -> Packet:
        """The next packet; TimeoutError if none; ConnectionError at EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._packets:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("EOF")
            self._packets.extend(self._framing.feed(data))
        return self._packets.popleft()

    def request(self, op: int, payload: bytes, req_id: int = 7, tx_id: int = 0) -> Packet:
        """Send one request and return its reply; events met on the way go to .events."""
        self.send_msg(op, payload, req_id, tx_id)
        while True:
            packet = self.recv_packet()
            if packet.op == Op.WATCH_EVENT:
                self.events.append(packet)
                continue
            return packet

    def recv_event(self, timeout: float | None = None) -> Packet:
        """The next watch event (those met by :meth:`request` first); replies that
        arrive meanwhile are an error."""
        if self.events:
            return self.events.pop(0)
        packet = self.recv_packet(timeout)
        assert packet.op == Op.WATCH_EVENT, packet
        return packet

    def wait_closed(self, timeout: float = 5.0) -> tuple[bool, int]:
        """Read and discard until the daemon closes the connection.

        Returns (closed, bytes discarded); closed is False if ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        total = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, total
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return False, total
            except OSError:  # ECONNRESET: closed with unread data
                return True, total
            if not data:
                return True, total
            total += len(data)

    def is_open(self, wait: float = 0.2) -> bool:
        """True if nothing (not even EOF) arrives within ``wait`` seconds."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1 << 16, socket.MSG_PEEK)
        except TimeoutError:
            return True
        except OSError:
            return False
        return bool(data)


def error_name(packet: Packet) -> str:
    """The errno name of an ERROR reply (AssertionError for anything else)."""
    assert packet.op == Op.ERROR, packet
    return packet.payload.rstrip(b"\0").decode()
