"""Guests over simulated rings, daemon in this process (fast, engine inspectable):
transport behaviour, INTRODUCE/RELEASE/death end to end, reconnection, fairness, and
hostile guests (xenstore-protocol.md §5.6, §7; simulated-xen.md)."""

from __future__ import annotations

import asyncio
import random
import subprocess

import pytest

from pyxenstored import errors
from pyxenstored.client.aio import ConnectionClosed
from pyxenstored.client.ring import RingChannel
from pyxenstored.protocol.wire import HEADER, Op, encode
from pyxenstored.transports.ring import ERROR_PROTO, ERROR_RINGIDX, RECONNECT

from .simharness import PYTHON, SimDaemon, kick_virq, kill_domain, run, subprocess_env, until


def test_guest_requests_over_a_ring() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            g = await d.guest(5)
            await g.write("data/x", b"hello")
            assert await d.d0().read("/local/domain/5/data/x") == b"hello"
            assert await g.read("/local/domain/5/data/x") == b"hello"
            assert await g.directory("data") == ["x"]
            # 2 KiB requests and 4 KiB replies cross the 1024-byte rings in pieces
            rnd = random.Random(1)
            mid = bytes(rnd.getrandbits(8) for _ in range(1900))  # node-size quota: 2048
            await g.write("data/mid", mid)
            assert await g.read("data/mid") == mid
            big = bytes(rnd.getrandbits(8) for _ in range(4000))
            await d.d0().write("/local/domain/5/data/big", big)
            assert await g.read("data/big") == big
            # many requests in flight at once
            await asyncio.gather(*(g.write(f"data/n{i}", str(i)) for i in range(200)))
            values = await asyncio.gather(*(g.read(f"data/n{i}") for i in range(200)))
            assert values == [str(i).encode() for i in range(200)]
            with pytest.raises(errors.PermissionDenied):
                await g.write("/local/domain/0/x", b"no")
            with pytest.raises(errors.PermissionDenied):
                await g.introduce(6, 0, 1)

    run(body)


def test_watch_events_reach_guests_and_dom0() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            g = await d.guest(5)
            await g.mkdir("data")
            await g.watch("data", "rel")
            assert (await g.next_event(2)).path == "data"
            await d.d0().write("/local/domain/5/data/y", b"1")
            assert tuple(await g.next_event(2)) == ("data/y", "rel")
            await d.d0().watch("/local/domain/5", "abs")
            await d.d0().next_event(2)
            await g.write("data/z", b"2")
            assert tuple(await d.d0().next_event(2)) == ("/local/domain/5/data/z", "abs")

    run(body)


def test_introduce_advertises_features_and_resets_the_ring() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            await d.d0().set_feature(6, 3)
            g5, g6 = await d.guest(5), await d.guest(6)
            assert g5._channel.guest.ring.server_features == 15  # type: ignore[attr-defined]
            assert g6._channel.guest.ring.server_features == 3  # type: ignore[attr-defined]
            assert await g6.get_feature() == 3
            with pytest.raises(errors.Invalid):
                await g6.watch("data", "t", depth=1)  # WATCHDEPTH masked off
            await g5.watch("data", "t")
            await g5.next_event(2)
            await d.d0().introduce(5, 0, 105)  # again: watches and ring reset
            ring = g5._channel.guest.ring  # type: ignore[attr-defined]
            assert ring.words[512:516].tolist() == [0, 0, 0, 0]
            await d.d0().write("/local/domain/5/data", b"x")
            await g5.write("ok", b"1")  # the ring still works after the reset
            assert g5.pending_events() == 0
            assert d.server is not None
            assert not d.server.engine.domains[5].conn.watches  # type: ignore[union-attr]

    run(body)


