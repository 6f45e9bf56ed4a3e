#!/usr/bin/env python3
"""The core without I/O: nanoseconds and allocations per request of the sans-I/O Engine.

    .venv/bin/python benchmarks/core.py                      # every operation, a table
    .venv/bin/python benchmarks/core.py --ops read,write --iterations 50000 --repeat 5
    .venv/bin/python benchmarks/core.py --ops txn-commit --profile /tmp/core.pstats

Unlike the socket benchmarks this one imports ``pyxenstored`` (from ``src/`` when it is
not installed): it drives ``Engine.feed`` with pre-encoded requests, exactly as the
runtime does with the bytes a transport received, and takes the replies and events off
the connections' queues as the runtime would, so that what it times is the engine alone:
framing, dispatch, path handling, permissions, the store, watches and transactions.

Operations (each one "op" of the table):

* ``read`` / ``write``: dom0 (a privileged socket) READs / overwrites a 16-byte value.
* ``read-guest`` / ``write-guest``: domain 1 (unprivileged, introduced) does the same in
  its home: the permission and quota checks run.
* ``create``: dom0 WRITEs a new node (a fresh path every time; the tree grows).
* ``directory``: dom0 lists a directory of ``--children`` children.
* ``watch-fire``: dom0 overwrites a node that ``--watchers`` other connections watch
  (one event to each; their queues are emptied every op).
* ``txn-commit``: TRANSACTION_START, a WRITE inside it, TRANSACTION_END T (three requests
  per op, the commit replays the write).

Columns: ``ns/op`` is the median of ``--repeat`` timed loops of ``--iterations`` ops
each (``best`` their minimum), after ``--warmup`` untimed ops; the loop's own cost (the
iteration, taking output off the queues) is included and is the same for every op. The
time is this thread's CPU time (``time.thread_time_ns``), not wall time, so that being
descheduled on a loaded machine does not count (caches shared with other work still do).
``alloc B/op`` and ``blocks/op`` are what tracemalloc sees allocated and *still held*
after ``--alloc-ops`` ops (a garbage collection first; ``create`` keeps its nodes, the
others should keep nothing); ``peak B/op`` is the median over those ops of the highest
transient allocation during one op (tracemalloc's peak, reset before each). tracemalloc
slows everything down, so it runs in its own pass, never during timing.

``--profile FILE`` runs the selected ops once more (``--iterations`` each) under
cProfile, writes the stats to FILE (read them with ``python -m pstats FILE``) and prints
the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

try:
    import pyxenstored  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pyxenstored.core.caller import Caller
from pyxenstored.core.connection import Connection
from pyxenstored.core.engine import Engine
from pyxenstored.protocol.wire import HEADER, Op

VALUE = b"0123456789abcdef"  # 16 bytes, as in the memory benchmark
OPS = (
    "read",
    "read-guest",
    "write",
    "write-guest",
    "create",
    "directory",
    "watch-fire",
    "txn-commit",
)


def message(op: Op, payload: bytes, tx_id: int = 0) -> bytes:
    """One encoded request."""
    return HEADER.pack(int(op), 7, tx_id, len(payload)) + payload


class Bench:
    """One engine with the nodes and connections every op needs."""

    def __init__(self, children: int, watchers: int) -> None:
        self.engine = engine = Engine()
        self.dom0 = engine.connect(Caller(0, True), "socket")
        self.call(self.dom0, Op.WRITE, b"/bench/core/key\0" + VALUE)
        for i in range(children):
            self.call(self.dom0, Op.WRITE, b"/bench/core/dir/child%d\0" % i + VALUE)
        # Domain 1, introduced as a toolstack does; its ring is a plain connection here.
        self.call(self.dom0, Op.INTRODUCE, b"1\x00123\x005\x00")
        self.call(self.dom0, Op.WRITE, b"/local/domain/1/data/key\0" + VALUE)
        self.call(self.dom0, Op.SET_PERMS, b"/local/domain/1/data/key\0n1\0")
        self.guest = engine.connect(Caller(1, False), "ring")
        self.call(self.dom0, Op.WRITE, b"/bench/core/watched/key\0" + VALUE)
        self.watchers: list[Connection] = []
        for i in range(watchers):
            conn = engine.connect(Caller(0, True), "socket")
            self.call(conn, Op.WATCH, b"/bench/core/watched\0t%d\0" % i)
            self.watchers.append(conn)
        self.created = 0

    def call(self, conn: Connection, op: Op, payload: bytes, tx_id: int = 0) -> bytes:
        """Send one request; return its reply's payload (RuntimeError on an error)."""
        self.engine.feed(conn, message(op, payload, tx_id))
        out = conn.take_output()
        reply = next(m for m in out if HEADER.unpack_from(m)[0] != Op.WATCH_EVENT)
        kind = HEADER.unpack_from(reply)[0]
        if kind == Op.ERROR:
            raise RuntimeError(f"{op.name} {payload[:60]!r}: {reply[16:-1].decode()}")
        return reply[16:]

    def op(self, name: str) -> Callable[[], None]:
        """A function doing one op of ``name`` (its requests are encoded up front)."""
        feed = self.engine.feed
        dom0, guest = self.dom0, self.guest
        if name in ("read", "write", "read-guest", "write-guest", "directory"):
            conn = guest if name.endswith("-guest") else dom0
            key = b"/local/domain/1/data/key" if conn is guest else b"/bench/core/key"
            msg = {
                "read": message(Op.READ, key + b"\0"),
                "write": message(Op.WRITE, key + b"\0" + VALUE),
                "directory": message(Op.DIRECTORY, b"/bench/core/dir\0"),
            }[name.split("-")[0]]

            def simple() -> None:
                feed(conn, msg)
                conn.take_output()

            return simple
        if name == "create":

            def create() -> None:
                self.created += 1
                feed(dom0, message(Op.WRITE, b"/bench/core/new/n%d\0" % self.created + VALUE))
                dom0.take_output()

            return create
        if name == "watch-fire":
            msg = message(Op.WRITE, b"/bench/core/watched/key\0" + VALUE)
            watchers = self.watchers

            def fire() -> None:
                feed(dom0, msg)
                dom0.take_output()
                for w in watchers:
                    w.take_output()

            return fire
        if name == "txn-commit":
            start = message(Op.TRANSACTION_START, b"\0")

            def commit() -> None:
                feed(dom0, start)
                (reply,) = dom0.take_output()
                tx_id = int(reply[16:-1])
                feed(dom0, message(Op.WRITE, b"/bench/core/key\0" + VALUE, tx_id))
                feed(dom0, message(Op.TRANSACTION_END, b"T\0", tx_id))
                dom0.take_output()

            return commit
        raise ValueError(f"unknown op {name!r}")


