"""The guest side of a simulated Xen ring, as a byte channel for the asyncio client.

Usage (one simulated guest; hundreds can share one event loop)::

    guest = SimGuest("/tmp/xs/fakexen", 5)          # creates ring.5 and notify.5
    # ... dom0 INTRODUCEs domain 5 (any port > 0; the page, not the gfn, is used) ...
    async with Client(RingChannel(guest)) as xs:    # pyxenstored.client.aio.Client
        await xs.write("data/x", b"1")              # relative to /local/domain/5

:class:`SimGuest` implements the guest half of ``simulated-xen.md``: the page file
``ring.<domid>`` (created zeroed before INTRODUCE, or opened as it is for dom0's
``ring.0`` in stub-domain mode), the datagram socket ``notify.<domid>`` the daemon
notifies, and kicks sent from it to ``evtchn`` (the sender address names the domain).
The index arithmetic is the daemon's own (``transports.ring``), seen from the other end.

:class:`RingChannel` is a :class:`pyxenstored.client.aio.Channel`: ``send`` writes
whole messages in as many pieces as the 1024-byte ring needs, waiting for the daemon
to consume; ``recv`` returns whatever the daemon produced. Each index move is followed
by a kick. A ring the daemon marked broken (the ``error`` field) ends the stream. Waits
re-check the ring at least every ``poll`` seconds, so a lost notification costs latency,
never a hang. Kicks are sent without blocking; one refused because the daemon's queue is
full is retried shortly (the daemon also sweeps every ring when its queue overflowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import socket

from ..transports.ring import PAGE_SIZE, GuestRing, RingBroken

__all__ = ["RingChannel", "SimGuest"]


class SimGuest:
    """One simulated guest's page and event channel (see the module docstring).

    Args:
        directory: the simulated Xen's directory (``$FAKEXEN_DIR``).
        domid: the guest's domain id.
        create: make a fresh zeroed page (a guest before INTRODUCE). False opens the
            existing page as it is (dom0's ``ring.0`` in stub-domain mode).
    """

    def __init__(self, directory: str, domid: int, *, create: bool = True) -> None:
        self.directory = directory
        self.domid = domid
        path = os.path.join(directory, f"ring.{domid}")
        if create:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, PAGE_SIZE)
            except BaseException:
                os.close(fd)
                raise
        else:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._mm = mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.ring = GuestRing(self._mm)
        self.kick_addr = os.path.join(directory, "evtchn")
        notify = os.path.join(directory, f"notify.{domid}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(notify)
        self.notify_path = notify
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(notify)
        self.sock.setblocking(False)
        self.closed = False
        self.kicks_refused = 0

    def kick(self) -> bool:
        """Signal the daemon; False if the kick was refused (its queue is full)."""
        try:
            self.sock.sendto(b"\0\0\0\0", self.kick_addr)
        except BlockingIOError:
            self.kicks_refused += 1
            return False
        except OSError:
            return True  # no daemon yet, or it went away: nothing to wake
        return True

    def drain(self) -> int:
        """Consume pending notifications; return how many there were."""
        n = 0
        while True:
            try:
                self.sock.recv(64)
            except (BlockingIOError, OSError):
                return n
            n += 1

    def close(self) -> None:
        """Unbind the notify socket and unmap the page (the page file stays)."""
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.notify_path)
        self.ring.release()
        self._mm.close()


class RingChannel:
    """An asyncio byte channel over a :class:`SimGuest`'s ring (a client Channel)."""

    def __init__(self, guest: SimGuest, *, poll: float = 0.5) -> None:
        self.guest = guest
        self.poll = poll
        self._loop = asyncio.get_running_loop()
        self._waiters: list[asyncio.Future[None]] = []
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop.add_reader(guest.sock.fileno(), self._on_notify)

    # -- plumbing -------------------------------------------------------------------------
    def _on_notify(self) -> None:
        self.guest.drain()
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait(self) -> None:
        fut = self._loop.create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, self.poll)
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)

    def _kick(self) -> None:
        if not self.guest.kick() and self._retry is None and not self._closed:
            self._retry = self._loop.call_later(0.001, self._kick_again)

    def _kick_again(self) -> None:
        self._retry = None
        if not self._closed:
            self._kick()

    def _check(self) -> None:
        if self._closed or self.guest.closed:
            raise ConnectionResetError("ring channel closed")
        error = self.guest.ring.error
        if error:
            raise ConnectionResetError(f"the daemon marked the ring broken (error {error})")

    # -- the Channel contract -------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        ring = self.guest.ring
        view = memoryview(data)
        while view:
            self._check()
            try:
                n = ring.write(view)
            except RingBroken as err:
                raise ConnectionResetError(str(err)) from None
            if n:
                view = view[n:]
                self._kick()
            else:
                await self._wait()

    async def recv(self) -> bytes:
        ring = self.guest.ring
        while True:
            if self._closed or self.guest.closed:
                return b""
            try:
                data = ring.read()
            except RingBroken as err:
                raise ConnectionResetError(str(err)) from None
            if data:
                self._kick()
                return data
            if ring.error:
                return b""
            await self._wait()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.guest.sock.fileno())
        self._wake()
        self.guest.close()

    # -- extras for tests -----------------------------------------------------------------
    async def reconnect(self, timeout: float = 5.0) -> None:
        """Run the reconnection handshake (the daemon must advertise RECONNECTION)."""
        ring = self.guest.ring
        ring.request_reconnect()
        self._kick()
        deadline = self._loop.time() + timeout
        while ring.connection:
            if self._loop.time() > deadline:
                raise TimeoutError("the daemon did not complete the reconnection")
            await self._wait()
