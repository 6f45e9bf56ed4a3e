"""aio.Client against a scripted in-memory Channel: what a real daemon never does
(out-of-order replies, byte-by-byte delivery, unknown errors, sudden EOF)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from pyxenstored import errors
from pyxenstored.client import ConnectionClosed, WatchEvent
from pyxenstored.client.aio import Client, Transaction
from pyxenstored.protocol.framing import Packet, PacketReader
from pyxenstored.protocol.wire import Op, encode

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


class FakeChannel:
    """A Channel whose far end is the test: requests arrive in ``requests``."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[Packet] = asyncio.Queue()
        self.sends: list[bytes] = []
        self.closed = False
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self._framing = PacketReader()

    async def send(self, data: bytes) -> None:
        self.sends.append(data)
        for packet in self._framing.feed(data):
            self.requests.put_nowait(packet)

    async def recv(self) -> bytes:
        return await self._incoming.get()

    async def aclose(self) -> None:
        self.closed = True

    # the daemon's side -------------------------------------------------------------
    def push(self, data: bytes) -> None:
        self._incoming.put_nowait(data)

    def reply(self, req: Packet, payload: bytes, op: int | None = None) -> None:
        self.push(encode(req.op if op is None else op, req.req_id, req.tx_id, payload))

    def error(self, req: Packet, name: str) -> None:
        self.reply(req, name.encode() + b"\0", Op.ERROR)

    def event(self, path: str, token: str) -> None:
        self.push(encode(Op.WATCH_EVENT, 0, 0, f"{path}\0{token}\0".encode()))

    def eof(self) -> None:
        self.push(b"")

    async def serve(self, answer: Callable[[Packet], tuple[int, bytes] | None]) -> None:
        """Answer every request with ``answer(packet)`` -> (op, payload) or nothing."""
        while True:
            req = await self.requests.get()
            out = answer(req)
            if out is not None:
                self.reply(req, out[1], out[0])


async def with_client(body: Callable[[Client, FakeChannel], Awaitable[T]]) -> T:
    channel = FakeChannel()
    client = Client(channel)
    try:
        return await body(client, channel)
    finally:
        await client.close()
        assert channel.closed


def test_replies_matched_by_req_id_in_any_order() -> None:
    async def body(client: Client, ch: FakeChannel) -> None:
        tasks = [asyncio.create_task(client.read(f"/n{i}")) for i in range(3)]
        reqs = [await ch.requests.get() for _ in range(3)]
        assert len({r.req_id for r in reqs}) == 3
        for req in reversed(reqs):
            ch.reply(req, b"value of " + req.payload[:-1])
        assert await asyncio.gather(*tasks) == [b"value of /n0", b"value of /n1", b"value of /n2"]

    run(with_client(body))


def test_replies_split_into_single_bytes() -> None:
    async def body(client: Client, ch: FakeChannel) -> None:
        task = asyncio.create_task(client.directory("/d"))
        req = await ch.requests.get()
        ch.event("/w", "tok")  # an event between the request and the reply
        for b in encode(Op.DIRECTORY, req.req_id, 0, b"a\0b\0"):
            ch.push(bytes([b]))
        assert await task == ["a", "b"]
        assert await client.next_event(1) == WatchEvent("/w", "tok")

    run(with_client(body))


def test_error_reply_raised_as_subclass_or_named_base() -> None:
    async def body(client: Client, ch: FakeChannel) -> None:
        task = asyncio.create_task(client.read("/x"))
        ch.error(await ch.requests.get(), "EACCES")
        with pytest.raises(errors.PermissionDenied):
            await task
        written = asyncio.create_task(client.write("/x", b"1"))
        ch.error(await ch.requests.get(), "EQUOTA")
        with pytest.raises(errors.XenstoreError) as info:
            await written
        assert type(info.value) is errors.XenstoreError and info.value.name == "EQUOTA"

    run(with_client(body))


def test_eof_fails_pending_requests_and_ends_events() -> None:
    async def body(client: Client, ch: FakeChannel) -> None:
        task = asyncio.create_task(client.read("/x"))
        await ch.requests.get()
        ch.event("/e", "t")
        ch.eof()
        with pytest.raises(ConnectionClosed):
            await task
        assert [e async for e in client.events()] == [WatchEvent("/e", "t")]
        with pytest.raises(ConnectionClosed):
            await client.next_event(0.5)
        with pytest.raises(ConnectionClosed):
            await client.read("/y")
        assert client.closed

    run(with_client(body))


def test_cancelled_request_keeps_its_id_until_the_reply() -> None:
    async def body(client: Client, ch: FakeChannel) -> None:
        first = asyncio.create_task(client.read("/slow"))
        req1 = await ch.requests.get()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(client.read("/fast"))
        req2 = await ch.requests.get()
        assert req2.req_id != req1.req_id
        ch.reply(req1, b"late")  # discarded
        ch.reply(req2, b"right")
        assert await second == b"right"

    run(with_client(body))


def test_request_ids_wrap_and_skip_ids_in_use() -> None:
    async def body(client: Client, ch: FakeChannel) -> None:
        client._next_id = 0xFFFFFFFF
        a = asyncio.create_task(client.read("/a"))
        b = asyncio.create_task(client.read("/b"))
        ra, rb = await ch.requests.get(), await ch.requests.get()
        assert (ra.req_id, rb.req_id) == (0xFFFFFFFF, 1)
        ch.reply(rb, b"B")
        ch.reply(ra, b"A")
        assert list(await asyncio.gather(a, b)) == [b"A", b"B"]

    run(with_client(body))


