"""Fuzz target ``engine``: requests from several connections and domains, no sockets.

The input is a program (see :mod:`fuzz.source`): each step sends a request (its type,
transaction id and payload built from path, permission, number and word fragments or
raw bytes), feeds raw bytes, reads or leaves a connection's output, opens or drops a
connection, introduces, releases, shuts down or kills a domain. The engine has live
configuration (``/tool/xenstored``) and small quotas, so that limits are reached.

After every step: the invariants of :mod:`fuzz.invariants` (tree, accounts, watches,
transactions, output), exactly one well-formed reply per request (never EIO), no quota
taken past its limit by an unprivileged request, and no error logged by the engine.
"""

from __future__ import annotations

import logging

from pyxenstored.core.caller import Caller
from pyxenstored.core.connection import Connection
from pyxenstored.core.domains import NoHypervisor
from pyxenstored.core.engine import Engine
from pyxenstored.core.lifecycle import domain_died, domain_shut_down
from pyxenstored.core.quota import Limits
from pyxenstored.liveconfig.registry import Registry
from pyxenstored.liveconfig.tree import ConfigTree
from pyxenstored.protocol.framing import FramingError
from pyxenstored.protocol.wire import PAYLOAD_MAX, Op, encode

from .invariants import (
    Usage,
    check_engine,
    message_problems,
    quota_problems,
    reply_problems,
    tree_mark,
)
from .source import Source

#: how many steps one input may run (a longer input is cut: bounded time per input)
MAX_STEPS = 64

_OPS = [int(op) for op in Op if op not in (Op.INVALID,)]
# Frequent ones again, so that a random choice builds trees and transactions.
_OPS += [
    Op.WRITE,
    Op.WRITE,
    Op.MKDIR,
    Op.RM,
    Op.SET_PERMS,
    Op.WATCH,
    Op.READ,
    Op.DIRECTORY,
    Op.TRANSACTION_START,
    Op.TRANSACTION_END,
    Op.CONTROL,
]

_FRAGMENTS: list[bytes] = [
    b"/",
    b"/a",
    b"/a/b",
    b"/a/b/c",
    b"/a/b/c/d",
    b"/b",
    b"a",
    b"a/b",
    b"data",
    b"data/x",
    b"/local",
    b"/local/domain",
    b"/local/domain/1",
    b"/local/domain/1/data",
    b"/local/domain/2/x",
    b"/local/domain/3",
    b"/local/domain/1/backend/vbd/2/51712",
    b"/local/domain/2/device/vbd/51712",
    b"/tool",
    b"/tool/xenstored",
    b"/tool/xenstored/quota/nodes",
    b"/tool/xenstored/quota/watches",
    b"/tool/xenstored/quota/transactions",
    b"/tool/xenstored/quota/memory",
    b"/tool/xenstored/quota/node-size",
    b"/tool/xenstored/quota/path-max",
    b"/tool/xenstored/quota/outstanding",
    b"/tool/xenstored/quota/transaction-nodes",
    b"/tool/xenstored/quota/node-permissions",
    b"/tool/xenstored/quota-rule",
    b"/tool/xenstored/domain/1/quota/nodes",
    b"/tool/xenstored/conflict/burst-limit",
    b"/tool/xenstored/stats",
    b"/tool/xenstored/log/level",
    b"@releaseDomain",
    b"@introduceDomain",
    b"@releaseDomain/1",
    b"@bad",
    b"//",
    b"/a/",
    b"n0",
    b"r1",
    b"w2",
    b"b3",
    b"n1",
    b"b1",
    b"r2",
    b"n2",
    b"b0",
    b"r-1",
    b"b0x1",
    b"x",
    b"0",
    b"1",
    b"2",
    b"3",
    b"4",
    b"7",
    b"32752",
    b"65535",
    b"-1",
    b"",
    b"T",
    b"F",
    b"check",
    b"quota",
    b"quota-soft",
    b"set",
    b"nodes",
    b"watches",
    b"transactions",
    b"help",
    b"memreport",
    b"print",
    b"log",
    b"4.22",
    b"4.21",
    b"tok",
    b"t",
    b"x" * 100,
    b"y" * 2000,
    b"z" * 4000,
]


class _Backend(NoHypervisor):
    """Domains below 8 exist until killed; INTRODUCE gives a ring-kind connection."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.alive = set(range(8))

    def exists(self, domid: int) -> bool:
        return domid in self.alive

    def introduce(self, domid: int, port: int, features: int) -> Connection | None:
        assert self.engine is not None
        return self.engine.connect(Caller(domid, domid == self.engine.priv_domid), "ring", features)


class _Failed(logging.Handler):
    """Collects errors the engine logs (an internal error, a failed CONTROL check)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_failed = _Failed()
