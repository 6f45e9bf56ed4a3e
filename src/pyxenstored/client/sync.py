"""Blocking xenstore client for scripts and tests: one connection (a Unix socket or a
xenbus device), one request at a time.

Usage::

    with Client() as xs:                       # $XENSTORED_PATH, ... as libxenstore
        xs.write("/tool/x", b"1")
        xs.watch("/tool", "t")
        event = xs.read_watch(timeout=1.0)     # WatchEvent("/tool", "t") or None

Each request is written whole and the call blocks until the reply with its ``req_id``
arrives; watch events that arrive meanwhile are kept in a buffer that
:meth:`Client.read_watch` drains. A lock makes the object usable from several threads
(requests are then serialised, as libxenstore does). Payload encoding, reply decoding,
error mapping (:mod:`.values`) and the request plans, the DIRECTORY_PART fallback
included (:mod:`.plans`), are shared with :mod:`.aio`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar, cast, overload

from ..errors import Again, XenstoreError
from ..protocol.framing import FramingError, Packet, PacketReader
from ..protocol.wire import Op, encode
from .plans import (
    Plan,
    plan_control,
    plan_directory,
    plan_get_perms,
    plan_get_quota,
    plan_read,
    plan_set_perms,
    plan_set_quota,
    plan_simple,
    plan_watch,
    plan_write,
)
from .values import (
    ConnectionClosed,
    Perm,
    ProtocolError,
    WatchEvent,
    _args,
    _event,
    _int,
    _ok,
    _strip_nul,
    _word,
    backoff_delay,
    check_payload,
    default_socket_path,
    error_from_reply,
)
from .xenbus import DeviceChannel, default_device_path, is_socket

__all__ = ["BlockingChannel", "Client", "SocketChannel", "Transaction", "open_path"]

T = TypeVar("T")

_ID_MAX = 0xFFFFFFFF


class BlockingChannel(Protocol):
    """The byte pipe under a blocking :class:`Client` (a socket or a xenbus device)."""

    def send(self, data: bytes, timeout: float | None) -> None:
        """Deliver all of ``data`` (whole messages), in order, or raise OSError
        (TimeoutError when ``timeout`` seconds pass first)."""

    def recv(self, timeout: float | None) -> bytes | None:
        """The next bytes, split anywhere; ``b""`` at end of stream; None when
        ``timeout`` seconds pass first. Raises OSError on a broken connection."""

    def fileno(self) -> int:
        """A descriptor that select() reports readable when ``recv`` has data."""

    def close(self) -> None:
        """Release the medium (idempotent)."""


class SocketChannel:
    """A :class:`BlockingChannel` over a connected Unix socket."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
        except BaseException:
            self._sock.close()
            raise

    def send(self, data: bytes, timeout: float | None) -> None:
        self._sock.settimeout(timeout)
        self._sock.sendall(data)

    def recv(self, timeout: float | None) -> bytes | None:
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv(1 << 16)
        except (TimeoutError, BlockingIOError):
            return None

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


def open_path(path: str) -> BlockingChannel:
    """Open ``path`` as libxenstore does: connect if it is a Unix socket, else open it
    read-write as a xenbus device (:class:`~.xenbus.DeviceChannel`)."""
    return SocketChannel(path) if is_socket(path) else DeviceChannel(path)


def _open_default() -> tuple[str, BlockingChannel]:
    """libxenstore's ``xs_open(0)``: the daemon socket, else the xenbus device."""
    first = default_socket_path()
    try:
        return first, open_path(first)
    except OSError:
        device = default_device_path()
        if device == first or not os.path.exists(device):
            raise  # nothing else to try: the socket's error says most
        return device, open_path(device)


