"""The kernel's xenbus device (``/dev/xen/xenbus``) as a client channel, and how
libxenstore chooses between it and the daemon socket.

Inside a Linux guest there is no daemon socket: the guest's kernel owns the xenstore
ring and lends it to user space through ``/dev/xen/xenbus`` (in dom0 too). The device
speaks the same messages as the socket, with one rule of its own: **each** ``write()``
**must carry at most one message** (the kernel collects writes until one whole message
is there, handles it, and drops whatever else the same write carried; a write that
would overflow its one-message buffer fails with EINVAL). A read returns whatever
replies and watch events are queued, split anywhere. The kernel keeps each request's
``req_id`` in its reply, answers XS_WATCH/XS_UNWATCH itself, and forwards the rest.

:class:`DeviceChannel` is the blocking channel of :class:`~.sync.Client`;
:class:`AsyncDeviceChannel` is an :class:`~.aio.Channel` for :class:`~.aio.Client`.
Both split what they are given into messages and write each with a single call.

Where a client connects (libxenstore's ``xs_open(0)``): :func:`~.values.default_socket_path`
first; if that cannot be opened, :func:`default_device_path`. Either path is opened by
what ``stat`` says it is (:func:`is_socket`): a Unix socket is connected to, anything
else is opened read-write as a device. So ``XENSTORED_PATH=/dev/xen/xenbus`` works too.
"""

from __future__ import annotations

import asyncio
import os
import select
import stat
from collections.abc import Iterator, Mapping

from ..protocol.wire import HEADER, HEADER_SIZE

__all__ = [
    "AsyncDeviceChannel",
    "DeviceChannel",
    "default_device_path",
    "is_socket",
    "split_messages",
]

#: The devices libxenstore tries on Linux, newest first.
DEVICE_PATHS = ("/dev/xen/xenbus", "/proc/xen/xenbus")


def default_device_path(env: Mapping[str, str] | None = None) -> str:
    """The xenbus device as libxenstore's ``xs_domain_dev()`` finds it on Linux:
    ``$XENSTORED_PATH`` if set and non-empty, else ``/dev/xen/xenbus`` if it exists,
    else ``/proc/xen/xenbus``."""
    env = os.environ if env is None else env
    path = env.get("XENSTORED_PATH")
    if path:
        return path
    return DEVICE_PATHS[0] if os.path.exists(DEVICE_PATHS[0]) else DEVICE_PATHS[1]


def is_socket(path: str) -> bool:
    """Whether ``path`` is a Unix socket (else it is opened as a device).

    Raises:
        OSError: ``path`` does not exist or cannot be examined.
    """
    return stat.S_ISSOCK(os.stat(path).st_mode)


def split_messages(data: bytes) -> Iterator[memoryview]:
    """The messages in ``data`` (whole messages, concatenated), each as one view.

    A short tail (not a whole message) is yielded as it is: the device then waits
    for the rest, which the caller's next write brings.
    """
    view = memoryview(data)
    at = 0
    while at < len(view):
        if len(view) - at < HEADER_SIZE:
            yield view[at:]
            return
        length = HEADER.unpack_from(view, at)[3]
        end = min(len(view), at + HEADER_SIZE + length)
        yield view[at:end]
        at = end


def _open_device(path: str) -> int:
    # Read-write: requests are writes (as libxenstore's get_dev).
    return os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)


class DeviceChannel:
    """A blocking channel over a xenbus device (or anything standing in for one).

    Args:
        path: the device to open (read-write); or
        fd: an open descriptor, which the channel then owns and closes.
    """

    def __init__(self, path: str | None = None, *, fd: int | None = None) -> None:
        if (path is None) == (fd is None):
            raise TypeError("give exactly one of path and fd")
        self.fd = _open_device(path) if path is not None else fd
        assert self.fd is not None
        self._closed = False

    def fileno(self) -> int:
        """The descriptor, for select(): readable means a reply or an event is queued."""
        return self.fd  # type: ignore[return-value]

    def send(self, data: bytes, timeout: float | None) -> None:
        """Write ``data`` (whole messages), one ``write()`` per message.

        ``timeout`` does not apply: the kernel's device takes a write at once (it hands
        the request to xenstored and returns) and its ``poll`` never reports it
        writable, so waiting for writability would wait forever (seen on real Xen).

        Raises:
            OSError: the device refused the write.
        """
        for message in split_messages(data):
            while message:
                written = os.write(self.fileno(), message)
                message = message[written:]

    def recv(self, timeout: float | None) -> bytes | None:
        """The next bytes read (``b""``: end of stream), or None after ``timeout``."""
        ready, _, _ = select.select([self.fileno()], [], [], timeout)
        if not ready:
            return None
        try:
            return os.read(self.fileno(), 1 << 16)
        except BlockingIOError:
            return None

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if not self._closed:
            self._closed = True
            os.close(self.fileno())


class AsyncDeviceChannel:
    """An asyncio :class:`~.aio.Channel` over a xenbus device: a non-blocking descriptor
    whose readability the event loop watches (the device's ``poll`` reports queued
    replies). Writes are not polled for: the kernel's device takes them at once and
    never reports itself writable; only a stand-in that says EAGAIN is waited for."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._closed = False

    @classmethod
    async def open(cls, path: str) -> AsyncDeviceChannel:
        """Open the device at ``path`` read-write."""
        return cls(_open_device(path))

    async def _ready(self, writing: bool) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        add, remove = (
            (self._loop.add_writer, self._loop.remove_writer)
            if writing
            else (self._loop.add_reader, self._loop.remove_reader)
        )

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        add(self.fd, wake)
        try:
            await fut
        finally:
            remove(self.fd)

    async def send(self, data: bytes) -> None:
        for message in split_messages(data):
            while message:
                try:
                    written = os.write(self.fd, message)
                except BlockingIOError:
                    await self._ready(writing=True)
                    continue
                message = message[written:]

    async def recv(self) -> bytes:
        while True:
            try:
                return os.read(self.fd, 1 << 16)
            except BlockingIOError:
                await self._ready(writing=False)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)
