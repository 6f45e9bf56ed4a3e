"""Both clients against the Server running in-process (fast, and the engine can be
inspected): every method, and the transaction helpers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from pyxenstored import errors
from pyxenstored.client import AsyncClient, ConnectionClosed, Perm, SyncClient, WatchEvent
from pyxenstored.client.aio import Transaction
from pyxenstored.client.sync import Transaction as SyncTransaction
from pyxenstored.protocol.wire import Op

if TYPE_CHECKING:
    from conftest import ServerThread

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def test_async_tree_operations(server_thread: ServerThread) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(server_thread.socket_path) as xs:
            await xs.write("/t/a", b"one")
            await xs.write("/t/b", "two")
            await xs.mkdir("/t/c")
            assert await xs.read("/t/a") == b"one"
            assert await xs.read("/t/b") == b"two"
            assert await xs.read("/t/c") == b""
            assert sorted(await xs.directory("/t")) == ["a", "b", "c"]
            assert await xs.directory("/t/c") == []
            await xs.rm("/t/a")
            await xs.rm("/t/a")  # missing, parent exists: OK
            with pytest.raises(errors.NoEntry):
                await xs.read("/t/a")
            with pytest.raises(errors.NoEntry):
                await xs.rm("/nope/deeper")
            with pytest.raises(errors.Invalid):
                await xs.read("/bad//path")
            await xs.write("/t/bin", b"\0\xff\0")
            assert await xs.read("/t/bin") == b"\0\xff\0"

    run(main())


def test_async_permissions(server_thread: ServerThread) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(server_thread.socket_path) as xs:
            await xs.write("/p", b"")
            assert await xs.get_perms("/p") == ["n0"]
            await xs.set_perms("/p", [Perm("b", 3), "r5", Perm("w", 6)])
            assert await xs.get_perms("/p") == ["b3", "r5", "w6"]
            assert [Perm.parse(p) for p in await xs.get_perms("/p")] == [
                Perm("b", 3),
                Perm("r", 5),
                Perm("w", 6),
            ]
            assert await xs.get_perms("@releaseDomain") == ["n0", "r32757"]
            with pytest.raises(errors.Invalid):
                await xs.set_perms("/p", ["x1"])

    run(main())


def test_async_directory_part_fallback(server_thread: ServerThread) -> None:
    names = [f"child-with-a-long-name-{i:04d}-" + "x" * 40 for i in range(120)]

    async def main() -> None:
        async with await AsyncClient.connect(server_thread.socket_path) as xs:
            await asyncio.gather(*(xs.write(f"/many/{n}", b"") for n in names))
            with pytest.raises(errors.TooBig):
                await xs.request(Op.DIRECTORY, b"/many\0")
            assert sorted(await xs.directory("/many")) == names

    run(main())


def test_async_watches_and_events(server_thread: ServerThread) -> None:
    async def main() -> None:
        async with (
            await AsyncClient.connect(server_thread.socket_path) as watcher,
            await AsyncClient.connect(server_thread.socket_path) as writer,
        ):
            await watcher.watch("/w", "tok")
            assert await watcher.next_event(5) == WatchEvent("/w", "tok")
            await writer.write("/w/x", b"1")
            assert await watcher.next_event(5) == WatchEvent("/w/x", "tok")
            with pytest.raises(errors.Exists):
                await watcher.watch("/w", "tok")
            await watcher.unwatch("/w", "tok")
            with pytest.raises(errors.NoEntry):
                await watcher.unwatch("/w", "tok")
            await watcher.watch("/w", "a")
            await watcher.watch("/w", "b")
            await watcher.reset_watches()
            await writer.write("/w/y", b"2")
            await writer.read("/w/y")  # the daemon has handled the write by now
            got = [await watcher.next_event(5) for _ in range(2)]
            assert got == [WatchEvent("/w", "a"), WatchEvent("/w", "b")]  # initial only
            with pytest.raises(TimeoutError):
                await watcher.next_event(0.1)
            assert watcher.pending_events() == 0

    run(main())


def test_async_transactions(server_thread: ServerThread) -> None:
    async def main() -> None:
        async with (
            await AsyncClient.connect(server_thread.socket_path) as a,
            await AsyncClient.connect(server_thread.socket_path) as b,
        ):
            await a.write("/tx/v", b"0")
            async with a.transaction() as t:
                await t.write("/tx/v", b"1")
                assert await t.read("/tx/v") == b"1"
                assert await b.read("/tx/v") == b"0"
            assert await b.read("/tx/v") == b"1"

            async with a.transaction() as t:
                await t.write("/tx/v", b"never")
                await t.abort()
            assert await b.read("/tx/v") == b"1"

            tid = await a.transaction_start()
            with pytest.raises(errors.Busy):
                await a.request(Op.TRANSACTION_START, b"\0", tid)
            await a.transaction_end(tid, commit=False)
            with pytest.raises(errors.NoEntry):
                await a.transaction_end(tid)

            with pytest.raises(errors.Again):
                async with a.transaction() as t:
                    await t.read("/tx/v")
                    await t.write("/tx/v", b"mine")
                    await b.write("/tx/v", b"theirs")
            assert await b.read("/tx/v") == b"theirs"

    run(main())


def test_async_transact_retries_a_real_conflict(server_thread: ServerThread) -> None:
    attempts: list[int] = []

    async def main() -> None:
        async with (
            await AsyncClient.connect(server_thread.socket_path) as a,
            await AsyncClient.connect(server_thread.socket_path) as b,
        ):
            await a.write("/ctr", b"0")

            async def bump(t: Transaction) -> int:
                attempts.append(t.id)
                value = int(await t.read("/ctr")) + 1
                if len(attempts) == 1:
                    await b.write("/ctr", b"10")  # someone else gets in first
                await t.write("/ctr", str(value))
                return value

            assert await a.transact(bump) == 11
            assert await b.read("/ctr") == b"11"
            assert len(attempts) == 2

    run(main())


def test_async_many_tasks_in_flight(server_thread: ServerThread) -> None:
    async def worker(xs: AsyncClient, n: int) -> None:
        for i in range(25):
            await xs.write(f"/load/{n}/{i}", str(i * n))
            assert await xs.read(f"/load/{n}/{i}") == str(i * n).encode()

    async def main() -> None:
        async with await AsyncClient.connect(server_thread.socket_path) as xs:
            await asyncio.gather(*(worker(xs, n) for n in range(40)))
            assert len(await xs.directory("/load")) == 40

    run(main())
    assert server_thread.call(server_thread.server.engine.check) == []


def test_async_domain_and_admin_calls(server_thread: ServerThread) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(server_thread.socket_path) as xs:
            assert await xs.get_domain_path(5) == "/local/domain/5"
            assert await xs.is_domain_introduced(5) is False
            await xs.watch("@introduceDomain", "intro")
            await xs.watch("@releaseDomain", "rel")
            await xs.introduce(5, 1234, 7)
            assert await xs.is_domain_introduced(5) is True
            await xs.introduce(6, 1235, 8)
            await xs.set_target(5, 6)
            await xs.resume(5)
            await xs.release(5)
            assert await xs.is_domain_introduced(5) is False
            events = [await xs.next_event(5) for _ in range(5)]
            assert WatchEvent("@introduceDomain", "intro") in events
            assert WatchEvent("@releaseDomain", "rel") in events
            with pytest.raises(errors.NoEntry):
                await xs.release(5)
            assert await xs.get_feature() >= 0
            assert b"check" in await xs.control("help")
            assert await xs.control("check") == b"OK"
            with pytest.raises(errors.Invalid):
                await xs.control("no-such-command")

    run(main())


def test_async_quotas(server_thread: ServerThread) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(server_thread.socket_path) as xs:
            names = await xs.get_quota()
            assert {"nodes", "watches", "transactions"} <= set(names)
            default = await xs.get_quota("nodes")
            await xs.set_quota("nodes", default + 1)
            assert await xs.get_quota("nodes") == default + 1
            await xs.introduce(9, 1, 1)
            await xs.set_quota("nodes", 7, 9)
            assert await xs.get_quota("nodes", 9) == 7
            assert await xs.get_quota("nodes") == default + 1
            with pytest.raises(errors.Invalid):
                await xs.get_quota("no-such-quota")

    run(main())


def test_async_relative_and_depth_watches(server_thread: ServerThread) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(server_thread.socket_path) as xs:
            await xs.watch("relw", "r")  # relative: under /local/domain/0
            assert await xs.next_event(5) == WatchEvent("relw", "r")
            await xs.write("/local/domain/0/relw/x", b"1")
            assert await xs.next_event(5) == WatchEvent("relw/x", "r")
            await xs.watch("/depth", "d", depth=1)
            assert await xs.next_event(5) == WatchEvent("/depth", "d")
            await xs.write("/depth/a/b", b"")  # two levels down: not reported
            await xs.write("/depth/c", b"")
            assert await xs.next_event(5) == WatchEvent("/depth/c", "d")
            assert xs.pending_events() == 0

    run(main())


def test_async_raw_request_and_unsupported_types(server_thread: ServerThread) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(server_thread.socket_path) as xs:
            assert await xs.request(Op.WRITE, b"/raw\0v") == b"OK\0"
            assert await xs.request(Op.READ, b"/raw\0") == b"v"
            for op in (Op.WATCH_EVENT, Op.ERROR, Op.RESTRICT, 99, Op.INVALID):
                with pytest.raises(errors.Unsupported):
                    await xs.request(op, b"")
            packet = await xs.exchange(Op.READ, b"/missing\0")
            assert packet.op == Op.ERROR and packet.payload == b"ENOENT\0"

    run(main())


def test_async_client_sees_server_shutdown(server_thread: ServerThread) -> None:
    async def main() -> None:
        xs = await AsyncClient.connect(server_thread.socket_path)
        await xs.write("/x", b"1")
        await asyncio.to_thread(server_thread.stop)
        with pytest.raises(ConnectionClosed):
            await xs.read("/x")
        assert [e async for e in xs.events()] == []
        await xs.close()

    run(main())


# -- the blocking client ----------------------------------------------------------------
def test_sync_basic_operations(server_thread: ServerThread) -> None:
    with SyncClient(server_thread.socket_path, timeout=10) as xs:
        xs.write("/s/a", b"1")
        xs.mkdir("/s/b")
        assert xs.read("/s/a") == b"1"
        assert sorted(xs.directory("/s")) == ["a", "b"]
        xs.set_perms("/s/a", ["r1", Perm("w", 2)])
        assert xs.get_perms("/s/a") == ["r1", "w2"]
        xs.rm("/s")
        with pytest.raises(errors.NoEntry):
            xs.read("/s/a")
        assert xs.get_domain_path(2) == "/local/domain/2"
        assert xs.control("check") == b"OK"
        with pytest.raises(errors.Unsupported):
            xs.request(99)


def test_sync_watch_buffer(server_thread: ServerThread) -> None:
    with (
        SyncClient(server_thread.socket_path, timeout=10) as watcher,
        SyncClient(server_thread.socket_path, timeout=10) as writer,
    ):
        watcher.watch("/sw", "t")
        writer.write("/sw/1", b"")
        writer.write("/sw/2", b"")
        # The events arrive while the watcher waits for this reply: they are buffered.
        watcher.read("/sw/1")
        assert watcher.pending_events() == 3
        got = [watcher.read_watch(5) for _ in range(3)]
        assert got == [WatchEvent("/sw", "t"), WatchEvent("/sw/1", "t"), WatchEvent("/sw/2", "t")]
        assert watcher.read_watch(0.05) is None
        writer.rm("/sw")
        assert watcher.read_watch(5) == WatchEvent("/sw", "t")


def test_sync_transactions_and_transact(server_thread: ServerThread) -> None:
    with (
        SyncClient(server_thread.socket_path, timeout=10) as a,
        SyncClient(server_thread.socket_path, timeout=10) as b,
    ):
        a.write("/st", b"0")
        with a.transaction() as t:
            t.write("/st", b"1")
            assert b.read("/st") == b"0"
        assert b.read("/st") == b"1"
        with pytest.raises(ZeroDivisionError), a.transaction() as t:
            t.write("/st", b"2")
            _ = 1 / 0
        assert b.read("/st") == b"1"

        calls: list[int] = []

        def bump(t: SyncTransaction) -> int:
            calls.append(t.id)
            value = int(t.read("/st")) + 1
            if len(calls) == 1:
                b.write("/st", b"5")
            t.write("/st", str(value))
            return value

        assert a.transact(bump) == 6
        assert len(calls) == 2


def test_sync_client_from_several_threads(server_thread: ServerThread) -> None:
    errors_seen: list[BaseException] = []
    with SyncClient(server_thread.socket_path, timeout=10) as xs:

        def work(n: int) -> None:
            try:
                for i in range(50):
                    xs.write(f"/thr/{n}", str(i))
                    assert xs.read(f"/thr/{n}") == str(i).encode()
            except BaseException as err:  # pragma: no cover - reported below
                errors_seen.append(err)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(20)
        assert errors_seen == []
        assert sorted(xs.directory("/thr")) == ["0", "1", "2", "3"]


def test_sync_client_uses_environment_path(
    server_thread: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XENSTORED_PATH", server_thread.socket_path)
    with SyncClient(timeout=10) as xs:
        xs.write("/env", b"ok")

    async def main() -> bytes:
        async with await AsyncClient.connect() as axs:
            return await axs.read("/env")

    assert run(main()) == b"ok"


def test_sync_client_sees_server_shutdown(server_thread: ServerThread) -> None:
    xs = SyncClient(server_thread.socket_path, timeout=10)
    xs.write("/x", b"1")
    server_thread.stop()
    with pytest.raises(ConnectionClosed):
        xs.read("/x")
    xs.close()