class Client:
    """A blocking xenstore connection over a Unix socket or a xenbus device.

    Args:
        path: a daemon socket or a xenbus device (told apart by ``stat``); when None,
            where libxenstore looks: :func:`~.values.default_socket_path`, and if that
            cannot be opened, :func:`~.xenbus.default_device_path` (inside a guest).
        timeout: seconds any single request may wait for its reply (None: forever).
            A timed-out request raises ``TimeoutError``; its late reply is skipped.
        channel: an open :class:`BlockingChannel` to use instead of ``path``.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        timeout: float | None = None,
        channel: BlockingChannel | None = None,
    ) -> None:
        self.timeout = timeout
        if channel is not None:
            self.path = path or "<channel>"
            self._chan = channel
        elif path:
            self.path, self._chan = path, open_path(path)
        else:
            self.path, self._chan = _open_default()
        self._framing = PacketReader()
        self._packets: deque[Packet] = deque()
        self._events: deque[WatchEvent] = deque()
        self._lock = threading.RLock()
        self._next_id = 1
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._closed = True
        self._chan.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        """The channel's descriptor, for select(); readable means data (maybe an event)."""
        return self._chan.fileno()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- I/O ------------------------------------------------------------------------------
    def _receive(self, deadline: float | None) -> Packet | None:
        """The next packet, or None when ``deadline`` (monotonic) passes first."""
        while not self._packets:
            if self._closed:
                raise ConnectionClosed("client closed")
            # A deadline already past still polls once (timeout 0: non-blocking).
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                data = self._chan.recv(left)
            except OSError as err:
                raise ConnectionClosed("connection to xenstored failed") from err
            if data is None:
                return None
            if not data:
                raise ConnectionClosed("connection to xenstored closed")
            try:
                self._packets.extend(self._framing.feed(data))
            except FramingError as err:
                raise ConnectionClosed("xenstored broke the framing") from err
        return self._packets.popleft()

    def exchange(self, op: int, payload: bytes = b"", tx_id: int = 0) -> Packet:
        """Send one request and return its reply packet as received (ERROR included).

        Raises:
            TimeoutError: no reply within ``timeout``.
            ConnectionClosed: the connection ended.
        """
        check_payload(payload)
        with self._lock:
            req_id = self._next_id
            self._next_id = req_id % _ID_MAX + 1
            try:
                self._chan.send(encode(op, req_id, tx_id, payload), self.timeout)
            except OSError as err:
                # A partial write (even a timed-out one) leaves the stream unusable.
                self.close()
                raise ConnectionClosed("connection to xenstored failed") from err
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            while True:
                packet = self._receive(deadline)
                if packet is None:
                    raise TimeoutError(f"no reply to request {req_id} within {self.timeout}s")
                if packet.op == Op.WATCH_EVENT:
                    self._events.append(_event(packet.payload))
                elif packet.req_id == req_id:
                    return packet
                # else: the late reply of a request that timed out; skip it.

    def request(self, op: int, payload: bytes = b"", tx_id: int = 0) -> bytes:
        """Send one raw request and return its reply payload (the escape hatch).

        Raises:
            XenstoreError: an ``XS_ERROR`` reply (its subclass by name), or a payload
                over 4096 bytes (TooBig, refused locally).
            ProtocolError: a reply of an unexpected type.
        """
        packet = self.exchange(op, payload, tx_id)
        if packet.op == Op.ERROR:  # checked first: a request of type ERROR gets ENOSYS
            raise error_from_reply(packet.payload, op, payload)
        if packet.op == op:
            return packet.payload
        raise ProtocolError(f"reply of type {packet.op} to a request of type {op}")

    def run(self, plan: Plan[T]) -> T:
        """Drive a request plan (see the ``plan_*`` functions of :mod:`.plans`)."""
        try:
            req = next(plan)
            while True:
                try:
                    reply = self.request(*req)
                except XenstoreError as err:
                    req = plan.throw(err)
                else:
                    req = plan.send(reply)
        except StopIteration as stop:
            return cast(T, stop.value)

    # -- watch events ---------------------------------------------------------------------
    def read_watch(self, timeout: float | None = None) -> WatchEvent | None:
        """The oldest buffered watch event, else wait up to ``timeout`` seconds (None:
        forever) for one; None on timeout. Raises ConnectionClosed at end of stream."""
        with self._lock:
            if self._events:
                return self._events.popleft()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                packet = self._receive(deadline)
                if packet is None:
                    return None
                if packet.op == Op.WATCH_EVENT:
                    return _event(packet.payload)

    def pending_events(self) -> int:
        """Watch events already buffered (received while waiting for replies)."""
        return len(self._events)

    def watch_events(self) -> Iterator[WatchEvent]:
        """Iterate watch events, blocking, until the connection ends."""
        while True:
            try:
                event = self.read_watch()
            except ConnectionClosed:
                return
            if event is not None:
                yield event

    # -- tree operations ------------------------------------------------------------------
    def read(self, path: str | bytes, *, tx: int = 0) -> bytes:
        """The value of ``path``."""
        return self.run(plan_read(path, tx))

    def write(self, path: str | bytes, value: str | bytes, *, tx: int = 0) -> None:
        """Set ``path`` to ``value``, creating missing parents."""
        self.run(plan_write(path, value, tx))

    def mkdir(self, path: str | bytes, *, tx: int = 0) -> None:
        """Create ``path`` if missing."""
        self.run(plan_simple(Op.MKDIR, _word(path, "path"), tx, _ok))

    def rm(self, path: str | bytes, *, tx: int = 0) -> None:
        """Remove ``path`` and its subtree."""
        self.run(plan_simple(Op.RM, _word(path, "path"), tx, _ok))

    def directory(self, path: str | bytes, *, tx: int = 0) -> list[str]:
        """Child names of ``path`` (DIRECTORY_PART fallback on E2BIG)."""
        return self.run(plan_directory(_word(path, "path"), tx))

    def get_perms(self, path: str | bytes, *, tx: int = 0) -> list[str]:
        """Permission list of ``path`` as wire strings."""
        return self.run(plan_get_perms(path, tx))

    def set_perms(self, path: str | bytes, perms: Iterable[str | Perm], *, tx: int = 0) -> None:
        """Replace the permission list of ``path``."""
        self.run(plan_set_perms(path, perms, tx))

    # -- watches --------------------------------------------------------------------------
    def watch(self, path: str | bytes, token: str | bytes, *, depth: int | None = None) -> None:
        """Register a watch; its initial event is buffered for :meth:`read_watch`."""
        self.run(plan_watch(path, token, depth))

    def unwatch(self, path: str | bytes, token: str | bytes) -> None:
        """Remove a watch."""
        payload = _word(path, "path") + _word(token, "token")
        self.run(plan_simple(Op.UNWATCH, payload, 0, _ok))

    def reset_watches(self) -> None:
        """Drop every watch and transaction of this connection."""
        self.run(plan_simple(Op.RESET_WATCHES, b"\0", 0, _ok))

    # -- transactions ---------------------------------------------------------------------
    def transaction_start(self) -> int:
        """Open a transaction; its id."""
        return self.run(plan_simple(Op.TRANSACTION_START, b"\0", 0, _int))

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        """Commit (EAGAIN on conflict) or abort."""
        payload = b"T\0" if commit else b"F\0"
        self.run(plan_simple(Op.TRANSACTION_END, payload, tx, _ok))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``with client.transaction() as t:`` -- commit on normal exit (Again on a
        conflict), abort if the body raises."""
        t = Transaction(self, self.transaction_start())
        try:
            yield t
        except BaseException:
            if not t.finished:
                t.finished = True
                with contextlib.suppress(XenstoreError, ConnectionClosed, OSError):
                    self.transaction_end(t.id, False)
            raise
        if not t.finished:
            t.commit()

    def transact(
        self, fn: Callable[[Transaction], T], *, retries: int = 16, backoff: float = 0.001
    ) -> T:
        """Run ``fn(t)`` in a transaction, retrying all of it on EAGAIN (at most
        ``retries`` times, with randomised exponential backoff); re-raises the last."""
        attempt = 0
        while True:
            try:
                with self.transaction() as t:
                    result = fn(t)
                return result
            except Again:
                if attempt >= retries:
                    raise
            delay = backoff_delay(attempt, backoff)
            if delay:
                time.sleep(delay)
            attempt += 1

    # -- domains --------------------------------------------------------------------------
    def get_domain_path(self, domid: int) -> str:
        return self.run(plan_simple(Op.GET_DOMAIN_PATH, _args(domid), 0, _strip_nul))

    def introduce(self, domid: int, gfn: int, port: int) -> None:
        self.run(plan_simple(Op.INTRODUCE, _args(domid, gfn, port), 0, _ok))

    def release(self, domid: int) -> None:
        self.run(plan_simple(Op.RELEASE, _args(domid), 0, _ok))

    def is_domain_introduced(self, domid: int) -> bool:
        reply = self.run(plan_simple(Op.IS_DOMAIN_INTRODUCED, _args(domid), 0, _strip_nul))
        return reply == "T"

    def resume(self, domid: int) -> None:
        self.run(plan_simple(Op.RESUME, _args(domid), 0, _ok))

    def set_target(self, domid: int, target: int) -> None:
        self.run(plan_simple(Op.SET_TARGET, _args(domid, target), 0, _ok))

    def get_feature(self, domid: int | None = None) -> int:
        payload = b"" if domid is None else _args(domid)
        return self.run(plan_simple(Op.GET_FEATURE, payload, 0, _int))

    def set_feature(self, domid: int, value: int) -> None:
        self.run(plan_simple(Op.SET_FEATURE, _args(domid, value), 0, _ok))

    # -- administration -------------------------------------------------------------------
    def control(self, cmd: str | bytes, *args: str | bytes) -> bytes:
        """XS_CONTROL; the reply text without its trailing NUL."""
        return self.run(plan_control(cmd, args))

    @overload
    def get_quota(self) -> list[str]: ...
    @overload
    def get_quota(self, name: str, domid: int | None = None) -> int: ...
    def get_quota(self, name: str | None = None, domid: int | None = None) -> Any:
        """Without arguments, the quota names; else the global (or ``domid``'s) value."""
        return self.run(plan_get_quota(name, domid))

    def set_quota(self, name: str, value: int, domid: int | None = None) -> None:
        self.run(plan_set_quota(name, value, domid))


class Transaction:
    """An open transaction of a blocking :class:`Client` (see :meth:`Client.transaction`)."""

    def __init__(self, client: Client, tx_id: int) -> None:
        self.client = client
        self.id = tx_id
        self.finished = False

    def read(self, path: str | bytes) -> bytes:
        return self.client.read(path, tx=self.id)

    def write(self, path: str | bytes, value: str | bytes) -> None:
        self.client.write(path, value, tx=self.id)

    def mkdir(self, path: str | bytes) -> None:
        self.client.mkdir(path, tx=self.id)

    def rm(self, path: str | bytes) -> None:
        self.client.rm(path, tx=self.id)

    def directory(self, path: str | bytes) -> list[str]:
        return self.client.directory(path, tx=self.id)

    def get_perms(self, path: str | bytes) -> list[str]:
        return self.client.get_perms(path, tx=self.id)

    def set_perms(self, path: str | bytes, perms: Iterable[str | Perm]) -> None:
        self.client.set_perms(path, perms, tx=self.id)

    def commit(self) -> None:
        """Commit; raises Again on a conflict."""
        self._finish()
        self.client.transaction_end(self.id, True)

    def abort(self) -> None:
        self._finish()
        self.client.transaction_end(self.id, False)

    def _finish(self) -> None:
        if self.finished:
            raise RuntimeError(f"transaction {self.id} already ended")
        self.finished = True