def test_reconnection_handshake() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            g = await d.guest(5)
            await g.watch("data", "t")
            await g.next_event(2)
            tx = await g.transaction_start()
            await g._channel.reconnect()  # type: ignore[attr-defined]
            ring = g._channel.guest.ring  # type: ignore[attr-defined]
            assert ring.connection == 0
            await d.d0().write("/local/domain/5/data", b"x")
            await asyncio.sleep(0.05)
            assert g.pending_events() == 0  # the watch went with the reconnection
            with pytest.raises(errors.NoEntry):
                await g.write("data", b"y", tx=tx)  # and so did the transaction
            await g.write("data", b"z")
            assert await d.d0().read("/local/domain/5/data") == b"z"

    run(body)


def test_introduce_needs_a_page() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            with pytest.raises(errors.NoEntry):
                await d.d0().introduce(5, 0, 9)  # no ring.5 (C: the errno of the map)
            (d.fakexen / "ring.5").write_bytes(b"short")
            with pytest.raises(errors.Invalid):
                await d.d0().introduce(5, 0, 9)
            with pytest.raises(errors.NoEntry):
                await d.d0().introduce(500, 0, 9)  # the hypervisor does not know it
            assert not await d.d0().is_domain_introduced(5)
            assert 5 not in d.rings.by_domid

    run(body)


def test_reconnect_pending_at_introduce_is_completed() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            raw = d.raw_guest(5)
            raw.ring.request_reconnect()
            assert raw.ring.connection == RECONNECT
            await d.d0().introduce(5, 0, 9)
            assert raw.ring.connection == 0
            assert raw.drain() >= 1  # and the guest was notified
            raw.close()

    run(body)


def test_release_and_death_end_to_end() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            d0 = d.d0()
            g5, g6 = await d.guest(5), await d.guest(6)
            await g5.write("data/a", b"1")
            await g6.write("data/b", b"2")
            await d0.watch("@releaseDomain", "r")
            await g6.watch("@releaseDomain", "g")  # readable by any domain
            await d0.next_event(2)
            await g6.next_event(2)
            await d0.release(5)
            assert tuple(await d0.next_event(2)) == ("@releaseDomain", "r")
            assert tuple(await g6.next_event(2)) == ("@releaseDomain", "g")
            assert not await d0.is_domain_introduced(5)
            with pytest.raises(errors.NoEntry):
                await d0.read("/local/domain/5")
            assert 5 not in d.rings.by_domid
            # the released guest is no longer served: its request gets no answer
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(g5.read("data/a"), 0.3)
            kill_domain(d.fakexen, 6)
            assert tuple(await d0.next_event(2)) == ("@releaseDomain", "r")
            assert not await d0.is_domain_introduced(6)
            with pytest.raises(errors.NoEntry):
                await d0.read("/local/domain/6")
            with pytest.raises(errors.NoEntry):
                await d0.introduce(6, 0, 1)  # still dying
            (d.fakexen / "dying.6").unlink()
            kick_virq(d.fakexen)  # harmless
            g6b = await d.guest(6)  # a new domain 6 starts afresh
            assert await g6b.directory("/local/domain/6") == []

    run(body)


def test_priv_domid_ring_is_privileged() -> None:
    async def body() -> None:
        async with SimDaemon(priv_domid=5) as d:
            g = await d.guest(5, home=False)
            await g.write("/anywhere", b"ok")
            assert await g.is_domain_introduced(5)

    run(body)


def test_only_signalled_rings_are_served() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            for domid in range(10, 60):
                await d.guest(domid)
            busy = await d.guest(5)
            await asyncio.sleep(0.1)
            before = dict(d.rings.stats)
            for i in range(100):
                await busy.write("data", str(i))
            turns = d.rings.stats["turns"] - before["turns"]
            assert d.rings.stats["sweeps"] == before["sweeps"]
            assert turns <= 300, turns  # ~2 per request, never 50 idle rings each time

    run(body)


def test_a_busy_ring_does_not_starve_others() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            busy, quiet = await d.guest(5), await d.guest(6)
            loop = asyncio.get_running_loop()
            flood = asyncio.gather(*(busy.write(f"data/{i % 50}", b"v" * 300) for i in range(3000)))
            await asyncio.sleep(0.02)
            t0 = loop.time()
            for i in range(20):
                await quiet.write("data", str(i))
            quiet_time = loop.time() - t0
            assert not flood.done(), "the flood finished first: make it bigger"
            await flood
            flood_time = loop.time() - t0
            assert quiet_time < flood_time / 3, (quiet_time, flood_time)

    run(body)


