"""Asyncio xenstore client: many requests in flight, replies matched by ``req_id``.

Usage::

    async with await Client.connect() as xs:        # $XENSTORED_PATH, ... (see below)
        await xs.write("/local/domain/0/name", b"Domain-0")
        print(await xs.read("/local/domain/0/name"))
        await xs.watch("/local/domain", "tok")
        async for path, token in xs.events():
            ...

The socket path is resolved as libxenstore does (xenstore-protocol.md §8):
``$XENSTORED_PATH``, else ``$XENSTORED_RUNDIR/socket``, else ``/run/xenstored/socket``;
if that cannot be opened (inside a guest), the kernel's ``/dev/xen/xenbus``
(:mod:`.xenbus`).

Errors: an ``XS_ERROR`` reply is raised as the :mod:`pyxenstored.errors` subclass whose
``name`` matches (``ENOENT`` -> :class:`~pyxenstored.errors.NoEntry`, ...); a name without
a subclass (``EISDIR``, ``EQUOTA``, ...) is raised as a plain
:class:`~pyxenstored.errors.XenstoreError` carrying that ``name``. A connection that ends
(EOF, reset, a framing violation by the peer, :meth:`Client.close`) fails every waiting
request with :class:`ConnectionClosed` and ends :meth:`Client.events`.

Channel interface
-----------------
The client talks to the daemon through a *channel*, a byte pipe with three coroutines
(see :class:`Channel`). :class:`StreamChannel` is the Unix-socket one,
:class:`~.xenbus.AsyncDeviceChannel` the kernel's ``/dev/xen/xenbus``; a shared-memory
ring channel (``client/ring.py``) plugs in the same way: ``Client(RingChannel(...))``.

``async send(data: bytes) -> None``
    Deliver all of ``data``, in order, then return. ``data`` is one or more *whole*
    messages (header + payload) concatenated; the channel may split it however its
    medium requires (a 1024-byte ring takes it in pieces) and may wait for room
    (backpressure). Only the client's single writer task calls it, never concurrently.
    Raise ``OSError`` (or ``ConnectionError``) when the peer is gone.

``async recv() -> bytes``
    Wait for and return the next received bytes, split anywhere (the client reassembles
    messages with :class:`~pyxenstored.protocol.framing.PacketReader`). Return ``b""``
    at end of stream. Only the client's single reader task calls it, never concurrently.
    Raise ``OSError`` on a broken connection.

``async aclose() -> None``
    Release the medium. Idempotent. The client cancels its reader and writer tasks
    before calling it, so a channel does not need to wake a pending ``recv`` itself.

The client never touches a channel from outside its event loop and never relies on
anything but these three methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar, cast, overload

from ..errors import Again, XenstoreError
from ..protocol.framing import Packet, PacketReader
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
from .plans import parse_directory_part as parse_directory_part  # re-exported
from .values import (
    DEFAULT_SOCKET_PATH,
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
from .values import ERROR_CLASSES as ERROR_CLASSES  # re-exported
from .xenbus import AsyncDeviceChannel, default_device_path, is_socket

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "Channel",
    "Client",
    "ConnectionClosed",
    "Perm",
    "ProtocolError",
    "StreamChannel",
    "Transaction",
    "WatchEvent",
    "connect",
    "default_socket_path",
    "error_from_reply",
]

T = TypeVar("T")

_ID_MAX = 0xFFFFFFFF


# -- channels ------------------------------------------------------------------------------
class Channel(Protocol):
    """A byte pipe to the daemon; the contract is in this module's docstring."""

    async def send(self, data: bytes) -> None:
        """Deliver all of ``data`` (whole messages), in order."""

    async def recv(self) -> bytes:
        """The next received bytes, split anywhere; ``b""`` at end of stream."""

    async def aclose(self) -> None:
        """Release the medium (idempotent)."""


