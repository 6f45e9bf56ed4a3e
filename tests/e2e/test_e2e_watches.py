"""Watches across connections, and the order of events relative to replies (§4.4)."""

from __future__ import annotations

import asyncio

import pytest

from pyxenstored.client import AsyncClient, SyncClient, WatchEvent
from pyxenstored.protocol.wire import Op

from .rawwire import RawConn


def _event(path: bytes, token: bytes) -> tuple[int, int, int, bytes]:
    return (Op.WATCH_EVENT, 0, 0, path + b"\0" + token + b"\0")


def test_watch_reply_comes_before_the_initial_event(module_daemon: str) -> None:
    with RawConn(module_daemon) as w:
        w.send_msg(Op.WATCH, b"/ow\0tok\0", req_id=11)
        first, second = w.recv_packet(), w.recv_packet()
        assert (first.op, first.req_id, first.payload) == (Op.WATCH, 11, b"OK\0")
        assert tuple(second) == _event(b"/ow", b"tok")


def test_writers_own_event_comes_before_its_reply(module_daemon: str) -> None:
    with RawConn(module_daemon) as x:
        x.request(Op.WATCH, b"/own\0mine\0")
        assert tuple(x.recv_event()) == _event(b"/own", b"mine")  # initial
        x.send_msg(Op.WRITE, b"/own/k\0v", req_id=12)
        first, second = x.recv_packet(), x.recv_packet()
        assert tuple(first) == _event(b"/own/k", b"mine")
        assert (second.op, second.req_id, second.payload) == (Op.WRITE, 12, b"OK\0")


def test_events_cross_connections(module_daemon: str) -> None:
    with RawConn(module_daemon) as watcher, RawConn(module_daemon) as writer:
        watcher.request(Op.WATCH, b"/cross\0t1\0")
        watcher.request(Op.WATCH, b"/cross/deep\0t2\0")
        got = {watcher.recv_event().payload for _ in range(2)}
        assert got == {b"/cross\0t1\0", b"/cross/deep\0t2\0"}
        assert writer.request(Op.WRITE, b"/cross/deep/x\0").payload == b"OK\0"
        got = {watcher.recv_event().payload for _ in range(2)}
        assert got == {b"/cross/deep/x\0t1\0", b"/cross/deep/x\0t2\0"}
        # A sibling outside the watched subtree fires nothing; /crossing is not below /cross.
        writer.request(Op.WRITE, b"/crossing\0")
        writer.request(Op.RM, b"/cross\0")
        got = {watcher.recv_event().payload for _ in range(2)}
        # RM (C's rule): a removed descendant fires only watches placed exactly on it;
        # the removed node fires the watches on it and its ancestors.
        assert got == {b"/cross\0t1\0", b"/cross/deep\0t2\0"}
        writer.request(Op.GET_DOMAIN_PATH, b"0\0")
        with pytest.raises(TimeoutError):  # and nothing more arrives
            watcher.recv_event(timeout=0.2)


def test_transaction_events_fire_at_commit_only(module_daemon: str) -> None:
    async def main() -> None:
        async with (
            await AsyncClient.connect(module_daemon) as watcher,
            await AsyncClient.connect(module_daemon) as writer,
        ):
            await watcher.watch("/txw", "t")
            assert await watcher.next_event(5) == WatchEvent("/txw", "t")
            async with writer.transaction() as t:
                await t.write("/txw/a", b"1")
                await t.write("/txw/b", b"2")
                await writer.read("/tool")  # round trip: nothing fired meanwhile
                assert watcher.pending_events() == 0
            got = {await watcher.next_event(5) for _ in range(2)}
            assert got == {WatchEvent("/txw/a", "t"), WatchEvent("/txw/b", "t")}
            async with writer.transaction() as t:
                await t.write("/txw/c", b"3")
                await t.abort()
            await writer.write("/txw/d", b"4")
            assert await watcher.next_event(5) == WatchEvent("/txw/d", "t")  # not /txw/c

    asyncio.run(asyncio.wait_for(main(), 20))


def test_many_watchers_all_get_the_event(module_daemon: str) -> None:
    watchers = [SyncClient(module_daemon, timeout=10) for _ in range(20)]
    try:
        for i, w in enumerate(watchers):
            w.watch("/fan", f"w{i}")
            assert w.read_watch(5) == WatchEvent("/fan", f"w{i}")
        with SyncClient(module_daemon, timeout=10) as writer:
            writer.write("/fan/out", b"x")
        for i, w in enumerate(watchers):
            assert w.read_watch(5) == WatchEvent("/fan/out", f"w{i}")
    finally:
        for w in watchers:
            w.close()


def test_closing_a_watcher_forgets_its_watches(module_daemon: str) -> None:
    w = SyncClient(module_daemon, timeout=10)
    w.watch("/gone", "t")
    w.close()
    with SyncClient(module_daemon, timeout=10) as writer:
        for i in range(50):
            writer.write(f"/gone/{i}", b"")  # must not fail or stall on the dead watcher
        assert len(writer.directory("/gone")) == 50