# -- hostile guests ------------------------------------------------------------------------
async def _healthy(d: SimDaemon, domid: int) -> None:
    g = await d.guest(domid)
    await g.write("data", b"still served")
    assert await g.read("data") == b"still served"


def test_bad_indexes_break_only_that_ring_xsa38_xsa325() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            d0 = d.d0()
            await d0.watch("@releaseDomain", "r")
            await d0.next_event(2)
            await d0.mkdir("/local/domain/5")
            await d0.set_perms("/local/domain/5", ["n5"])
            raw = d.raw_guest(5)
            await d0.introduce(5, 0, 9)
            raw.ring.words[513] = 5000  # req_prod: 5000 bytes "available"
            raw.kick()
            await until(lambda: raw.ring.error != 0)
            assert raw.ring.error == ERROR_RINGIDX
            await _healthy(d, 6)
            # marked bad, not gone: no @releaseDomain until it really dies (XSA-325)
            assert await d0.is_domain_introduced(5)
            assert await d0.read("/local/domain/5") == b""
            await asyncio.sleep(0.05)
            assert d0.pending_events() == 0
            raw.ring.words[513] = 0  # whatever it does now, it is not read again
            raw.ring.words[512] = 0
            raw.ring.write(encode(Op.READ, 1, 0, b"data\0"))
            raw.kick()
            await asyncio.sleep(0.05)
            assert raw.ring.read() == b""
            kill_domain(d.fakexen, 5)
            assert tuple(await d0.next_event(2)) == ("@releaseDomain", "r")
            with pytest.raises(errors.NoEntry):
                await d0.read("/local/domain/5")
            raw.close()

    run(body)


def test_bad_response_indexes_break_the_ring() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            raw = d.raw_guest(5)
            await d.d0().introduce(5, 0, 9)
            raw.ring.words[514] = 3000  # rsp_cons ahead of rsp_prod
            raw.ring.write(encode(Op.GET_DOMAIN_PATH, 1, 0, b"5\0"))
            raw.kick()
            await until(lambda: raw.ring.error != 0)
            assert raw.ring.error == ERROR_RINGIDX
            await _healthy(d, 6)
            raw.close()

    run(body)


def test_oversized_header_is_a_protocol_error() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            raw = d.raw_guest(5)
            await d.d0().introduce(5, 0, 9)
            raw.ring.write(HEADER.pack(Op.WRITE, 1, 0, 5000) + b"x" * 100)
            raw.kick()
            await until(lambda: raw.ring.error != 0)
            assert raw.ring.error == ERROR_PROTO
            assert await d.d0().is_domain_introduced(5)
            await _healthy(d, 6)
            raw.close()

    run(body)


def test_garbage_is_contained() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            rnd = random.Random(7)
            raws = []
            for domid in (5, 7, 8):
                raw = d.raw_guest(domid)
                raws.append(raw)
                await d.d0().introduce(domid, 0, 9)
            # small-length headers with random types, then pure noise
            for i in range(30):
                op = rnd.randrange(0, 70000)
                body_ = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 40)))
                raws[0].ring.write(HEADER.pack(op, i, rnd.getrandbits(32), len(body_)) + body_)
                raws[0].kick()
                raws[0].ring.read()
                await asyncio.sleep(0)
            raws[1].ring.write(bytes(rnd.getrandbits(8) for _ in range(1024)))
            raws[1].kick()
            raws[2].ring.write(b"\xff" * 64)
            raws[2].kick()
            await until(lambda: raws[1].ring.error != 0 and raws[2].ring.error != 0)
            await _healthy(d, 6)
            assert d.server is not None and d.server.engine.check() == []
            for raw in raws:
                raw.close()

    run(body)


