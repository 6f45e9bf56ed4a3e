"""Clients that stop reading must not slow anyone else down (runtime/unix.py).

* A client that floods requests and never reads its replies: the daemon stops reading
  it (or cuts it off); other clients keep getting fast answers.
* A watcher that never reads while a writer produces thousands of events: the writer
  never stalls, and the daemon cuts the watcher off once its unread output passes
  ``--socket-buffer-max``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

from pyxenstored.client import AsyncClient, SyncClient
from pyxenstored.protocol.wire import Op, encode

from .rawwire import RawConn

if TYPE_CHECKING:
    from conftest import DaemonFactory


def test_client_that_never_reads_does_not_slow_others(daemon: str) -> None:
    with SyncClient(daemon, timeout=10) as xs:
        xs.write("/big", b"B" * 3000)
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flood.connect(daemon)
    batch = encode(Op.READ, 1, 0, b"/big\0") * 200  # ~600 KB of replies per batch
    stop = threading.Event()
    sent = [0]

    def spam() -> None:
        try:
            while not stop.is_set():
                flood.sendall(batch)
                sent[0] += 1
        except OSError:
            pass  # cut off by the daemon, or shut down by the test

    spammer = threading.Thread(target=spam, daemon=True)
    spammer.start()
    try:
        time.sleep(0.3)  # let its buffers fill up
        latencies = []
        with SyncClient(daemon, timeout=10) as xs:
            start = time.monotonic()
            for i in range(200):
                t0 = time.monotonic()
                xs.write(f"/fast/{i}", b"x")
                assert xs.read(f"/fast/{i}") == b"x"
                latencies.append(time.monotonic() - t0)
            total = time.monotonic() - start
        assert sent[0] >= 1
        assert total < 5.0, f"200 round trips took {total:.2f}s next to a flooder"
        assert max(latencies) < 1.0, f"slowest round trip {max(latencies):.2f}s"
    finally:
        stop.set()
        flood.shutdown(socket.SHUT_RDWR)
        flood.close()
        spammer.join(5)
    with SyncClient(daemon, timeout=10) as xs:
        assert xs.read("/fast/199") == b"x"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_non_reading_watcher_is_cut_off_and_never_stalls_the_writer(
    daemon_factory: DaemonFactory, loop: str
) -> None:
    cap = 64 * 1024
    d = daemon_factory("--socket-buffer-max", str(cap), "--loop", loop)
    token = b"T" * 200
    watcher = RawConn(d.socket)
    watcher.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert watcher.request(Op.WATCH, b"/flood\0" + token + b"\0").payload == b"OK\0"
    # From here on the watcher reads nothing.
    n = 6000  # ~1.4 MB of events: far beyond the kernel buffers plus the cap
    slowest = 0.0
    with SyncClient(d.socket, timeout=10) as writer:
        start = time.monotonic()
        for i in range(n):
            t0 = time.monotonic()
            writer.write(f"/flood/k{i % 50}", b"v")
            slowest = max(slowest, time.monotonic() - t0)
        total = time.monotonic() - start
        assert total < 20.0, f"{n} writes took {total:.1f}s"
        assert slowest < 1.0, f"a write stalled for {slowest:.2f}s"
        assert writer.read("/flood/k0") == b"v"
    closed, received = watcher.wait_closed(10)
    watcher.close()
    assert closed, "the daemon must disconnect a watcher whose backlog passed the cap"
    assert received < n * (len(token) + 32), "the watcher got everything: no cut-off"
    assert "closing socket connection" in d.stderr()
    with SyncClient(d.socket, timeout=10) as xs:  # the daemon is fine
        xs.write("/flood/after", b"1")
        assert xs.read("/flood/after") == b"1"


def test_slow_but_reading_watcher_is_not_cut_off(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory("--socket-buffer-max", str(256 * 1024))
    with SyncClient(d.socket, timeout=10) as watcher, SyncClient(d.socket, timeout=10) as w:
        watcher.watch("/steady", "t")
        assert watcher.read_watch(5) is not None
        for i in range(2000):
            w.write(f"/steady/{i % 10}", b"v")
        got = 0
        while watcher.read_watch(2) is not None:
            got += 1
            if got == 2000:
                break
        assert got == 2000


def test_pipelining_client_that_reads_its_replies_is_not_cut_off(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory("--socket-buffer-max", str(1 << 20))

    async def main() -> list[bytes]:
        async with await AsyncClient.connect(d.socket) as xs:
            await xs.write("/bulk", b"B" * 4000)
            # 2000 reads leave the client in one write (~40 KB); the replies total 8 MB,
            # and the client reads them as fast as they come.
            return await asyncio.gather(*(xs.read("/bulk") for _ in range(2000)))

    replies = asyncio.run(asyncio.wait_for(main(), 20))
    assert len(replies) == 2000 and all(len(r) == 4000 for r in replies)
