"""A crash at every point of a ring turn loses no request and repeats no answer (issue 9).

A guest writes requests into its simulated ring (some not idempotent: RM, WATCH, a
request split over two turns) and dom0 writes a node the guest watches. Every moment at
which the daemon makes something visible (a journal frame, ``req_cons``, ``rsp_prod``)
is captured twice, just before and just after, plus a journal whose last frame is torn
in half. From each capture a new daemon is started on copies of the journal and the ring
page, as after ``kill -9`` there; the guest writes what it had not written yet and reads
its ring. It must read exactly the reply stream of a run without a crash (each request
answered once, in order, no event lost or repeated), and the store must hold exactly the
run's nodes.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from domains.simharness import run, short_dir, until

from pyxenstored import errors
from pyxenstored.client.aio import Client
from pyxenstored.client.ring import SimGuest
from pyxenstored.protocol.framing import PacketReader
from pyxenstored.protocol.wire import Op, encode
from pyxenstored.runtime import journal as runtime_journal
from pyxenstored.runtime.server import Server, ServerConfig
from pyxenstored.transports import ring as ring_mod
from pyxenstored.transports.ring import GuestRing

DOMID = 5
HOME = f"/local/domain/{DOMID}"


def request(op: Op, req_id: int, *parts: bytes) -> bytes:
    return encode(op, req_id, 0, b"".join(parts))


#: the guest's requests, in the batches it writes them in (one turn each; the last
#: request is split over two turns: 1024 bytes, then the rest)
BIG = b"v" * 1500
BATCHES: list[bytes] = [
    request(Op.WRITE, 1, b"data/a\0", b"1") + request(Op.WATCH, 2, b"data/w\0", b"tok\0"),
    request(Op.RM, 3, b"data/a\0")
    + request(Op.READ, 4, b"data/a\0")
    + request(Op.MKDIR, 5, b"data/d\0"),
]
_BIG_REQUEST = request(Op.WRITE, 6, b"data/big\0", BIG)
BATCHES += [_BIG_REQUEST[:1024], _BIG_REQUEST[1024:]]
STREAM = b"".join(BATCHES)


@dataclass
class Capture:
    """What a crash at one moment leaves behind."""

    where: str
    journal: bytes
    page: bytes
    dom0_page: bytes


def _pages(fakexen: Path) -> tuple[bytes, bytes]:
    return (fakexen / f"ring.{DOMID}").read_bytes(), (fakexen / "ring.0").read_bytes()


@contextmanager
def capturing(state: Path, fakexen: Path) -> Iterator[list[Capture]]:
    """Record a Capture before and after every visible move of the daemon."""
    captures: list[Capture] = []
    journal = state / "journal"

    def snap(where: str) -> None:
        page, dom0 = _pages(fakexen)
        data = journal.read_bytes() if journal.exists() else b""
        captures.append(Capture(where, data, page, dom0))

    originals: dict[tuple[Any, str], Callable[..., Any]] = {}

    def wrap(owner: Any, name: str) -> None:
        original = getattr(owner, name)
        originals[(owner, name)] = original

        def wrapped(self: Any, *args: Any) -> Any:
            snap(f"before {name}")
            result = original(self, *args)
            snap(f"after {name}")
            if name == "_append":
                # The same frame torn in half: a crash in the middle of the copy.
                (data,) = args
                last = captures[-1]
                cut = len(captures[-2].journal.rstrip(b"\0")) + len(data) // 2
                torn = last.journal[:cut] + bytes(len(last.journal) - cut)
                captures.append(Capture("torn _append", torn, last.page, last.dom0_page))
            return result

        setattr(owner, name, wrapped)

    wrap(runtime_journal.Journal, "_append")
    wrap(ring_mod.ServerRing, "consume")
    wrap(ring_mod.ServerRing, "write")
    try:
        yield captures
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)


async def start(directory: Path) -> tuple[Server, asyncio.Task[None], Client]:
    config = ServerConfig(
        socket_path=str(directory / "socket"),
        sim_xen_dir=str(directory / "fx"),
        state_dir=str(directory),
        loop="asyncio",
    )
    server = Server(config)
    started = asyncio.Event()
    task = asyncio.create_task(server.serve(started))
    await asyncio.wait_for(started.wait(), 10)
    return server, task, await Client.connect(str(directory / "socket"))


async def stop(server: Server, task: asyncio.Task[None], dom0: Client) -> None:
    await dom0.close()
    assert server._stop is not None
    server._stop.set()
    await asyncio.wait_for(task, 10)


def read_all(ring: GuestRing, reader: PacketReader, out: list[tuple[int, int, bytes]]) -> None:
    while True:
        data = ring.read()
        if not data:
            return
        out.extend((p.op, p.req_id, p.payload) for p in reader.feed(data))


async def tree(dom0: Client) -> dict[str, bytes]:
    """The guest's data nodes."""
    out: dict[str, bytes] = {}
    for name in await dom0.directory(f"{HOME}/data"):
        out[name] = await dom0.read(f"{HOME}/data/{name}")
    return out


