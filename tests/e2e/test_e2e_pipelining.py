"""Many requests in flight on one connection: raw pipelining and concurrent tasks."""

from __future__ import annotations

import asyncio

from pyxenstored.client import AsyncClient
from pyxenstored.protocol.wire import Op, encode

from .rawwire import RawConn


def test_pipelined_requests_in_one_write_are_answered_in_order(module_daemon: str) -> None:
    n = 400
    burst = b"".join(
        encode(Op.WRITE, 1000 + i, 0, b"/pipe/%d\0value-%d" % (i, i))
        + encode(Op.READ, 5000 + i, 0, b"/pipe/%d\0" % i)
        for i in range(n)
    )
    with RawConn(module_daemon) as conn:
        conn.send(burst)
        for i in range(n):
            w, r = conn.recv_packet(), conn.recv_packet()
            assert (w.op, w.req_id, w.payload) == (Op.WRITE, 1000 + i, b"OK\0")
            assert (r.op, r.req_id, r.payload) == (Op.READ, 5000 + i, b"value-%d" % i)


def test_requests_split_at_every_byte(module_daemon: str) -> None:
    stream = b"".join(encode(Op.GET_DOMAIN_PATH, i, 0, b"%d\0" % i) for i in range(20))
    with RawConn(module_daemon) as conn:
        for b in stream:
            conn.send(bytes([b]))
        for i in range(20):
            p = conn.recv_packet()
            assert (p.req_id, p.payload) == (i, b"/local/domain/%d\0" % i)


def test_req_and_tx_ids_are_echoed_verbatim(module_daemon: str) -> None:
    with RawConn(module_daemon) as conn:
        for req_id in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF):
            p = conn.request(Op.GET_DOMAIN_PATH, b"1\0", req_id=req_id)
            assert p.req_id == req_id
        p = conn.request(Op.READ, b"/tool\0", req_id=3, tx_id=0xDEAD)
        assert (p.op, p.req_id, p.tx_id) == (Op.ERROR, 3, 0xDEAD)  # unknown transaction


def test_concurrent_tasks_on_several_connections(module_daemon: str) -> None:
    async def worker(xs: AsyncClient, c: int, t: int) -> None:
        for i in range(20):
            path = f"/conc/{c}/{t}/{i}"
            await xs.write(path, path)
            assert await xs.read(path) == path.encode()

    async def main() -> None:
        clients = [await AsyncClient.connect(module_daemon) for _ in range(4)]
        try:
            await asyncio.gather(
                *(worker(xs, c, t) for c, xs in enumerate(clients) for t in range(25))
            )
            counts = await asyncio.gather(*(clients[0].directory(f"/conc/{c}") for c in range(4)))
            assert [len(x) for x in counts] == [25] * 4
        finally:
            for xs in clients:
                await xs.close()

    asyncio.run(asyncio.wait_for(main(), 30))