class StreamChannel:
    """A :class:`Channel` over asyncio streams (a Unix socket)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open_unix(cls, path: str) -> StreamChannel:
        """Connect to the daemon socket at ``path``."""
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def recv(self) -> bytes:
        return await self._reader.read(1 << 16)

    async def aclose(self) -> None:
        writer = self._writer
        if writer.is_closing():
            return
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


# -- the client ----------------------------------------------------------------------------
class Client:
    """An asyncio xenstore connection.

    Any number of tasks may call methods concurrently: each request gets a fresh
    ``req_id`` and waits for the reply carrying it. Requests are written in call order
    by one writer task; a task cancelled while waiting does not disturb the stream (its
    reply is discarded when it arrives). Watch events are queued without bound until
    :meth:`events` or :meth:`next_event` takes them (as libxenstore does: a bounded queue
    would have to stop reading, and then replies would stall too).

    Construct with a :class:`Channel` inside a running event loop, or use
    :meth:`connect` for the Unix socket. Close with :meth:`close` or ``async with``.
    Methods that accept ``tx`` act inside that transaction (0: none).
    """

    def __init__(self, channel: Channel) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._channel = channel
        self._pending: dict[int, asyncio.Future[Packet] | None] = {}
        self._next_id = 1
        self._outq: list[bytes] = []
        self._wakeup = asyncio.Event()
        self._events: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._closed = False
        self._close_reason: BaseException | None = None
        self._reader = loop.create_task(self._read_loop())
        self._writer = loop.create_task(self._write_loop())

    @classmethod
    async def connect(cls, path: str | None = None) -> Client:
        """Connect as libxenstore does: to ``path`` (a Unix socket, or else a xenbus
        device, told apart by ``stat``), or when None to :func:`default_socket_path`,
        falling back to the xenbus device (:func:`~.xenbus.default_device_path`)
        when that cannot be opened."""
        if path:
            return cls(await _open_path(path))
        first = default_socket_path()
        try:
            return cls(await _open_path(first))
        except OSError:
            device = default_device_path()
            if device == first or not os.path.exists(device):
                raise
            return cls(await _open_path(device))

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the connection has ended, for whatever reason."""
        return self._closed

    async def close(self) -> None:
        """End the connection: waiting requests fail with ConnectionClosed (idempotent)."""
        self._shutdown(None)
        current = asyncio.current_task()
        for task in (self._reader, self._writer):
            if task is not current:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._channel.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _shutdown(self, reason: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        pending = list(self._pending.values())
        self._pending.clear()
        for fut in pending:
            if fut is not None and not fut.done():
                fut.set_exception(self._closed_error())
        self._outq.clear()
        self._events.put_nowait(None)
        self._wakeup.set()

    def _closed_error(self) -> ConnectionClosed:
        err = ConnectionClosed("connection to xenstored closed")
        err.__cause__ = self._close_reason
        return err

    async def _read_loop(self) -> None:
        framing = PacketReader()
        dispatch = self._dispatch
        reason: BaseException | None = None
        try:
            while True:
                data = await self._channel.recv()
                if not data:
                    break
                for packet in framing.feed(data):
                    dispatch(packet)
        except Exception as err:  # OSError, FramingError, a broken channel
            reason = err  # surfaces as the __cause__ of ConnectionClosed
        finally:
            self._shutdown(reason)
            self._writer.cancel()

    def _dispatch(self, packet: Packet) -> None:
        if packet.op == Op.WATCH_EVENT:
            self._events.put_nowait(_event(packet.payload))
            return
        fut = self._pending.pop(packet.req_id, None)
        if fut is not None and not fut.done():
            fut.set_result(packet)

    async def _write_loop(self) -> None:
        outq = self._outq
        wakeup = self._wakeup
        try:
            while not self._closed:
                await wakeup.wait()
                wakeup.clear()
                while outq and not self._closed:
                    batch = outq[0] if len(outq) == 1 else b"".join(outq)
                    outq.clear()
                    await self._channel.send(batch)
        except Exception as err:  # OSError, or a broken channel
            self._shutdown(err)
            self._reader.cancel()

    def _allocate_id(self) -> int:
        req_id = self._next_id
        pending = self._pending
        while req_id in pending:
            req_id = req_id % _ID_MAX + 1
        self._next_id = req_id % _ID_MAX + 1
        return req_id

    # -- requests -------------------------------------------------------------------------
    async def request(self, op: int, payload: bytes = b"", tx_id: int = 0) -> bytes:
        """Send one raw request and return its reply payload (the escape hatch).

        Raises:
            XenstoreError: the daemon answered ``XS_ERROR`` (its subclass by name), or
                the payload exceeds 4096 bytes (TooBig, refused locally).
            ConnectionClosed: the connection ended before the reply.
            ProtocolError: the reply has a type other than ``op`` or ERROR.
        """
        packet = await self.exchange(op, payload, tx_id)
        if packet.op == Op.ERROR:  # checked first: a request of type ERROR gets ENOSYS
            raise error_from_reply(packet.payload, op, payload)
        if packet.op == op:
            return packet.payload
        raise ProtocolError(f"reply of type {packet.op} to a request of type {op}")

    async def exchange(self, op: int, payload: bytes = b"", tx_id: int = 0) -> Packet:
        """Send one request and return the reply packet as received (ERROR included)."""
        check_payload(payload)
        if self._closed:
            raise self._closed_error()
        req_id = self._allocate_id()
        fut: asyncio.Future[Packet] = self._loop.create_future()
        self._pending[req_id] = fut
        self._outq.append(encode(op, req_id, tx_id, payload))
        self._wakeup.set()
        try:
            return await fut
        except asyncio.CancelledError:
            if req_id in self._pending:
                self._pending[req_id] = None  # keep the id reserved until its reply
            raise

    def send_nowait(self, op: int, payload: bytes = b"", tx_id: int = 0) -> None:
        """Queue a request whose reply will be discarded (used to abort transactions
        from cleanup code that must not wait)."""
        check_payload(payload)
        if self._closed:
            return
        req_id = self._allocate_id()
        self._pending[req_id] = None
        self._outq.append(encode(op, req_id, tx_id, payload))
        self._wakeup.set()

    async def run(self, plan: Plan[T]) -> T:
        """Drive a request plan (see the plan_* functions) to its result."""
        try:
            req = next(plan)
            while True:
                try:
                    reply = await self.request(*req)
                except XenstoreError as err:
                    req = plan.throw(err)
                else:
                    req = plan.send(reply)
        except StopIteration as stop:
            return cast(T, stop.value)

    # -- watch events ---------------------------------------------------------------------
    async def next_event(self, timeout: float | None = None) -> WatchEvent:
        """The oldest undelivered watch event, waiting for one if needed.

        Raises:
            TimeoutError: none arrived within ``timeout`` seconds.
            ConnectionClosed: the connection ended and every queued event was taken.
        """
        async with asyncio.timeout(timeout):
            event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)  # every later caller sees the end too
            raise self._closed_error()
        return event

    async def events(self) -> AsyncIterator[WatchEvent]:
        """Iterate watch events (``(path, token)`` pairs) until the connection ends."""
        while True:
            try:
                event = await self.next_event()
            except ConnectionClosed:
                return
            yield event

    def pending_events(self) -> int:
        """How many watch events are queued and not yet taken."""
        # After the end a single None sentinel stays queued (next_event puts it back).
        return self._events.qsize() - (1 if self._closed else 0)

    # -- tree operations ------------------------------------------------------------------
    async def read(self, path: str | bytes, *, tx: int = 0) -> bytes:
        """The value of ``path`` (ENOENT if missing, EACCES if unreadable)."""
        return await self.run(plan_read(path, tx))

    async def write(self, path: str | bytes, value: str | bytes, *, tx: int = 0) -> None:
        """Set ``path`` to ``value`` (str is UTF-8 encoded), creating missing parents."""
        await self.run(plan_write(path, value, tx))

    async def mkdir(self, path: str | bytes, *, tx: int = 0) -> None:
        """Create ``path`` with an empty value if missing (no-op if present)."""
        await self.run(plan_simple(Op.MKDIR, _word(path, "path"), tx, _ok))

    async def rm(self, path: str | bytes, *, tx: int = 0) -> None:
        """Remove ``path`` and its subtree (OK if missing while its parent exists)."""
        await self.run(plan_simple(Op.RM, _word(path, "path"), tx, _ok))

    async def directory(self, path: str | bytes, *, tx: int = 0) -> list[str]:
        """The child names of ``path``; long lists are fetched with DIRECTORY_PART."""
        return await self.run(plan_directory(_word(path, "path"), tx))

    async def get_perms(self, path: str | bytes, *, tx: int = 0) -> list[str]:
        """The permission list of ``path`` as wire strings (``["n0", "r5"]``); see
        :meth:`Perm.parse` for the typed form."""
        return await self.run(plan_get_perms(path, tx))

    async def set_perms(
        self, path: str | bytes, perms: Iterable[str | Perm], *, tx: int = 0
    ) -> None:
        """Replace the permission list of ``path`` (strings or :class:`Perm`)."""
        await self.run(plan_set_perms(path, perms, tx))

    # -- watches --------------------------------------------------------------------------
    async def watch(
        self, path: str | bytes, token: str | bytes, *, depth: int | None = None
    ) -> None:
        """Register a watch; an initial event for ``path`` follows the reply."""
        await self.run(plan_watch(path, token, depth))

    async def unwatch(self, path: str | bytes, token: str | bytes) -> None:
        """Remove the watch registered with the same path and token (ENOENT if none)."""
        payload = _word(path, "path") + _word(token, "token")
        await self.run(plan_simple(Op.UNWATCH, payload, 0, _ok))

    async def reset_watches(self) -> None:
        """Drop every watch and every open transaction of this connection."""
        await self.run(plan_simple(Op.RESET_WATCHES, b"\0", 0, _ok))

    # -- transactions ---------------------------------------------------------------------
    async def transaction_start(self) -> int:
        """Open a transaction and return its id."""
        return await self.run(plan_simple(Op.TRANSACTION_START, b"\0", 0, _int))

    async def transaction_end(self, tx: int, commit: bool = True) -> None:
        """Commit (``commit=True``; EAGAIN on conflict) or abort transaction ``tx``."""
        payload = b"T\0" if commit else b"F\0"
        await self.run(plan_simple(Op.TRANSACTION_END, payload, tx, _ok))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``async with client.transaction() as t:`` -- commit on normal exit (raising
        :class:`~pyxenstored.errors.Again` on conflict), abort if the body raises."""
        t = Transaction(self, await self.transaction_start())
        try:
            yield t
        except BaseException:
            if not t.finished:
                t.finished = True
                self.send_nowait(Op.TRANSACTION_END, b"F\0", t.id)
            raise
        if not t.finished:
            await t.commit()

    async def transact(
        self,
        fn: Callable[[Transaction], Awaitable[T]],
        *,
        retries: int = 16,
        backoff: float = 0.001,
    ) -> T:
        """Run ``fn`` in a transaction, retrying the whole of it on EAGAIN.

        ``fn`` may run up to ``retries + 1`` times, so it must only act through the
        transaction it is given. Between attempts a randomised exponential delay starting
        at ``backoff`` seconds is slept (0: none). The last EAGAIN is re-raised.
        """
        attempt = 0
        while True:
            try:
                async with self.transaction() as t:
                    result = await fn(t)
                return result
            except Again:
                if attempt >= retries:
                    raise
            delay = backoff_delay(attempt, backoff)
            if delay:
                await asyncio.sleep(delay)
            attempt += 1

    # -- domains --------------------------------------------------------------------------
    async def get_domain_path(self, domid: int) -> str:
        """``/local/domain/<domid>``, as the daemon computes it."""
        return await self.run(plan_simple(Op.GET_DOMAIN_PATH, _args(domid), 0, _strip_nul))

    async def introduce(self, domid: int, gfn: int, port: int) -> None:
        """Tell the daemon about a domain's store ring page and event channel."""
        await self.run(plan_simple(Op.INTRODUCE, _args(domid, gfn, port), 0, _ok))

    async def release(self, domid: int) -> None:
        """Forget an introduced domain (its nodes go, @releaseDomain fires)."""
        await self.run(plan_simple(Op.RELEASE, _args(domid), 0, _ok))

    async def is_domain_introduced(self, domid: int) -> bool:
        """Whether the daemon serves ``domid``."""
        reply = await self.run(plan_simple(Op.IS_DOMAIN_INTRODUCED, _args(domid), 0, _strip_nul))
        return reply == "T"

    async def resume(self, domid: int) -> None:
        """Re-arm the shutdown @releaseDomain event of ``domid``."""
        await self.run(plan_simple(Op.RESUME, _args(domid), 0, _ok))

    async def set_target(self, domid: int, target: int) -> None:
        """Give ``domid`` (a device model) the privileges of ``target``."""
        await self.run(plan_simple(Op.SET_TARGET, _args(domid, target), 0, _ok))

    async def get_feature(self, domid: int | None = None) -> int:
        """Ring feature bits of this connection, or of ``domid``."""
        payload = b"" if domid is None else _args(domid)
        return await self.run(plan_simple(Op.GET_FEATURE, payload, 0, _int))

    async def set_feature(self, domid: int, value: int) -> None:
        """Set the ring features offered to ``domid`` before it is introduced."""
        await self.run(plan_simple(Op.SET_FEATURE, _args(domid, value), 0, _ok))

    # -- administration -------------------------------------------------------------------
    async def control(self, cmd: str | bytes, *args: str | bytes) -> bytes:
        """XS_CONTROL ``cmd args...``; the reply text without its trailing NUL."""
        return await self.run(plan_control(cmd, args))

    @overload
    async def get_quota(self) -> list[str]: ...
    @overload
    async def get_quota(self, name: str, domid: int | None = None) -> int: ...
    async def get_quota(self, name: str | None = None, domid: int | None = None) -> Any:
        """Without arguments, the quota names; else the global (or ``domid``'s) value."""
        return await self.run(plan_get_quota(name, domid))

    async def set_quota(self, name: str, value: int, domid: int | None = None) -> None:
        """Set a global quota, or ``domid``'s own value of it."""
        await self.run(plan_set_quota(name, value, domid))


