"""Memory is bounded for every peer (issue 13 item 3; the formulas: docs/operations.md,
"Memory held for one client").

Measured with the daemon's own accounting of what it holds for a peer, which is
deterministic where RSS is not: for a socket client ``SocketProtocol.held_bytes()``
(unsent output, requests read but not answered, a partial request); for a guest's ring
``conn.out_bytes`` (the replies and events not yet in its ring, those the sink holds
included; the ring fuzz target checks the same bound after every step).

* a dom0 watcher that never reads, while another client writes: held output stays under
  ``socket-buffer-bytes`` plus one delivery, then the watcher is cut off;
* a dom0 client that pipelines requests and never reads: it is not read past the
  high-water mark; held bytes stay under the formula; every reply arrives once it reads;
* many connections each at that limit: the total is the sum of the per-client bounds;
* a guest that never reads its replies or its 100 watches' events: held output stays
  under ``max(read_stall, event_queue_max)`` plus one turn of replies.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import TYPE_CHECKING

import pytest

from pyxenstored.protocol.wire import HEADER_SIZE, PAYLOAD_MAX, Op, encode
from pyxenstored.runtime.unix import HIGH_WATER, READ_CHUNK, SocketProtocol
from pyxenstored.transports.ring import GuestRing

from .t_rings import EVENT_QUEUE_MAX, OUTPUT_BOUND, _World

if TYPE_CHECKING:
    from conftest import ServerThread, ServerThreadFactory

MSG_MAX = PAYLOAD_MAX + HEADER_SIZE
#: a socket-buffer-bytes above the high-water mark: a pipeliner is paused, not cut off
CAP = 1 << 20


def _bound(cap: int, one_delivery: int) -> int:
    """docs/operations.md: what one socket client may make the daemon hold."""
    return max(cap, HIGH_WATER) + READ_CHUNK + MSG_MAX + one_delivery


def _held(st: ServerThread) -> dict[int, int]:
    """held_bytes() of every client, by engine connection id (on the server's thread)."""

    def read() -> dict[int, int]:
        clients: set[SocketProtocol] = st.server.clients
        return {p.conn.id: p.held_bytes() for p in clients if p.conn is not None}

    return st.call(read)


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def _call(s: socket.socket, op: int, payload: bytes) -> bytes:
    s.sendall(encode(op, 1, 0, payload))
    head = b""
    while len(head) < HEADER_SIZE:
        head += s.recv(HEADER_SIZE - len(head))
    size = int.from_bytes(head[12:16], "little")
    body = b""
    while len(body) < size:
        body += s.recv(size - len(body))
    return head[:4] + body


def test_a_dom0_watcher_that_never_reads(server_thread_factory: ServerThreadFactory) -> None:
    cap = 16 * 1024
    st = server_thread_factory(settings={"limits/socket-buffer-bytes": cap})
    watcher = _connect(st.socket_path)
    watcher.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    watcher.sendall(encode(Op.WATCH, 1, 0, b"/\0tok\0"))
    deadline = time.monotonic() + 10
    while st.call(lambda: st.server.engine.watches.count) < 1:
        assert time.monotonic() < deadline, "the watch was never registered"
        time.sleep(0.01)
    writer = _connect(st.socket_path)
    # Each WRITE makes one event of 228 bytes for the watcher (it never reads): 700 KB
    # in all, more than the kernel's socket buffers and the cap together.
    name = b"n" * 200
    path_event = 16 + len(b"/%s/xxxx\0tok\0" % name)
    worst = 0
    for i in range(3000):
        reply = _call(writer, Op.WRITE, b"/%s/%04d\0v" % (name, i))
        assert reply[:4] == int(Op.WRITE).to_bytes(4, "little"), reply
        if i % 50 == 0:
            worst = max([worst, *_held(st).values()])
    assert worst <= _bound(cap, MSG_MAX + path_event), worst
    # ... and past the cap it was cut off: one client left, the writer.
    assert len(_held(st)) == 1
    watcher.close()
    writer.close()


def test_a_pipeliner_that_never_reads(server_thread_factory: ServerThreadFactory) -> None:
    st = server_thread_factory(settings={"limits/socket-buffer-bytes": 64 << 20})
    with _connect(st.socket_path) as setup:
        _call(setup, Op.WRITE, b"/big\0" + b"B" * 4000)
    flood = _connect(st.socket_path)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood.setblocking(False)
    request = encode(Op.READ, 7, 0, b"/big\0")
    sent = 0
    worst = 0
    deadline = time.monotonic() + 20
    while sent < 4000 and time.monotonic() < deadline:
        try:
            sent += flood.send(request * 50) // len(request)
        except BlockingIOError:
            time.sleep(0.01)  # the daemon stopped reading us: as it should
            worst = max([worst, *_held(st).values()])
    worst = max([worst, *_held(st).values()])
    assert worst <= _bound(64 << 20, MSG_MAX), worst
    assert worst <= HIGH_WATER + READ_CHUNK + 2 * MSG_MAX, worst  # never the socket cap
    # Nothing was lost: it reads, and every reply it asked for arrives.
    flood.setblocking(True)
    flood.settimeout(30)
    got = 0
    data = b""
    while got < sent:
        data += flood.recv(1 << 20)
        while len(data) >= HEADER_SIZE:
            size = int.from_bytes(data[12:16], "little")
            if len(data) < HEADER_SIZE + size:
                break
            assert data[:4] == int(Op.READ).to_bytes(4, "little")
            data = data[HEADER_SIZE + size :]
            got += 1
    flood.close()


def test_many_connections_each_at_the_limit(server_thread_factory: ServerThreadFactory) -> None:
    st = server_thread_factory(settings={"limits/socket-buffer-bytes": CAP})
    with _connect(st.socket_path) as setup:
        _call(setup, Op.WRITE, b"/big\0" + b"B" * 4000)
    n = 200
    clients = []
    for _ in range(n):
        c = _connect(st.socket_path)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.setblocking(False)
        clients.append(c)
    request = encode(Op.READ, 7, 0, b"/big\0") * 100
    for _ in range(3):
        for c in clients:
            with contextlib.suppress(BlockingIOError):
                c.send(request)
        time.sleep(0.2)
    held = _held(st)
    deadline = time.monotonic() + 10
    while len(held) < n and time.monotonic() < deadline:  # accepted, on a loaded machine
        time.sleep(0.05)
        held = _held(st)
    per_client = _bound(CAP, MSG_MAX)
    assert len(held) == n
    assert sum(held.values()) <= n * per_client
    assert max(held.values()) <= HIGH_WATER + READ_CHUNK + 2 * MSG_MAX
    for c in clients:
        c.close()


@pytest.mark.parametrize("reads_requests", [False, True])
def test_a_guest_that_never_reads(reads_requests: bool) -> None:
    """Guest 1 watches its home 100 times (its quota allows 128) and never reads; dom0
    writes there (events), and the guest pipelines requests (replies)."""
    world = _World()
    conn = world.rings.by_domid[1].conn
    world.dom0_request(Op.MKDIR, b"/local/domain/1\0")
    world.dom0_request(Op.SET_PERMS, b"/local/domain/1\0n1\0")
    ring = GuestRing(world.xen.pages[1])
    for i in range(100):
        ring.write(encode(Op.WATCH, i, 0, b"/local/domain/1\0t%d\0" % i))
        world.rings.by_domid[1].turn()
    worst = 0
    for i in range(300):
        world.dom0_request(Op.WRITE, b"/local/domain/1/k%d\0" % i + b"v" * 100)
        if reads_requests:
            ring.write(encode(Op.READ, i, 0, b"k0\0") * 40)
        sink = world.rings.by_domid[1]
        sink.turn()
        world.flush()
        worst = max(worst, conn.out_bytes)
        world.check()
    ring.release()
    assert conn.events_dropped > 0  # the cap was reached: events were dropped, not queued
    assert worst <= OUTPUT_BOUND, (worst, OUTPUT_BOUND)


def test_m1_a_privileged_ring_that_never_reads_is_bounded() -> None:
    """M1 (fixed): dom0's own ring (or a privileged guest's) that never reads was not
    capped: the engine never drops a privileged connection's events, and a ring had no
    counterpart of the sockets' ``socket-buffer-bytes``. Now past that cap
    (``RingManager.privileged_cap``, kept equal to the setting by the server) the ring
    is cut off, as a privileged socket is."""
    world = _World()
    world.rings.privileged_cap = EVENT_QUEUE_MAX
    world.xen.pages[0] = bytearray(len(world.xen.pages[1]))
    world.introduce(0)
    sink = world.rings.by_domid[0]
    ring = GuestRing(world.xen.pages[0])
    ring.write(encode(Op.WATCH, 1, 0, b"/\0all\0"))
    ring.release()
    sink.turn()
    for i in range(3000):
        world.dom0_request(Op.WRITE, b"/%s/%d\0v" % (b"n" * 200, i))
    assert sink.broken, sink.conn.out_bytes
    assert sink.conn.out_bytes <= OUTPUT_BOUND, sink.conn.out_bytes
