"""The xenstore wire protocol, and a blocking client over the daemon's Unix socket.

A message is a 16-byte little-endian header ``<IIII`` (type, req_id, tx_id, len), then
``len`` payload bytes (xs_wire.h; spec/xenstore-protocol.md §1.3).  Standard library
only, so that the socket benchmarks measure C xenstored, oxenstored and pyxenstored alike.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

HEADER = struct.Struct("<IIII")
PAYLOAD_MAX = 4096

# Message types (xs_wire.h).
XS_DIRECTORY = 1
XS_READ = 2
XS_WATCH = 4
XS_TRANSACTION_START = 6
XS_TRANSACTION_END = 7
XS_INTRODUCE = 8
XS_RELEASE = 9
XS_WRITE = 11
XS_MKDIR = 12
XS_RM = 13
XS_SET_PERMS = 14
XS_WATCH_EVENT = 15
XS_ERROR = 16

OP_NAMES = {
    XS_DIRECTORY: "DIRECTORY",
    XS_READ: "READ",
    XS_WATCH: "WATCH",
    XS_TRANSACTION_START: "TRANSACTION_START",
    XS_TRANSACTION_END: "TRANSACTION_END",
    XS_INTRODUCE: "INTRODUCE",
    XS_WRITE: "WRITE",
    XS_MKDIR: "MKDIR",
    XS_RM: "RM",
    XS_SET_PERMS: "SET_PERMS",
}

CONNECT_TIMEOUT = 60.0


class XsError(Exception):
    """The daemon answered a request with an XS_ERROR reply.

    With the request's ``payload``, the message names the operation and its path.
    """

    def __init__(self, name: str, op: int, payload: bytes | None = None) -> None:
        if payload is None:
            text = f"{name} (request type {op})"
        else:
            what = payload.split(b"\0", 1)[0].decode(errors="replace")
            text = f"{name} on {OP_NAMES.get(op, op)} {what}"
        super().__init__(text)
        self.name = name


def error_name(payload: bytes) -> str:
    """The error name an XS_ERROR reply carries (``EAGAIN``, ``ENOENT``, ...)."""
    return payload.rstrip(b"\0").decode(errors="replace")


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded xenstore message."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes


class MessageReader:
    """Incremental decoder: feed it bytes, get back complete messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buf
        buf += data
        messages: list[Message] = []
        offset = 0
        size = len(buf)
        while size - offset >= HEADER.size:
            msg_type, req_id, tx_id, length = HEADER.unpack_from(buf, offset)
            end = offset + HEADER.size + length
            if end > size:
                break
            messages.append(
                Message(msg_type, req_id, tx_id, bytes(buf[offset + HEADER.size : end]))
            )
            offset = end
        if offset:
            del buf[:offset]
        return messages


def encode(msg_type: int, req_id: int, payload: bytes, tx_id: int = 0) -> bytes:
    """Frame one request."""
    if len(payload) > PAYLOAD_MAX:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {PAYLOAD_MAX}")
    return HEADER.pack(msg_type, req_id, tx_id, len(payload)) + payload


def path_arg(path: str) -> bytes:
    """The payload of READ, DIRECTORY, MKDIR, RM: the path and a NUL."""
    return path.encode() + b"\0"


def write_arg(path: str, value: bytes | str) -> bytes:
    """The payload of WRITE: the path, a NUL, the value (no NUL)."""
    return path.encode() + b"\0" + (value.encode() if isinstance(value, str) else value)


def watch_arg(path: str, token: str) -> bytes:
    return path.encode() + b"\0" + token.encode() + b"\0"


def perms_arg(path: str, perms: Sequence[str]) -> bytes:
    return path.encode() + b"\0" + b"".join(p.encode() + b"\0" for p in perms)


def try_connect(path: str, retry: tuple[type[OSError], ...]) -> socket.socket | None:
    """One non-blocking connect: the socket, or None when the error is one of ``retry``.

    C xenstored and oxenstored listen with a backlog of 1, so a burst of connects gets
    EAGAIN from a non-blocking connect (a blocking one would sleep in the kernel with no
    timeout); the callers retry after a growing pause.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(path)
    except retry:
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    return sock


def connect_unix(path: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """Connect to the daemon's socket, retrying while its backlog is full (or while the
    socket is not there yet).  Returns a blocking socket."""
    retry = (BlockingIOError, InterruptedError, ConnectionRefusedError, FileNotFoundError)
    deadline = time.monotonic() + timeout
    delay = 50e-6
    while (sock := try_connect(path, retry)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not connect to {path} within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 5e-3)
    sock.setblocking(True)
    return sock


class SyncConn(Protocol):
    """The blocking client the sequential workloads use: a socket ``Connection`` or a
    simulated guest's ring (``guests.RingGuest``)."""

    def next_id(self) -> int: ...

    def send(self, data: bytes, /) -> None: ...

    def receive(self) -> Message: ...

    def request(self, msg_type: int, payload: bytes) -> bytes: ...


class Connection:
    """A blocking client connection that matches replies by req_id."""

    def __init__(self, path: str, timeout: float = CONNECT_TIMEOUT) -> None:
        self.sock = connect_unix(path, timeout)
        #: write whole messages (the socket's own ``sendall``: no extra call per request)
        self.send: Callable[[bytes], None] = self.sock.sendall
        self.reader = MessageReader()
        self.pending: list[Message] = []
        self.watch_events = 0
        self._next_id = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_id(self) -> int:
        req_id = self._next_id
        self._next_id = req_id + 1 if req_id < 0xFFFFFFFF else 1
        return req_id

    def receive(self) -> Message:
        """Return the next message from the daemon (reply or watch event)."""
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("daemon closed the connection")
            self.pending = self.reader.feed(data)
        return self.pending.pop(0)

    def request_raw(self, msg_type: int, payload: bytes, tx_id: int = 0) -> Message:
        """Send one request and wait for its reply (which may be XS_ERROR)."""
        req_id = self.next_id()
        self.sock.sendall(encode(msg_type, req_id, payload, tx_id))
        while True:
            msg = self.receive()
            if msg.type == XS_WATCH_EVENT:
                self.watch_events += 1
            elif msg.req_id == req_id:
                return msg

    def request(self, msg_type: int, payload: bytes, tx_id: int = 0) -> bytes:
        """Send one request; return the reply payload or raise XsError."""
        msg = self.request_raw(msg_type, payload, tx_id)
        if msg.type == XS_ERROR:
            raise XsError(error_name(msg.payload), msg_type)
        return msg.payload

    def read(self, path: str) -> bytes:
        return self.request(XS_READ, path_arg(path))

    def write(self, path: str, value: bytes) -> None:
        self.request(XS_WRITE, write_arg(path, value))

    def watch(self, path: str, token: str) -> None:
        self.request(XS_WATCH, watch_arg(path, token))
