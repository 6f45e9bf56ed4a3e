"""A stand-in for the Linux kernel's ``/dev/xen/xenbus``, relaying to a real daemon.

The kernel's rules that matter to a client are enforced: a ``write()`` that carries
more than one message loses everything after the first (recorded in
:attr:`FakeXenbus.violations`, and the extra bytes are dropped as the kernel drops
them). Two media stand in for the device file:

* ``seqpacket``: a ``SOCK_SEQPACKET`` socket pair, so that every ``write()`` of the
  client arrives as one packet and its boundaries can be checked;
* ``pty``: a pseudo-terminal in raw mode, whose slave has a path (``/dev/pts/N``) and is
  not a socket, so that it is opened by path as a device (write boundaries are not
  visible through a pty and are not checked).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import tty

from pyxenstored.protocol.framing import PacketReader
from pyxenstored.protocol.wire import HEADER, HEADER_SIZE, encode


class FakeXenbus:
    """Relay between a device end (given to the client) and the daemon at ``daemon``."""

    def __init__(self, daemon: str, medium: str = "seqpacket") -> None:
        self.violations: list[str] = []
        self.messages = 0
        self.medium = medium
        self._daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._daemon.connect(daemon)
        self.path: str | None = None
        if medium == "seqpacket":
            kernel, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._kernel_fd = kernel.detach()
            #: the descriptor to hand to the client (its owner closes it)
            self.client_fd: int | None = client.detach()
        elif medium == "pty":
            master, slave = os.openpty()
            tty.setraw(slave)  # bytes through untouched; kept open so the setting stays
            self._kernel_fd = master
            self._slave = slave
            self.path = os.ttyname(slave)
            self.client_fd = None
        else:
            raise ValueError(medium)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _from_client(self, data: bytes) -> bytes:
        """What the kernel would forward from one write(): its first message only."""
        if self.medium != "seqpacket" or len(data) < HEADER_SIZE:
            return data
        whole = HEADER_SIZE + HEADER.unpack_from(data)[3]
        if len(data) > whole:
            self.violations.append(f"one write carried {len(data)} bytes, a message {whole}")
            return data[:whole]
        return data

    def _run(self) -> None:
        kernel, daemon = self._kernel_fd, self._daemon.fileno()
        framing = PacketReader()
        try:
            while True:
                ready, _, _ = select.select([kernel, daemon, self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                if kernel in ready:
                    data = os.read(kernel, 1 << 17)
                    if not data:
                        return
                    data = self._from_client(data)
                    for packet in framing.feed(data):
                        self.messages += 1
                        self._daemon.sendall(
                            encode(packet.op, packet.req_id, packet.tx_id, packet.payload)
                        )
                if daemon in ready:
                    data = self._daemon.recv(1 << 16)
                    if not data:
                        return
                    os.write(kernel, data)
        except OSError:
            return

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._kernel_fd, self._stop_r, self._stop_w):
            os.close(fd)
        if self.medium == "pty":
            os.close(self._slave)
        self._daemon.close()
