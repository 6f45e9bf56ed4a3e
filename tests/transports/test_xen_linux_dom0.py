"""Dom0's own ring through the Linux backend, with fakes that behave as Linux does at
start-up (issue 8): gntdev without SET_MAX_GRANTS (ENOTTY), an ``xsd_kva`` that reports
size 0, and a dom0 kernel that waits for xenstored's first event before it uses the ring.

The daemon side is the real one (``LinuxXen`` + ``RingManager`` + ``Engine``); only the
kernel is faked: ioctls through :class:`LinuxLike`, the event device as a FIFO the fake
kernel writes fired ports into.
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import struct
from pathlib import Path
from typing import Any

from pyxenstored.core.engine import Engine
from pyxenstored.protocol.wire import HEADER, Op, encode
from pyxenstored.runtime.rings import RingManager
from pyxenstored.state.snapshot import dump, restore
from pyxenstored.transports import xen_linux as xl
from pyxenstored.transports.base import DomainState
from pyxenstored.transports.ring import GuestRing

DOM0_REMOTE_PORT = 7


class LinuxLike:
    """The ioctls of Linux's evtchn and gntdev drivers, and dom0's kernel behind them."""

    def __init__(self, fifo_writer: int) -> None:
        self.fifo_writer = fifo_writer
        self.next_port = 40
        self.dom0_local: int | None = None
        self.kicks: list[int] = []

    def __call__(self, fd: int, request: int, arg: bytearray) -> int:
        if request == xl.IOCTL_GNTDEV_SET_MAX_GRANTS:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        if request in (xl.IOCTL_EVTCHN_BIND_VIRQ, xl.IOCTL_EVTCHN_BIND_INTERDOMAIN):
            self.next_port += 1
            if request == xl.IOCTL_EVTCHN_BIND_INTERDOMAIN:
                domid, remote = struct.unpack_from("<II", arg)
                if (domid, remote) == (0, DOM0_REMOTE_PORT):
                    self.dom0_local = self.next_port
            return self.next_port
        if request == xl.IOCTL_EVTCHN_NOTIFY:
            self.kicks.append(struct.unpack_from("<I", arg)[0])
        return 0

    def fire(self, port: int) -> None:
        """Dom0's kernel kicks us: the port appears on the event device."""
        os.write(self.fifo_writer, struct.pack("<I", port))


class NoDomains:
    def exists(self, domid: int) -> bool:
        return domid == 0

    def changes(self, known: set[int]) -> list[tuple[int, DomainState]]:
        return []


class Dom0Kernel(xl.LinuxXen):
    """``LinuxXen`` whose xsd_kva page gets backing once mapped (xenfs has a real page;
    a regular test file needs one to be touched), so the mapping code itself is real."""

    def map_own_ring(self) -> tuple[xl.GntdevMapping, int] | None:
        own = super().map_own_ring()
        os.truncate(self._xsd_kva_path, 4096)
        return own


def _dom0_files(tmp_path: Path) -> tuple[int, int, Path]:
    """A Linux-like dom0 in ``tmp_path``: the event FIFO (its two ends), a 0-byte
    ``xsd_kva``, ``xsd_port``, an empty gntdev."""
    fifo = tmp_path / "evtchn"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    (tmp_path / "xsd_kva").write_bytes(b"")
    (tmp_path / "xsd_port").write_text(f"{DOM0_REMOTE_PORT}\n")
    (tmp_path / "gntdev").write_bytes(b"")
    return reader, writer, tmp_path / "xsd_kva"


def _dom0_xen(tmp_path: Path, ioctl: Any) -> Dom0Kernel:
    return Dom0Kernel(
        evtchn_path=str(tmp_path / "evtchn"),
        gntdev_path=str(tmp_path / "gntdev"),
        xsd_kva_path=str(tmp_path / "xsd_kva"),
        xsd_port_path=str(tmp_path / "xsd_port"),
        ioctl=ioctl,
        domains=NoDomains(),
    )


