"""Fuzz target ``rings``: hostile guests writing their ring page at any moment.

Two guests (domains 1 and 2) are introduced through dom0's socket connection to a real
:class:`~pyxenstored.runtime.rings.RingManager` over an in-memory hypervisor (pages are
``bytearray``; no event loop: the program runs the rings' turns itself). Each step of
the program (see :mod:`fuzz.source`) is one of: a guest writes a request (or raw bytes)
through the honest ring protocol, sets any index or control word to any value, writes
any bytes anywhere in its page, reads its replies, asks to reconnect; the daemon takes a
turn of one ring, serves every ready ring, or sweeps; dom0 writes, watches, introduces
again, releases; a domain dies. Mutations are also queued to happen *during* the
daemon's next turn: when it journals what it answered (between reading the requests and
taking them from the ring) and when it notifies a guest (after moving an index).

After every step: the engine's invariants (:mod:`fuzz.invariants`), no error logged
(``_service`` logs a turn's exception and goes on: that is a bug here), and for every
ring still served:

* the daemon wrote its page only where the server end may: the response ring,
  ``req_cons``, ``rsp_prod``, ``server_features``, ``error``, ``connection``, and the
  four indexes on a reset (reconnection, INTRODUCE) -- never the request ring or the
  event-channel port, nothing past the interface;
* ``conn.out_bytes`` equals what is queued for it (in ``conn.out`` and in the sink);
* the output held for a guest stays under the bound of docs/operations.md (memory):
  ``max(read_stall, event_queue_max) + (RING_SIZE // 16 + 1) * (PAYLOAD_MAX + 16)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from pyxenstored.core.caller import Caller
from pyxenstored.core.engine import Engine
from pyxenstored.protocol.wire import HEADER_SIZE, PAYLOAD_MAX, Op, encode
from pyxenstored.runtime.rings import RingManager
from pyxenstored.runtime.ringsink import RingSink
from pyxenstored.transports.base import DomainState
from pyxenstored.transports.ring import (
    CONNECTION,
    ERROR,
    EVTCHN_PORT,
    PAGE_SIZE,
    REQ_CONS,
    REQ_PROD,
    RING_SIZE,
    RSP_CONS,
    RSP_PROD,
    SERVER_FEATURES,
    GuestRing,
    RingBroken,
)

from .invariants import check_engine, message_problems, tree_mark
from .source import Source
from .t_engine import _failed, _payload

MAX_STEPS = 48
GUESTS = (1, 2)
#: kept small so that the stall rules are reached within a few steps
READ_STALL = 2048
EVENT_QUEUE_MAX = 4096

#: what one turn may add beyond the stall point: the replies to one ring's worth of
#: requests (each at least a header), plus the one event that crosses the cap
TURN_BOUND = (RING_SIZE // HEADER_SIZE + 1) * (PAYLOAD_MAX + HEADER_SIZE)
OUTPUT_BOUND = max(READ_STALL, EVENT_QUEUE_MAX) + TURN_BOUND

#: byte offsets the daemon may write (the server end's fields), by word index
_SERVER_WORDS = {REQ_CONS, RSP_PROD, SERVER_FEATURES, ERROR, CONNECTION}
_RESET_WORDS = {REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD, CONNECTION}
_CONTROL_WORDS = [
    REQ_CONS,
    REQ_PROD,
    RSP_CONS,
    RSP_PROD,
    SERVER_FEATURES,
    CONNECTION,
    ERROR,
    EVTCHN_PORT,
]
_INTERESTING = [
    0,
    1,
    2,
    15,
    16,
    1023,
    1024,
    1025,
    2047,
    4096,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFF0,
    0xFFFFFFFF,
]


class _Mapping:
    def __init__(self, page: bytearray) -> None:
        self.page = memoryview(page)

    def close(self) -> None:
        self.page.release()


class _Xen:
    """An in-memory hypervisor: one bytearray page per guest, ports counted up."""

    virq_port = 1000

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.alive = set(GUESTS) | {0}
        self.next_port = 10
        #: called after every notification (a hostile guest acts then)
        self.on_notify: Callable[[], None] = lambda: None

    def fileno(self) -> int:
        return -1

    def pending(self) -> list[int]:
        return []

    def map_ring(self, domid: int) -> _Mapping:
        return _Mapping(self.pages.setdefault(domid, bytearray(PAGE_SIZE)))

    def map_own_ring(self) -> None:
        return None

    def own_port(self) -> None:
        return None

    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        self.next_port += 1
        return self.next_port

    def unbind(self, port: int) -> None:
        return None

    def notify(self, port: int) -> None:
        self.on_notify()

    def domain_exists(self, domid: int) -> bool:
        return domid in self.alive

    def domain_changes(self, known: set[int]) -> list[tuple[int, DomainState]]:
        return [(d, DomainState.DEAD) for d in sorted(known) if d not in self.alive]

    def close(self) -> None:
        return None


class _World:
    def __init__(self) -> None:
        self.xen = _Xen()
        self.rings = RingManager(self.xen, read_stall=READ_STALL)  # type: ignore[arg-type]
        self.engine = Engine(backend=self.rings, event_queue_max=EVENT_QUEUE_MAX)
        self.rings.attach(self.engine, self.flush, self.on_persist)
        self.dom0 = self.engine.connect(Caller(0, True), "socket")
        #: mutations to run at the daemon's next journal point or notification
        self.hooked: list[Callable[[], None]] = []
        #: page offsets (domid, offset) the guests wrote while the daemon ran
        self.guest_wrote: set[tuple[int, int]] = set()
        self.xen.on_notify = self.run_hooked
        self.req_id = 0
        self.checked: tuple[int, int, int, int] | None = None
        for domid in GUESTS:
            self.xen.pages[domid] = bytearray(PAGE_SIZE)
            self.introduce(domid)

    # -- dom0 -------------------------------------------------------------------------------
    def dom0_request(self, op: int, payload: bytes) -> None:
        self.req_id += 1
        self.engine.feed(self.dom0, encode(op, self.req_id, 0, payload))
        self.dom0.take_output()
        self.flush()

    def introduce(self, domid: int) -> None:
        """dom0's INTRODUCE, after the guest wrote its port into the page (as a guest
        kernel does; the toolstack passes the same port)."""
        ring = GuestRing(self.xen.pages[domid])
        ring.set_evtchn_port(domid + 100)
        ring.release()
        self.guest_wrote.update((domid, EVTCHN_PORT * 4 + k) for k in range(4))
        self.dom0_request(Op.INTRODUCE, b"%d\0%d\0%d\0" % (domid, domid, domid + 100))

    def flush(self) -> None:
        """What ``Server.flush`` does: deliver what other connections were woken with."""
        woken = self.engine.woken
        while woken:
            conn = woken.pop()
            if conn.out and conn.sink is not None:
                conn.sink.deliver(conn)

    # -- the hostile guest's moments inside a turn ---------------------------------------
    def on_persist(self) -> None:
        self.run_hooked()

    def run_hooked(self) -> None:
        hooked, self.hooked = self.hooked, []
        for mutate in hooked:
            mutate()

    def sink(self, domid: int) -> RingSink | None:
        return self.rings.by_domid.get(domid)

    def mutation(self, src: Source, domid: int, during: bool) -> Callable[[], None]:
        """One write of a guest into its page (recorded when made while the daemon runs)."""
        page = self.xen.pages[domid]
        kind = src.byte() % 3
        if kind == 0:
            word = src.pick(_CONTROL_WORDS)
            value = src.pick(_INTERESTING) if src.byte() & 1 else src.u32()
            offsets = range(word * 4, word * 4 + 4)
            data = value.to_bytes(4, "little")
        elif kind == 1:
            start = src.below(2048 + 64)
            data = src.raw(40)
            offsets = range(start, min(PAGE_SIZE, start + len(data)))
        else:  # a whole honest request, the guest's producer index moved
            frame = encode(
                src.pick([Op.WRITE, Op.READ, Op.WATCH, Op.DIRECTORY, Op.TRANSACTION_START, Op.RM]),
                7,
                0,
                _payload(src)[:200],
            )

            def honest() -> None:
                ring = GuestRing(page)
                with contextlib.suppress(RingBroken):
                    ring.write(frame)
                if during:
                    self.guest_wrote.update((domid, o) for o in range(0, 1024))
                    self.guest_wrote.update((domid, REQ_PROD * 4 + i) for i in range(4))
                ring.release()

            return honest

        def poke() -> None:
            page[offsets.start : offsets.stop] = data[: len(offsets)]
            if during:
                self.guest_wrote.update((domid, o) for o in offsets)

        return poke

    # -- the daemon's moves, watched ------------------------------------------------------------
    def daemon(self, move: Callable[[], object]) -> None:
        before = {d: bytes(p) for d, p in self.xen.pages.items()}
        states = {d: (s.broken, s.closed) for d, s in self.rings.by_domid.items()}
        self.guest_wrote.clear()
        move()
        self.flush()
        for domid, old in before.items():
            sink = self.sink(domid)
            if sink is None or (sink.broken, sink.closed) != states.get(domid, (True, True)):
                continue  # failed, released or introduced in this move
            new = self.xen.pages[domid]
            if new == old:
                continue
            changed = [i for i in range(PAGE_SIZE) if old[i] != new[i]]
            allowed = _SERVER_WORDS
            if any(
                old[i * 4 : i * 4 + 4] != new[i * 4 : i * 4 + 4]
                and not any((domid, i * 4 + k) in self.guest_wrote for k in range(4))
                for i in (REQ_PROD, RSP_CONS)
            ):
                # Only a reset may move the guest's indexes: it sets all four to 0.
                for i in (REQ_PROD, RSP_CONS):
                    if not any((domid, i * 4 + k) in self.guest_wrote for k in range(4)):
                        assert new[i * 4 : i * 4 + 4] == bytes(4), f"word {i} of {domid}"
                allowed = allowed | _RESET_WORDS
            for i in changed:
                if (domid, i) in self.guest_wrote or 1024 <= i < 2048 or i // 4 in allowed:
                    continue
                raise AssertionError(f"the daemon wrote byte {i} of domain {domid}'s page")

    # -- checks --------------------------------------------------------------------------------
    def check(self) -> None:
        mark = tree_mark(self.engine)
        check_engine(self.engine, exact_output=False, tree_unchanged=mark == self.checked)
        self.checked = mark
        assert not _failed.records, [r.getMessage() for r in _failed.records]
        for domid, sink in self.rings.by_domid.items():
            conn = sink.conn
            if sink.broken or sink.closed or conn.closed:
                continue
            held = sum(map(len, conn.out)) + sum(map(len, sink.queue)) - sink.offset
            assert conn.out_bytes == held, (domid, conn.out_bytes, held)
            assert held <= OUTPUT_BOUND, (domid, held, OUTPUT_BOUND)
            for msg in list(conn.out) + list(sink.queue):
                problems = message_problems(msg)
                assert not problems, problems

    # -- one step ------------------------------------------------------------------------------
    def step(self, src: Source) -> None:
        action = src.byte() % 14
        domid = src.pick(GUESTS)
        sink = self.sink(domid)
        if action <= 2:
            self.mutation(src, domid, during=False)()
        elif action == 3:
            self.hooked.append(self.mutation(src, domid, during=True))
        elif action == 4:
            ring = GuestRing(self.xen.pages[domid])
            with contextlib.suppress(RingBroken):
                ring.read(src.below(RING_SIZE + 1))
            ring.release()
        elif action == 5:
            ring = GuestRing(self.xen.pages[domid])
            ring.request_reconnect()
            ring.release()
        elif action in (6, 7, 8) and sink is not None:
            self.daemon(sink.turn)
        elif action == 9:
            for s in list(self.rings.by_domid.values()):
                self.rings.wake(s)
            self.daemon(self.rings._service)
        elif action == 10:
            self.daemon(self.rings._sweep)
        elif action == 11:
            path = b"/local/domain/%d/%s" % (domid, src.pick([b"x", b"data", b"big"]))
            value = b"v" * (src.u16() % 4000)
            self.daemon(lambda: self.dom0_request(Op.WRITE, path + b"\0" + value))
        elif action == 12:
            which = src.byte() % 4
            if which == 0:
                self.daemon(lambda: self.introduce(domid))
            elif which == 1:
                self.daemon(lambda: self.dom0_request(Op.RELEASE, b"%d\0" % domid))
            elif which == 2:
                self.xen.alive.discard(domid)
                self.daemon(self.rings.check_domains)
                self.xen.alive.add(domid)
            else:
                self.dom0_request(Op.MKDIR, b"/local/domain/%d\0" % domid)
                self.dom0_request(Op.SET_PERMS, b"/local/domain/%d\0n%d\0" % (domid, domid))
        elif action == 13:
            token = b"t%d" % src.byte()
            self.daemon(lambda: self.dom0_request(Op.WATCH, b"/\0" + token + b"\0"))
        self.hooked.clear()


#: the world of the last input (seed selection scores it)
last_world: _World | None = None


def one_input(data: bytes) -> None:
    src = Source(data)
    del _failed.records[:]
    global last_world
    world = last_world = _World()
    try:
        for _ in range(MAX_STEPS):
            if not src.left:
                break
            world.step(src)
            world.check()
    finally:
        for sink in list(world.rings.by_domid.values()):
            sink.ring.release()
