"""Quotas that stall a domain's ring instead of failing its requests (issue 5 §4):
outstanding requests, memory, and conflict credit (issue 4 §4)."""

from __future__ import annotations

import asyncio

from pyxenstored import errors
from pyxenstored.protocol.wire import HEADER, Op, encode
from pyxenstored.transports.ring import ERROR_COMM

from .simharness import SimDaemon, run, until


def _replies(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while len(data) >= 16:
        op, _, _, n = HEADER.unpack_from(data)
        out.append((op, data[16 : 16 + n]))
        data = data[16 + n :]
    return out


def test_outstanding_quota_stops_reading_without_failing() -> None:
    """A guest that pipelines requests without consuming replies is not read past its
    outstanding quota; none of its requests fails, and all are answered once it reads."""

    async def body() -> None:
        async with SimDaemon() as d:
            d0 = d.d0()
            await d0.write("/tool/xenstored/quota/outstanding", b"5")
            await d0.mkdir("/local/domain/5")
            await d0.set_perms("/local/domain/5", ["n5"])
            await d0.write("/local/domain/5/v", b"x" * 200)
            raw = d.raw_guest(5)
            await d0.introduce(5, 0, 9)
            request = encode(Op.READ, 1, 0, b"v\0")  # each reply is 216 bytes
            for _ in range(4):
                raw.ring.write(request * 4)
                raw.kick()
                await asyncio.sleep(0.02)
            assert d.server is not None
            conn = d.server.engine.domains[5].conn
            assert conn is not None
            # The rsp ring (1024 bytes) holds 4 replies; with 5 outstanding the daemon
            # stops taking requests: some are still unread in the request ring.
            await until(lambda: d.rings.stats["stalls"] > 0)
            assert raw.ring.free() < 1024  # requests still unread
            got = b""
            for _ in range(2000):
                data = raw.ring.read()
                if data:
                    got += data
                    raw.kick()
                if len(_replies(got)) == 16:
                    break
                await asyncio.sleep(0.002)
            replies = _replies(got)
            assert len(replies) == 16
            assert all(r == (Op.READ, b"x" * 200) for r in replies)
            raw.close()

    run(body)


def test_conflict_credit_pauses_a_guest_and_returns() -> None:
    """A guest whose writes keep breaking dom0's transactions is paused after the burst
    limit, then served again as credit returns."""

    async def body() -> None:
        async with SimDaemon() as d:
            d0 = d.d0()
            await d0.write("/tool/xenstored/conflict/burst-limit", b"2")
            await d0.write("/tool/xenstored/conflict/replenish-seconds", b"0.05")
            g = await d.guest(5)
            await d0.write("/shared", b"0")
            await d0.set_perms("/shared", ["n0", "b5"])
            engine = d.server.engine if d.server else None
            assert engine is not None
            refused = 0
            for i in range(2):
                t = await d0.transaction_start()
                await d0.read("/shared", tx=t)
                await d0.write("/seen", str(i), tx=t)
                await g.write("/shared", f"g{i}")
                try:
                    await d0.transaction_end(t, True)
                except errors.Again:
                    refused += 1
            assert refused == 2
            conn = engine.domains[5].conn
            assert conn is not None and engine.paused(conn)
            # Its next request waits (not refused) and completes once credit returns.
            done = asyncio.ensure_future(g.write("/shared", b"later"))
            await asyncio.sleep(0.01)
            assert not done.done()
            await asyncio.wait_for(done, 5)
            assert await d0.read("/shared") == b"later"

    run(body)


def test_privileged_rings_are_cut_off_at_the_socket_cap_which_follows_the_setting() -> None:
    """A privileged ring's events are never dropped; past limits/socket-buffer-bytes of
    undelivered output its ring is failed, as a privileged socket is cut off (the
    setting is live)."""

    async def body() -> None:
        async with SimDaemon(priv_domid=7) as d:
            rings = d.rings
            assert rings.privileged_cap == 16 << 20
            await d.d0().write("/tool/xenstored/limits/socket-buffer-bytes", b"65536")
            assert rings.privileged_cap == 65536
            guest = d.raw_guest(7)  # privileged (the toolstack domain), never reads
            await d.d0().introduce(7, 0, 107)
            guest.ring.write(encode(Op.WATCH, 1, 0, b"/\0all\0"))
            guest.kick()
            sink = rings.by_domid[7]
            await until(lambda: sink.conn.out_bytes > 0 or sink.ring.rsp_prod > 0)
            for i in range(400):
                await d.d0().write(f"/flood/{'n' * 200}{i}", b"v")  # ~230-byte events
                if sink.broken:
                    break
            assert sink.broken, sink.conn.out_bytes
            assert sink.conn.out_bytes == 0
            assert guest.ring.error == ERROR_COMM  # the guest was told why

    run(body)
