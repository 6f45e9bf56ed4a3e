"""Real sockets against the Server in this process, so the engine's state can be checked
after abuse: nothing of a dropped or departed client is left behind."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyxenstored.client import SyncClient
from pyxenstored.protocol.wire import HEADER, Op

from .rawwire import RawConn

if TYPE_CHECKING:
    from conftest import ServerThread, ServerThreadFactory


def _eventually(st: ServerThread, probe: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if st.call(probe):
            return True
        time.sleep(0.02)
    return False


def _no_connections(st: ServerThread) -> Callable[[], bool]:
    engine = st.server.engine
    return lambda: not engine.connections and not st.server.clients


def test_departed_and_dropped_clients_leave_nothing_behind(server_thread: ServerThread) -> None:
    st = server_thread
    engine = st.server.engine
    with SyncClient(st.socket_path, timeout=5) as xs:
        xs.watch("/w", "t")
        xs.transaction_start()
    with RawConn(st.socket_path) as bad:
        bad.request(Op.WATCH, b"/w\0bad\0")
        bad.send(HEADER.pack(Op.READ, 1, 0, 4097))
        assert bad.wait_closed(5)[0]
    for _ in range(5):
        with RawConn(st.socket_path) as junk:
            junk.send(os.urandom(2000))
    assert _eventually(st, _no_connections(st))
    assert st.call(lambda: engine.watches.count) == 0
    assert st.call(engine.check) == []


def test_cut_off_watcher_is_fully_disconnected(server_thread_factory: ServerThreadFactory) -> None:
    st = server_thread_factory(settings={"limits/socket-buffer-bytes": 32 * 1024})
    engine = st.server.engine
    watcher = RawConn(st.socket_path)
    watcher.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    watcher.request(Op.WATCH, b"/cut\0" + b"T" * 300 + b"\0")
    with SyncClient(st.socket_path, timeout=10) as writer:
        for i in range(4000):
            writer.write(f"/cut/{i % 20}", b"x")
        assert _eventually(st, lambda: len(engine.connections) == 1)  # only the writer
        assert st.call(lambda: engine.watches.count) == 0
    assert watcher.wait_closed(5)[0]
    watcher.close()
    assert _eventually(st, _no_connections(st))
