#!/usr/bin/env python3
"""The daemon's ring path in process, without the kick syscalls: CPU ns per request.

    .venv/bin/python benchmarks/ringpath.py                     # READ and WRITE, a table
    .venv/bin/python benchmarks/ringpath.py --no-journal --iterations 50000
    .venv/bin/python benchmarks/ringpath.py --ops read --profile /tmp/ring.pstats

What ``rings.py latency`` measures against a running daemon includes the simulated Xen's
datagram kicks (one ``recvfrom`` and one ``sendto`` per request, paid by C xenstored too)
and the event loop's wake-up; on a loaded machine its CPU figures swing with the other
work. This benchmark takes those away so that what is left is the Python the daemon runs
per ring request, and it is steady enough to compare two commits on a busy machine:

* a real :class:`~pyxenstored.runtime.server.Server` with the simulated Xen and, unless
  ``--no-journal``, its crash journal (in a temporary directory, as the daemon keeps it
  beside its socket), domain 1 introduced and served over its ring page;
* the backend's two syscalls are replaced: ``pending()`` returns the guest's port (as a
  kick would), ``notify()`` does nothing;
* one op: the guest writes a 32-byte READ (or WRITE) request into its page, the manager
  handles the "kick" exactly as the event loop's reader callback does
  (``RingManager._on_event``: scheduling, the turn, the engine, the journal, the reply
  pushed into the page), and the guest takes the reply off the page.

``ns/op`` is the median of ``--repeat`` loops of ``--iterations`` ops (``best``: their
minimum) in this thread's CPU time, garbage collection off while timing. Like
``core.py`` it imports ``pyxenstored`` (from ``src/`` when it is not installed) and
measures no daemon process.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

try:
    import pyxenstored  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from core import time_op  # the same timed loop as the engine benchmark's

from pyxenstored.client.ring import SimGuest
from pyxenstored.core.caller import Caller
from pyxenstored.core.lifecycle import introduce_domain
from pyxenstored.protocol.wire import HEADER, Op
from pyxenstored.runtime.server import Server, ServerConfig

OPS = ("read", "write")
DOMID = 1
VALUE = b"v" * 32


def message(op: Op, payload: bytes) -> bytes:
    return HEADER.pack(int(op), 7, 0, len(payload)) + payload


class RingPath:
    """A server with domain 1 on its ring and the kick syscalls taken out."""

    def __init__(self, server: Server, directory: Path) -> None:
        rings = server.rings
        assert rings is not None
        self.guest = SimGuest(str(directory / "fakexen"), DOMID)
        self.guest.ring.set_evtchn_port(0)
        engine = server.engine
        introduce_domain(engine, DOMID, 7, reset=True)
        # The guest's home, as a toolstack makes it: dom0 writes it and gives it away.
        dom0 = engine.connect(Caller(0, True), "socket")
        engine.feed(dom0, message(Op.WRITE, b"/local/domain/1/data/key\0" + VALUE))
        engine.feed(dom0, message(Op.SET_PERMS, b"/local/domain/1/data/key\0n1\0"))
        replies = dom0.take_output()
        assert all(HEADER.unpack_from(r)[0] != Op.ERROR for r in replies), replies
        engine.disconnect(dom0)
        sink = rings.by_domid[DOMID]
        port = sink.port
        xen = rings.xen
        xen.pending = lambda: [port]  # type: ignore[method-assign]
        xen.notify = lambda port: None  # type: ignore[method-assign]
        self.on_event = rings._on_event
        self.server = server

    def call(self, op: Op, payload: bytes) -> bytes:
        ring = self.guest.ring
        ring.write(message(op, payload))
        self.on_event()
        reply = ring.read()
        kind = HEADER.unpack_from(reply)[0]
        if kind == Op.ERROR:
            raise RuntimeError(f"{op.name}: {reply[16:-1].decode()}")
        return reply

    def op(self, name: str) -> Callable[[], None]:
        key = b"/local/domain/1/data/key\0"
        msg = message(Op.READ, key) if name == "read" else message(Op.WRITE, key + VALUE)
        write = self.guest.ring.write
        read = self.guest.ring.read
        on_event = self.on_event

        def run() -> None:
            write(msg)
            on_event()
            read()

        # Once checked: the op is answered, and not with an error.
        if name == "read":
            assert self.call(Op.READ, key)[16:] == VALUE
        else:
            assert self.call(Op.WRITE, key + VALUE)[16:] == b"OK\0"
        return run


async def measure(args: argparse.Namespace, directory: Path) -> None:
    config = ServerConfig(
        socket_path=str(directory / "socket"),
        sim_xen_dir=str(directory / "fakexen"),
        journal=not args.no_journal,
    )
    server = Server(config)
    started = asyncio.Event()
    task = asyncio.create_task(server.serve(started))
    await started.wait()
    try:
        bench = RingPath(server, directory)
        await asyncio.sleep(0.01)  # the introduction's first turn
        bench.call(Op.WRITE, b"/local/domain/1/data/key\0" + VALUE)
        ops = [op.strip() for op in args.ops.split(",") if op.strip()]
        journal = "off" if args.no_journal else "on"
        print(f"{'op':<6} {'ns/op':>8} {'best':>8}   (journal {journal})")
        for name in ops:
            ns = time_op(bench.op(name), args.iterations, args.iterations // 10, args.repeat)
            print(f"{name:<6} {statistics.median(ns):8.0f} {min(ns):8.0f}")
        if args.profile:
            prof = cProfile.Profile()
            for name in ops:
                run = bench.op(name)
                prof.enable()
                for _ in range(args.iterations):
                    run()
                prof.disable()
            prof.dump_stats(args.profile)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
            print(text.getvalue())
    finally:
        server.stop()
        await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated: read, write")
    parser.add_argument("--iterations", type=int, default=20000, help="ops per timed loop")
    parser.add_argument("--repeat", type=int, default=5, help="timed loops per op")
    parser.add_argument("--no-journal", action="store_true", help="run without the crash journal")
    parser.add_argument("--profile", metavar="FILE", help="also write cProfile stats here")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="ringpath-", dir="/tmp"))
    try:
        asyncio.run(measure(args, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