logging.getLogger("pyxenstored").addHandler(_failed)


def new_engine() -> tuple[Engine, _Backend]:
    """The fuzzed engine: live configuration, small quotas (reached in a few steps)."""
    backend = _Backend()
    limits = Limits(
        nodes=12,
        watches=4,
        transactions=3,
        outstanding=8,
        memory=6000,
        soft_memory=4000,
        transaction_nodes=10,
        node_permissions=4,
        path_max=64,
        node_size=600,
    )
    engine = Engine(limits=limits, backend=backend, event_queue_max=4096)
    backend.engine = engine
    ConfigTree(engine, Registry())
    return engine, backend


def _payload(src: Source) -> bytes:
    if src.byte() % 8 == 0:
        return src.raw(64)
    parts = []
    for _ in range(src.below(5)):
        parts.append(src.pick(_FRAGMENTS) if src.byte() % 4 else src.raw(12))
    joined = b"\0".join(parts)
    return joined + b"\0" if src.byte() % 8 else joined


class _World:
    def __init__(self) -> None:
        self.engine, self.backend = new_engine()
        e = self.engine
        self.conns: list[Connection] = [
            e.connect(Caller(0, True), "socket"),
            e.connect(Caller(0, True), "socket"),
        ]
        self.req_id = 0

    def live(self) -> list[Connection]:
        """The open connections (a new dom0 socket when every one was dropped)."""
        open_ = [c for c in self.conns if not c.closed]
        if not open_:
            open_ = [self.engine.connect(Caller(0, True), "socket")]
            self.conns += open_
        return open_

    def request(self, src: Source) -> None:
        conn = src.pick(self.live())
        op = src.pick(_OPS) if src.byte() % 16 else src.u16()
        choice = src.byte() % 4
        if choice == 0 and conn.transactions:
            tx = src.pick(sorted(conn.transactions))
        elif choice == 1:
            tx = src.u32()
        else:
            tx = 0
        payload = _payload(src)[:PAYLOAD_MAX]
        # Bytes fed raw before may have left a partial request: this one completes it,
        # so the replies cannot be matched to it (they are still checked for form).
        aligned = not conn.reader.pending
        self.req_id = (self.req_id + 1) & 0xFFFFFFFF
        before = Usage.of(self.engine, conn)
        mark = len(conn.out)
        try:
            self.engine.feed(conn, encode(op, self.req_id, tx, payload))
        except FramingError:  # only after raw bytes: what a transport does, drop the peer
            assert not aligned
            self.engine.disconnect(conn)
        problems = []
        if not conn.closed:
            new = conn.out[mark:]
            if aligned:
                problems += reply_problems(new, self.req_id, tx, op)
            else:
                problems += [p for m in new for p in message_problems(m)]
            problems += quota_problems(self.engine, conn, before)
        assert not problems, (
            f"{Op(op).name if op in Op._value2member_map_ else op} tx={tx} {payload!r}: {problems}"
        )

    def step(self, src: Source) -> None:
        e = self.engine
        action = src.byte() % 16
        if action < 9:
            self.request(src)
        elif action == 9:
            src.pick(self.live()).take_output()
        elif action == 10:
            conn = src.pick(self.live())
            try:
                e.feed(conn, src.raw(40))
            except FramingError:  # what a transport does: drop the peer
                e.disconnect(conn)
        elif action == 11:
            e.disconnect(src.pick(self.conns))
        elif action == 12:
            domid = src.below(8)
            self.conns.append(e.connect(Caller(domid, domid == 0 and src.byte() & 1 == 1), "ring"))
        elif action == 13:
            dom = e.domains.get(src.below(8))
            if dom is not None and dom.conn is not None and dom.conn not in self.conns:
                self.conns.append(dom.conn)
        elif action == 14:
            domid = src.below(8)
            if domid:
                self.backend.alive.discard(domid)
                domain_died(e, domid)
        else:
            domid = src.below(8)
            domain_shut_down(e, domid)
            if src.byte() & 1:
                self.backend.alive.add(domid)  # a new domain with that id
        e.woken.clear()


#: the world of the last input (seed selection scores it)
last_world: _World | None = None


def one_input(data: bytes) -> None:
    src = Source(data)
    global last_world
    world = last_world = _World()
    del _failed.records[:]
    checked = None
    for _ in range(MAX_STEPS):
        if not src.left:
            break
        world.step(src)
        mark = tree_mark(world.engine)
        check_engine(world.engine, tree_unchanged=mark == checked)
        checked = mark
        assert not _failed.records, [r.getMessage() for r in _failed.records]