def test_guest_that_never_consumes_is_bounded() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            d0 = d.d0()
            await d0.mkdir("/local/domain/5")
            await d0.set_perms("/local/domain/5", ["n5"])
            await d0.write("/local/domain/5/big", b"b" * 3000)
            raw = d.raw_guest(5)
            await d0.introduce(5, 0, 9)
            await d0.write("/hot", b"")
            await d0.set_perms("/hot", ["n0", "r5"])
            token = b"t" * 900  # each event is about 1 KiB; the request fits the ring
            raw.ring.write(encode(Op.WATCH, 0, 0, b"/hot\0" + token + b"\0"))
            request = encode(Op.READ, 1, 0, b"big\0")
            sent = 0
            for _ in range(60):  # keeps writing requests, never reads a reply
                while raw.ring.free() >= len(request):
                    raw.ring.write(request)
                    sent += 1
                raw.kick()
                await asyncio.sleep(0.002)
            assert raw.ring.free() < len(request)  # the daemon stopped reading
            # events keep coming for it
            # (distinct paths: identical queued events would be coalesced, as in C)
            await asyncio.gather(*(d0.write(f"/hot/{i}", str(i)) for i in range(1300)))
            assert d.server is not None
            conn = d.server.engine.domains[5].conn
            assert conn is not None
            # Reading stopped once the backlog passed the stall mark, and events beyond
            # the engine's cap were dropped: memory stays bounded.
            one_turn = 1024 // len(request) * 3100
            cap = d.server.engine.event_queue_max
            assert conn.out_bytes <= d.rings.read_stall + one_turn + cap + 1024
            assert sent < 200
            assert conn.events_dropped > 0
            await _healthy(d, 6)
            # When it starts consuming, it is served again.
            got = b""
            for _ in range(20000):
                data = raw.ring.read()
                if data:
                    got += data
                    raw.kick()
                await asyncio.sleep(0)
                if got.count(b"b" * 3000) >= sent:
                    break
            assert got.count(b"b" * 3000) == sent
            raw.close()

    run(body)


def test_kicks_in_a_tight_loop_do_not_starve_others() -> None:
    storm = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.bind(sys.argv[1]); s.setblocking(False)\n"
        "print('go', flush=True)\n"
        "while True:\n"
        "    try: s.sendto(b'\\0\\0\\0\\0', sys.argv[2])\n"
        "    except BlockingIOError: pass\n"
    )

    async def body() -> None:
        async with SimDaemon() as d:
            victim = await d.guest(6)
            noisy = d.raw_guest(5)
            await d.d0().introduce(5, 0, 9)
            noisy.close()  # the storm process takes over its notify socket
            proc = subprocess.Popen(
                [PYTHON, "-c", storm, str(d.fakexen / "notify.5"), str(d.fakexen / "evtchn")],
                stdout=subprocess.PIPE,
                env=subprocess_env(),
            )
            try:
                assert proc.stdout is not None
                await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                sweeps0 = d.rings.stats["sweeps"]
                for i in range(100):
                    await victim.write("data", str(i))
                elapsed = loop.time() - t0
                assert elapsed < 10, elapsed
                # lost kicks make us look at every ring, but at a bounded rate
                sweeps = d.rings.stats["sweeps"] - sweeps0
                assert sweeps <= elapsed / d.rings.rescan_interval + 2
            finally:
                proc.kill()
                proc.wait()

    run(body)


def test_spurious_kicks_are_harmless() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            g = await d.guest(5)
            import socket

            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                for _ in range(5):
                    s.sendto(b"\7\0\0\0", str(d.fakexen / "evtchn"))
                    s.sendto(b"", str(d.fakexen / "evtchn"))
            await g.write("data", b"1")
            assert await g.read("data") == b"1"

    run(body)


def test_guest_sees_end_of_stream_when_marked_broken() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            g = await d.guest(5)
            await g.write("data", b"1")
            channel = g._channel
            assert isinstance(channel, RingChannel)
            ring = channel.guest.ring
            ring.words[513] = (ring.words[512] + 4000) & 0xFFFFFFFF  # a bogus req_prod
            channel.guest.kick()
            await until(lambda: ring.error != 0)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(g.read("data"), 2)

    run(body)