class Transaction:
    """An open transaction of a :class:`Client`: the tree operations, bound to its id.

    Obtained from :meth:`Client.transaction`; ``commit`` and ``abort`` end it (at most
    once; the context manager does it for you).
    """

    def __init__(self, client: Client, tx_id: int) -> None:
        self.client = client
        self.id = tx_id
        #: True once commit or abort has been sent.
        self.finished = False

    async def read(self, path: str | bytes) -> bytes:
        return await self.client.read(path, tx=self.id)

    async def write(self, path: str | bytes, value: str | bytes) -> None:
        await self.client.write(path, value, tx=self.id)

    async def mkdir(self, path: str | bytes) -> None:
        await self.client.mkdir(path, tx=self.id)

    async def rm(self, path: str | bytes) -> None:
        await self.client.rm(path, tx=self.id)

    async def directory(self, path: str | bytes) -> list[str]:
        return await self.client.directory(path, tx=self.id)

    async def get_perms(self, path: str | bytes) -> list[str]:
        return await self.client.get_perms(path, tx=self.id)

    async def set_perms(self, path: str | bytes, perms: Iterable[str | Perm]) -> None:
        await self.client.set_perms(path, perms, tx=self.id)

    async def commit(self) -> None:
        """Commit; raises Again on a conflict (the transaction is gone either way)."""
        self._finish()
        await self.client.transaction_end(self.id, True)

    async def abort(self) -> None:
        """Discard every change made in the transaction."""
        self._finish()
        await self.client.transaction_end(self.id, False)

    def _finish(self) -> None:
        if self.finished:
            raise RuntimeError(f"transaction {self.id} already ended")
        self.finished = True


async def _open_path(path: str) -> Channel:
    if is_socket(path):
        return await StreamChannel.open_unix(path)
    return await AsyncDeviceChannel.open(path)


async def connect(path: str | None = None) -> Client:
    """Shorthand for :meth:`Client.connect`."""
    return await Client.connect(path)
