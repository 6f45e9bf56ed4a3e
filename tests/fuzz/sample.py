"""A populated engine and its state stream and crash journal: seeds for the ``stream``
and ``journal`` targets (and a sanity test that they replay)."""

from __future__ import annotations

from pyxenstored.core.caller import Caller
from pyxenstored.core.changes import Changes
from pyxenstored.core.connection import Connection
from pyxenstored.core.domains import NoHypervisor
from pyxenstored.core.engine import Engine
from pyxenstored.liveconfig.registry import Registry
from pyxenstored.liveconfig.tree import ConfigTree
from pyxenstored.protocol.wire import Op, encode
from pyxenstored.state import snapshot
from pyxenstored.state.journal import RingRecord, changes_frame, ring_frame, snapshot_frame


class Backend(NoHypervisor):
    """Every domain exists; INTRODUCE gives the domain a ring-kind connection."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def introduce(self, domid: int, port: int, features: int) -> Connection | None:
        assert self.engine is not None
        return self.engine.connect(Caller(domid, domid == self.engine.priv_domid), "ring", features)


def new_engine() -> Engine:
    """A fresh engine as a daemon builds it (the restore targets take this)."""
    backend = Backend()
    engine = Engine(backend=backend)
    backend.engine = engine
    return engine


def handover(conn: Connection) -> snapshot.Handover:
    """Every socket handed over, with a made-up descriptor."""
    return snapshot.Handover(fd=1000 + conn.id)


#: (who, op, payload): who is "s" (dom0's socket) or a domid (that domain's ring)
SCRIPT: list[tuple[str | int, int, bytes]] = [
    ("s", Op.INTRODUCE, b"1\x000\x0011\x00"),
    ("s", Op.INTRODUCE, b"2\x000\x0012\x00"),
    ("s", Op.MKDIR, b"/local/domain/1\x00"),
    ("s", Op.SET_PERMS, b"/local/domain/1\x00n1\x00r2\x00"),
    ("s", Op.MKDIR, b"/local/domain/2\x00"),
    ("s", Op.SET_PERMS, b"/local/domain/2\x00n2\x00"),
    ("s", Op.WRITE, b"/local/domain/2/backend/vbd/1/51712\x00state"),
    (1, Op.WRITE, b"data/x\x00hello"),
    (1, Op.WATCH, b"data\x00tok\x00"),
    (2, Op.WATCH, b"@releaseDomain\x00rel\x00"),
    (1, Op.TRANSACTION_START, b"\x00"),
    (1, Op.WRITE, b"data/y\x00in a transaction"),
    ("s", Op.WATCH, b"/\x00all\x00"),
    ("s", Op.SET_QUOTA, b"2\x00nodes\x0050\x00"),
    ("s", Op.WRITE, b"/tool/xenstored/quota/watches\x0064"),
    ("s", Op.SET_TARGET, b"2\x001\x00"),
    (2, Op.RM, b"/local/domain/1/data/x\x00"),
    ("s", Op.RELEASE, b"2\x00"),
    ("s", Op.INTRODUCE, b"2\x000\x0012\x00"),
    (2, Op.WRITE, b"w\x00again"),
]


def run_script(engine: Engine, on_step: object = None) -> Connection:
    """Run :data:`SCRIPT` (calling ``on_step()`` after each request); return dom0's socket."""
    sock = engine.connect(Caller(0, True), "socket")
    for who, op, payload in SCRIPT:
        if who == "s":
            conn = sock
        else:
            dom = engine.domains[int(who)]
            assert dom.conn is not None
            conn = dom.conn
        tx = next(iter(conn.transactions), 0) if op == Op.WRITE and who == 1 else 0
        engine.feed(conn, encode(op, 1, tx, payload))
        for c in engine.connections.values():
            c.take_output()
        if callable(on_step):
            on_step()
    return sock


def stream_sample() -> bytes:
    """A state stream of a populated engine (version 2, pyxenstored's own record)."""
    engine = new_engine()
    ConfigTree(engine, Registry())
    run_script(engine)
    return snapshot.save(engine, handover=handover)


def journal_sample() -> bytes:
    """A crash journal as the runtime writes it: SNAP, then one frame per request
    (RING frames for guests' requests)."""
    engine = new_engine()
    ConfigTree(engine, Registry())
    changes = Changes()
    engine.report_changes(changes)
    out = bytearray(snapshot_frame(engine))
    n = 0

    def step() -> None:
        nonlocal n
        n += 1
        if changes:
            inner = changes_frame(engine, changes)
            changes.clear()
            if n % 2:
                out.extend(inner)
            else:
                out.extend(ring_frame([RingRecord(1, 16 * n, 8 * n, b"u" * n, b"p")], inner))

    run_script(engine, step)
    out += ring_frame([RingRecord(2, 5, 6)])
    return bytes(out)
