"""Transactions over real sockets: isolation, commit, abort, conflicts, the retry helper."""

from __future__ import annotations

import asyncio

import pytest

from pyxenstored import errors
from pyxenstored.client import AsyncClient, SyncClient
from pyxenstored.client.aio import Transaction
from pyxenstored.protocol.wire import Op

from .rawwire import RawConn, error_name


def test_isolation_commit_and_abort(module_daemon: str) -> None:
    with SyncClient(module_daemon, timeout=10) as a, SyncClient(module_daemon, timeout=10) as b:
        a.write("/iso/v", b"before")
        tid = a.transaction_start()
        a.write("/iso/v", b"inside", tx=tid)
        a.write("/iso/new", b"n", tx=tid)
        assert a.read("/iso/v", tx=tid) == b"inside"
        assert sorted(a.directory("/iso", tx=tid)) == ["new", "v"]
        assert b.read("/iso/v") == b"before"
        assert b.directory("/iso") == ["v"]
        a.transaction_end(tid, commit=True)
        assert b.read("/iso/v") == b"inside"
        assert b.read("/iso/new") == b"n"

        tid = a.transaction_start()
        a.rm("/iso/new", tx=tid)
        a.transaction_end(tid, commit=False)
        assert b.read("/iso/new") == b"n"


def test_conflicting_commit_gets_eagain_and_changes_nothing(module_daemon: str) -> None:
    with SyncClient(module_daemon, timeout=10) as a, SyncClient(module_daemon, timeout=10) as b:
        a.write("/conf/v", b"0")
        tid = a.transaction_start()
        assert a.read("/conf/v", tx=tid) == b"0"
        a.write("/conf/other", b"x", tx=tid)
        b.write("/conf/v", b"changed")
        with pytest.raises(errors.Again):
            a.transaction_end(tid)
        with pytest.raises(errors.NoEntry):
            b.read("/conf/other")


def test_transaction_protocol_errors(module_daemon: str) -> None:
    with RawConn(module_daemon) as c:
        start = c.request(Op.TRANSACTION_START, b"\0")
        tid = int(start.payload.rstrip(b"\0"))
        assert tid != 0
        assert error_name(c.request(Op.TRANSACTION_START, b"\0", tx_id=tid)) == "EBUSY"
        assert error_name(c.request(Op.TRANSACTION_END, b"X\0", tx_id=tid)) == "EINVAL"
        assert error_name(c.request(Op.TRANSACTION_END, b"T\0", tx_id=0)) == "ENOENT"
        assert error_name(c.request(Op.READ, b"/tool\0", tx_id=tid + 1000)) == "ENOENT"
        assert c.request(Op.TRANSACTION_END, b"F\0", tx_id=tid).payload == b"OK\0"
        assert error_name(c.request(Op.TRANSACTION_END, b"F\0", tx_id=tid)) == "ENOENT"
        # WATCH ignores tx_id, even an unknown one.
        assert c.request(Op.WATCH, b"/tw\0t\0", tx_id=999).payload == b"OK\0"


def test_transactions_are_per_connection(module_daemon: str) -> None:
    with SyncClient(module_daemon, timeout=10) as a, SyncClient(module_daemon, timeout=10) as b:
        tid = a.transaction_start()
        with pytest.raises(errors.NoEntry):
            b.write("/pc", b"x", tx=tid)
        a.transaction_end(tid, commit=False)


def test_transact_helper_under_real_contention(module_daemon: str) -> None:
    """Four connections increment one counter 25 times each with read-modify-write
    transactions: conflicts happen, the helper retries, no increment is lost."""

    async def bump(t: Transaction) -> None:
        value = int(await t.read("/counter"))
        await asyncio.sleep(0)  # let the others interleave
        await t.write("/counter", str(value + 1))

    async def worker(xs: AsyncClient) -> None:
        for _ in range(25):
            await xs.transact(bump, retries=200, backoff=0.0005)

    async def main() -> bytes:
        clients = [await AsyncClient.connect(module_daemon) for _ in range(4)]
        try:
            await clients[0].write("/counter", b"0")
            await asyncio.gather(*(worker(xs) for xs in clients))
            return await clients[0].read("/counter")
        finally:
            for xs in clients:
                await xs.close()

    assert asyncio.run(asyncio.wait_for(main(), 30)) == b"100"


def test_connection_close_discards_open_transactions(module_daemon: str) -> None:
    a = SyncClient(module_daemon, timeout=10)
    tid = a.transaction_start()
    a.write("/closed-tx", b"x", tx=tid)
    a.close()
    with SyncClient(module_daemon, timeout=10) as b, pytest.raises(errors.NoEntry):
        b.read("/closed-tx")