async def _serve_dom0(tmp_path: Path) -> tuple[bytes, list[int], int]:
    reader, writer, kva = _dom0_files(tmp_path)
    kernel = LinuxLike(writer)
    xen = _dom0_xen(tmp_path, kernel)
    rings = RingManager(xen)
    engine = Engine(priv_domid=0, backend=rings)
    rings.attach(engine, lambda: None)
    loop = asyncio.get_running_loop()
    rings.start(loop)
    reply = b""
    try:
        # Dom0's kernel: nothing happens on the ring until xenstored's first event.
        for _ in range(100):
            if kernel.dom0_local is not None and kernel.dom0_local in kernel.kicks:
                break
            await asyncio.sleep(0.01)
        else:
            return b"", kernel.kicks, -1
        with kva.open("r+b") as f:
            page = mmap.mmap(f.fileno(), 4096)
        guest = GuestRing(memoryview(page))
        guest.write(encode(Op.READ, 1, 0, b"/\0"))
        kernel.fire(kernel.dom0_local)
        for _ in range(200):
            reply += guest.read()
            if len(reply) >= HEADER.size:
                break
            await asyncio.sleep(0.01)
        guest.release()
        page.close()
    finally:
        rings.close()
        os.close(reader)
        os.close(writer)
    return reply, kernel.kicks, kernel.dom0_local or -1


def test_dom0_gets_a_first_event_and_is_then_served(tmp_path: Path) -> None:
    """Regression (issue 8): Linux's dom0 xenbus waits for xenstored's first kick."""
    reply, kicks, dom0_local = asyncio.run(_serve_dom0(tmp_path))
    assert dom0_local in kicks, "xenstored never kicked dom0's port at start-up"
    assert kicks.index(dom0_local) == 0, "the first kick must come before any reply"
    op, req_id, tx, length = HEADER.unpack_from(reply)
    assert (op, req_id, tx, length) == (Op.READ, 1, 0, 0)  # "/" holds the empty value


async def _recover_dom0(tmp_path: Path) -> list[tuple[int, int]]:
    """Serve dom0's ring, dump the engine, then recover it in a second manager over a new
    event-channel device (as after a crash): which (domid, remote port) does it bind?"""
    reader, writer, _ = _dom0_files(tmp_path)
    loop = asyncio.get_running_loop()
    binds: list[tuple[int, int]] = []
    kernels = []
    managers = []
    try:
        for round_ in range(2):
            kernel = LinuxLike(writer)
            kernel.next_port = 60 + 10 * round_  # a new device numbers its ports afresh
            original = kernel.__call__

            def spy(
                fd: int, request: int, arg: bytearray, original: Any = original, r: int = round_
            ) -> int:
                if r == 1 and request == xl.IOCTL_EVTCHN_BIND_INTERDOMAIN:
                    binds.append(struct.unpack_from("<II", arg))
                return int(original(fd, request, arg))

            xen = _dom0_xen(tmp_path, spy)
            rings = RingManager(xen)
            engine = Engine(priv_domid=0, backend=rings)
            rings.attach(engine, lambda: None)
            if round_ == 0:
                rings.start(loop)
                records = dump(engine, handover=rings.handover)  # as the journal does
            else:
                restored = restore(records, engine)
                rings.start(loop, restored.connections, rebind=True)
            kernels.append(kernel)
            managers.append(rings)
    finally:
        for rings in managers:
            rings.close()
        os.close(reader)
        os.close(writer)
    return binds


def test_recovered_dom0_ring_binds_xsd_port_again(tmp_path: Path) -> None:
    """Regression (real Xen, crash recovery): after a crash the event channel must be bound
    to the remote port (dom0's xsd_port), not to the dead process's local port."""
    binds = asyncio.run(_recover_dom0(tmp_path))
    assert binds == [(0, DOM0_REMOTE_PORT)]