@dataclass
class Row:
    name: str
    ns: list[float]
    alloc_bytes: float = 0.0
    alloc_blocks: float = 0.0
    peak_bytes: float = 0.0


def time_op(run: Callable[[], None], iterations: int, warmup: int, repeat: int) -> list[float]:
    """CPU ns per op of each of ``repeat`` loops (garbage collection off while timing)."""
    for _ in range(warmup):
        run()
    out = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.thread_time_ns()
            for _ in range(iterations):
                run()
            out.append((time.thread_time_ns() - t0) / iterations)
        finally:
            gc.enable()
    return out


def allocations(run: Callable[[], None], ops: int) -> tuple[float, float, float]:
    """(bytes still held, blocks still held, median transient peak bytes) per op."""
    run()  # memos and caches first
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        peaks = []
        for _ in range(ops):
            current, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            run()
            peaks.append(tracemalloc.get_traced_memory()[1] - current)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # The engine's allocations, not tracemalloc's bookkeeping or this loop's list.
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    diff = after.filter_traces(keep).compare_to(before.filter_traces(keep), "filename")
    size = sum(d.size_diff for d in diff)
    blocks = sum(d.count_diff for d in diff)
    return size / ops, blocks / ops, statistics.median(peaks)


def profile(bench: Bench, names: list[str], iterations: int, path: Path) -> str:
    """Run ``names`` under cProfile; write the stats to ``path``; the top as text."""
    runs = [bench.op(name) for name in names]
    prof = cProfile.Profile()
    prof.enable()
    for run in runs:
        for _ in range(iterations):
            run()
    prof.disable()
    prof.dump_stats(str(path))
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    return text.getvalue()


def table(rows: list[Row]) -> str:
    head = (
        f"{'op':<12} {'ns/op':>9} {'best':>9} {'alloc B/op':>11} {'blocks/op':>10} "
        f"{'peak B/op':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<12} {statistics.median(r.ns):>9.0f} {min(r.ns):>9.0f} "
            f"{r.alloc_bytes:>11.1f} {r.alloc_blocks:>10.2f} {r.peak_bytes:>10.0f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, of {OPS}")
    parser.add_argument("--iterations", type=int, default=20000, help="ops per timed loop")
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5, help="timed loops per op")
    parser.add_argument("--alloc-ops", type=int, default=2000, help="ops traced per op")
    parser.add_argument("--children", type=int, default=32, help="entries DIRECTORY lists")
    parser.add_argument("--watchers", type=int, default=10, help="watches watch-fire fires")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="write cProfile stats")
    args = parser.parse_args(argv)
    args.op_names = [n.strip() for n in args.ops.split(",") if n.strip()]
    unknown = [n for n in args.op_names if n not in OPS]
    if unknown:
        parser.error(f"unknown ops {unknown} (known: {', '.join(OPS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args.children, args.watchers)
    rows = []
    for name in args.op_names:
        run = bench.op(name)
        rows.append(Row(name, time_op(run, args.iterations, args.warmup, args.repeat)))
    for row in rows:
        row.alloc_bytes, row.alloc_blocks, row.peak_bytes = allocations(
            bench.op(row.name), args.alloc_ops
        )
    print(
        f"python {sys.version.split()[0]}, {args.iterations} ops x {args.repeat} loops per op, "
        f"{args.children} children listed, {args.watchers} watchers; "
        f"tree {len(bench.engine.tree)} nodes at the end"
    )
    print(table(rows))
    if args.profile is not None:
        print(profile(bench, args.op_names, args.iterations, args.profile))
        print(f"cProfile stats written to {args.profile} (python -m pstats {args.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