def test_concurrent_requests_are_batched_into_few_sends() -> None:
    async def body(client: Client, ch: FakeChannel) -> None:
        server = asyncio.create_task(ch.serve(lambda p: (p.op, p.payload[:-1])))
        results = await asyncio.gather(*(client.read(f"/k{i}") for i in range(200)))
        assert results == [f"/k{i}".encode() for i in range(200)]
        assert len(ch.sends) < 20
        server.cancel()

    run(with_client(body))


def test_oversized_request_refused_locally() -> None:
    async def body(client: Client, ch: FakeChannel) -> None:
        with pytest.raises(errors.TooBig):
            await client.write("/big", b"x" * 4096)
        await asyncio.sleep(0)
        assert ch.requests.empty()

    run(with_client(body))


def test_unexpected_reply_type_is_a_protocol_error() -> None:
    from pyxenstored.client import ProtocolError

    async def body(client: Client, ch: FakeChannel) -> None:
        task = asyncio.create_task(client.read("/x"))
        ch.reply(await ch.requests.get(), b"OK\0", Op.WRITE)
        with pytest.raises(ProtocolError):
            await task

    run(with_client(body))


def test_directory_falls_back_to_directory_part() -> None:
    def answer(p: Packet) -> tuple[int, bytes]:
        if p.op == Op.DIRECTORY:
            return Op.ERROR, b"E2BIG\0"
        offset = int(p.payload.split(b"\0")[1])
        return Op.DIRECTORY_PART, {0: b"9\0aa\0b\0", 5: b"9\0c\0\0"}[offset]

    async def body(client: Client, ch: FakeChannel) -> None:
        server = asyncio.create_task(ch.serve(answer))
        assert await client.directory("/d") == ["aa", "b", "c"]
        server.cancel()

    run(with_client(body))


def test_quota_and_domain_calls_decode_replies() -> None:
    replies: dict[int, bytes] = {
        Op.GET_QUOTA: b"nodes watches transactions\0",
        Op.GET_DOMAIN_PATH: b"/local/domain/7\0",
        Op.IS_DOMAIN_INTRODUCED: b"F\0",
        Op.GET_FEATURE: b"15\0",
        Op.CONTROL: b"some text\n\0",
    }

    async def body(client: Client, ch: FakeChannel) -> None:
        server = asyncio.create_task(ch.serve(lambda p: (p.op, replies.get(p.op, b"OK\0"))))
        assert await client.get_quota() == ["nodes", "watches", "transactions"]
        assert await client.get_domain_path(7) == "/local/domain/7"
        assert await client.is_domain_introduced(7) is False
        assert await client.get_feature() == 15
        assert await client.control("help") == b"some text\n"
        await client.set_quota("nodes", 5, 3)
        await client.introduce(3, 100, 7)
        await client.release(3)
        await client.resume(3)
        await client.set_target(3, 4)
        await client.set_feature(3, 1)
        server.cancel()

    run(with_client(body))


def _txn_server(ch: FakeChannel, conflicts: int, log: list[Packet]) -> Callable[[Packet], Any]:
    state = {"conflicts": conflicts, "next": 1}

    def answer(p: Packet) -> tuple[int, bytes]:
        log.append(p)
        if p.op == Op.TRANSACTION_START:
            state["next"] += 1
            return p.op, b"%d\0" % state["next"]
        if p.op == Op.TRANSACTION_END and p.payload == b"T\0" and state["conflicts"] > 0:
            state["conflicts"] -= 1
            return Op.ERROR, b"EAGAIN\0"
        if p.op == Op.READ:
            return p.op, b"41"
        return p.op, b"OK\0"

    return answer


def test_transact_retries_on_eagain() -> None:
    log: list[Packet] = []
    calls: list[int] = []

    async def increment(t: Transaction) -> int:
        calls.append(t.id)
        value = int(await t.read("/counter")) + 1
        await t.write("/counter", str(value))
        return value

    async def body(client: Client, ch: FakeChannel) -> None:
        server = asyncio.create_task(ch.serve(_txn_server(ch, 2, log)))
        assert await client.transact(increment, backoff=0) == 42
        assert calls == [2, 3, 4]
        writes = [p for p in log if p.op == Op.WRITE]
        assert [p.tx_id for p in writes] == [2, 3, 4]
        server.cancel()

    run(with_client(body))


def test_transact_gives_up_after_bounded_retries() -> None:
    log: list[Packet] = []
    calls: list[int] = []

    async def noop(t: Transaction) -> None:
        calls.append(t.id)

    async def body(client: Client, ch: FakeChannel) -> None:
        server = asyncio.create_task(ch.serve(_txn_server(ch, 100, log)))
        with pytest.raises(errors.Again):
            await client.transact(noop, retries=3, backoff=0)
        assert len(calls) == 4
        server.cancel()

    run(with_client(body))


def test_transaction_context_aborts_when_the_body_raises() -> None:
    log: list[Packet] = []

    async def body(client: Client, ch: FakeChannel) -> None:
        server = asyncio.create_task(ch.serve(_txn_server(ch, 0, log)))
        with pytest.raises(KeyError):
            async with client.transaction() as t:
                await t.write("/x", b"1")
                raise KeyError("boom")
        async with client.transaction() as t2:
            await t2.mkdir("/y")
        server.cancel()
        ends = [(p.tx_id, p.payload) for p in log if p.op == Op.TRANSACTION_END]
        assert ends == [(t.id, b"F\0"), (t2.id, b"T\0")]

    run(with_client(body))