Replies = list[tuple[int, int, bytes]]


async def original_run(directory: Path) -> tuple[list[Capture], Replies, dict[str, bytes]]:
    """The run every crash is cut from: the captures, the guest's replies, the nodes."""
    fakexen = directory / "fx"
    fakexen.mkdir(parents=True)
    server, task, dom0 = await start(directory)
    guest = SimGuest(str(fakexen), DOMID)
    await dom0.mkdir(HOME)
    await dom0.set_perms(HOME, [f"n{DOMID}"])
    await dom0.mkdir(f"{HOME}/data")
    await dom0.introduce(DOMID, 0, DOMID + 100)
    assert server.rings is not None
    sink = server.rings.by_domid[DOMID]
    with capturing(directory, fakexen) as captures:
        for batch in BATCHES:
            assert guest.ring.write(batch) == len(batch)
            sink.turn()  # the guest's kick, served now: captures in a known order
        await dom0.write(f"{HOME}/data/w", b"from dom0")  # fires the guest's watch
        await until(lambda: not sink.queue and not sink.conn.out)
    replies: list[tuple[int, int, bytes]] = []
    read_all(guest.ring, PacketReader(), replies)
    nodes = await tree(dom0)
    await stop(server, task, dom0)
    guest.close()
    return captures, replies, nodes


async def after_crash(
    capture: Capture, directory: Path
) -> tuple[list[tuple[int, int, bytes]], dict[str, bytes]]:
    """A daemon started on what ``capture`` left; the guest and dom0 carry on."""
    fakexen = directory / "fx"
    fakexen.mkdir(parents=True)
    (fakexen / f"ring.{DOMID}").write_bytes(capture.page)
    (fakexen / "ring.0").write_bytes(capture.dom0_page)
    if capture.journal:
        (directory / "journal").write_bytes(capture.journal)
    server, task, dom0 = await start(directory)
    guest = SimGuest(str(fakexen), DOMID, create=False)
    ring = guest.ring
    # The guest writes what it had not written yet (its own req_prod says how far it got).
    written = ring.words[ring_mod.REQ_PROD]
    rest = STREAM[written:]
    replies: list[tuple[int, int, bytes]] = []
    reader = PacketReader()
    while rest:
        n = ring.write(rest)
        rest = rest[n:]
        guest.kick()
        await asyncio.sleep(0.01)
    guest.kick()
    if (await dom0_read(dom0, f"{HOME}/data/w")) is None:
        await dom0.write(f"{HOME}/data/w", b"from dom0")  # unanswered before: sent again

    def done() -> bool:
        read_all(ring, reader, replies)
        return any(op == Op.WRITE and rid == 6 for op, rid, _ in replies) and any(
            op == Op.WATCH_EVENT and payload.startswith(b"data/w\0") and rid == 0
            for op, rid, payload in replies[2:]
        )

    await until(done, timeout=10)
    await asyncio.sleep(0.05)  # anything repeated would arrive now
    read_all(ring, reader, replies)
    nodes = await tree(dom0)
    await stop(server, task, dom0)
    guest.close()
    return replies, nodes


async def dom0_read(dom0: Client, path: str) -> bytes | None:
    try:
        return await dom0.read(path)
    except errors.NoEntry:
        return None


def test_a_crash_at_any_point_of_a_turn_loses_and_repeats_nothing() -> None:
    base = short_dir()
    try:
        captures, want, want_nodes = run(lambda: original_run(base / "orig"), timeout=60)
        # The watch's first event, then the replies 1..6, then dom0's event.
        assert [rid for op, rid, _ in want if op != Op.WATCH_EVENT] == [1, 2, 3, 4, 5, 6]
        assert want_nodes == {"w": b"from dom0", "d": b"", "big": BIG}
        assert len(captures) >= 20
        for n, capture in enumerate(captures):
            got, nodes = run(functools.partial(after_crash, capture, base / f"c{n}"), timeout=30)
            assert got == want, f"crash {n} ({capture.where})"
            assert nodes == want_nodes, f"crash {n} ({capture.where})"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(
    ("journaled", "accepted", "req_cons"),
    [(0, True, 0), (5, True, 5), (10, True, 10), (11, False, 0), (0xFFFFFFFF, False, 0)],
)
def test_settle_takes_only_bytes_the_guest_produced(
    journaled: int, accepted: bool, req_cons: int
) -> None:
    """A journaled req_cons beyond what the guest wrote (a guest that moved its
    indexes) is refused: the ring is served as found."""
    page = bytearray(4096)
    server = ring_mod.ServerRing(page)
    GuestRing(page).write(b"x" * 10)
    assert server.settle(journaled) is accepted
    assert server.req_cons == req_cons
