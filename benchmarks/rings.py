#!/usr/bin/env python3
"""Ring benchmarks: simulated guest domains talking to a daemon through shared-memory rings.

The daemon must serve the simulated Xen of spec/simulated-xen.md in ``--fakexen-dir``
(default: ``fakexen`` beside ``--socket``): pyxenstored with ``--sim-xen DIR``, or the
reference C xenstored under ``reference/rings.sh``.  dom0 (a socket connection) introduces
every guest: MKDIR ``/local/domain/N``, SET_PERMS ``n<N>``, INTRODUCE ``N 0 <port>``.
The guest side is pyxenstored's own :class:`pyxenstored.client.ring.SimGuest` (the page
file and the notify socket), driven here by a small synchronous loop, so that the client's
cost per request stays low and is the same whichever daemon is measured.  Three
workloads::

    python benchmarks/rings.py --socket PATH latency    [--iterations N]
    python benchmarks/rings.py --socket PATH throughput [--clients 1,4,16] [--guests 1]
    python benchmarks/rings.py --socket PATH scaling    [--idle 0,100,1000]

* ``latency``: one guest; sequential 32-byte READ, then WRITE, round trips through its
  ring; median and p99 in microseconds.
* ``throughput``: K guest processes, each with ``--guests`` guests in a closed loop
  (``--pipeline`` requests in flight per ring); total requests/s.
* ``scaling``: one busy guest's sequential READ (and WRITE) latency with N idle
  introduced domains (pages and notify sockets exist, nothing is ever sent; one helper
  process holds them all), with the ratio to the first N.

Domain ids: the busy guest is ``--domid`` (1); the others follow it.  The simulated Xen
says that only domids below ``$FAKEXEN_NDOMS`` (default 100) exist, so start the daemon
with ``FAKEXEN_NDOMS`` above the highest domid used (scaling with 1000 idle domains needs
more than 1001).

Guest behaviour is Linux's xenbus driver's: a kick after every request written, and a
kick after taking responses only when the response ring was full (the daemon may be
waiting for room); ``--kick-on-consume`` kicks after every response read instead, as
the generic contract allows.  A guest waits for the daemon's notification with a
timeout (``--poll``), so a lost notification costs latency, never a hang; such timeouts
are counted (``guest_poll_timeouts``), and so are kicks refused because the daemon's
datagram queue was full (``guest_kicks_refused``; they are retried).

``--daemon-pid PID`` adds the daemon's CPU time per request; ``--json FILE`` writes the
report in xsload's format (``compare.py`` runs these workloads as ``ring-latency``,
``ring-throughput`` and ``ring-scaling``).  See benchmarks/README.md.

This script imports ``pyxenstored.client.ring`` (from ``src/`` when pyxenstored is not
installed) only when a workload runs; the rest is xsload's standard-library machinery.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import xsload
from xsload import (
    HEADER,
    XS_ERROR,
    XS_READ,
    XS_WATCH_EVENT,
    XS_WRITE,
    DaemonCpu,
    JsonDict,
    Message,
    MessageReader,
    XsError,
    fmt,
    metric,
    print_table,
)

# Message types used for introducing domains (xs_wire.h).
XS_INTRODUCE = 8
XS_RELEASE = 9
XS_MKDIR = 12
XS_RM = 13
XS_SET_PERMS = 14

RING_SIZE = 1024
KICK = b"\0\0\0\0"
#: the event-channel port named in INTRODUCE (the simulated Xen ignores it)
GUEST_PORT = 1
#: give up on one request after this long without a reply
REQUEST_TIMEOUT = 30.0

REPO = Path(__file__).resolve().parent.parent


def import_sim_guest() -> Any:
    """pyxenstored's SimGuest class; from src/ when pyxenstored is not installed."""
    try:
        from pyxenstored.client.ring import SimGuest
    except ImportError:
        src = str(REPO / "src")
        if src not in sys.path:
            sys.path.insert(0, src)
        from pyxenstored.client.ring import SimGuest
    return SimGuest


# --------------------------------------------------------------------------
# dom0: introducing guests over the socket
# --------------------------------------------------------------------------


def domain_home(domid: int) -> str:
    return f"/local/domain/{domid}"


def introduce(dom0: xsload.Connection, domid: int, port: int = GUEST_PORT) -> None:
    """What a toolstack does for a new guest: its home directory, owned by it, then INTRODUCE.

    Raises:
        RuntimeError: the daemon refused, with a hint about FAKEXEN_NDOMS.
    """
    home = domain_home(domid)
    try:
        dom0.request(XS_MKDIR, home.encode() + b"\0")
        dom0.request(XS_SET_PERMS, home.encode() + b"\0" + f"n{domid}".encode() + b"\0")
        dom0.request(XS_INTRODUCE, f"{domid}\0{0}\0{port}\0".encode())
    except XsError as err:
        raise RuntimeError(
            f"introducing domain {domid} failed: {err}. Does the daemon serve the simulated "
            f"Xen in --fakexen-dir, with FAKEXEN_NDOMS > {domid} in its environment?"
        ) from None


def release(dom0: xsload.Connection, domid: int) -> None:
    """RELEASE the domain (its connection goes) and remove its home directory."""
    with contextlib.suppress(XsError):
        dom0.request(XS_RELEASE, f"{domid}\0".encode())
    with contextlib.suppress(XsError):
        dom0.request(XS_RM, domain_home(domid).encode() + b"\0")


# --------------------------------------------------------------------------
# The guest side: a synchronous client over one simulated ring
# --------------------------------------------------------------------------


@dataclass
class GuestStats:
    """Guest-side counters, summed over guests."""

    kicks: int = 0
    kicks_refused: int = 0
    poll_timeouts: int = 0

    def add(self, other: GuestStats) -> None:
        self.kicks += other.kicks
        self.kicks_refused += other.kicks_refused
        self.poll_timeouts += other.poll_timeouts


class RingGuest:
    """One simulated guest: its page and notify socket (SimGuest), a blocking request loop.

    The notify socket is made blocking with a kernel receive timeout (``SO_RCVTIMEO``), so
    waiting for the daemon is one ``recv``; kicks are sent with ``MSG_DONTWAIT`` and
    retried while the daemon's queue is full.  Must be created before INTRODUCE (the
    page is made fresh) and used only after it.
    """

    def __init__(
        self,
        fakexen_dir: str,
        domid: int,
        *,
        poll: float = 0.5,
        kick_on_consume: bool = False,
        lazy_kicks: bool = False,
        sim_guest: Any = None,
    ) -> None:
        cls = sim_guest or import_sim_guest()
        self.domid = domid
        self.guest = cls(fakexen_dir, domid)
        self.ring = self.guest.ring
        self.sock: socket.socket = self.guest.sock
        self.sock.setblocking(True)
        seconds = int(poll)
        self.sock.setsockopt(
            socket.SOL_SOCKET,
            socket.SO_RCVTIMEO,
            struct.pack("ll", seconds, int((poll - seconds) * 1e6)),
        )
        self.poll = poll
        self.kick_addr: str = self.guest.kick_addr
        self.kick_on_consume = kick_on_consume
        self.lazy_kicks = lazy_kicks
        #: a kick was refused and not yet retried successfully (lazy_kicks only)
        self.kick_owed = False
        self.reader = MessageReader()
        self.pending: list[Message] = []
        self.stats = GuestStats()
        self._next_id = 1

    def close(self) -> None:
        self.guest.close()

    def next_id(self) -> int:
        req_id = self._next_id
        self._next_id = req_id + 1 if req_id < 0xFFFFFFFF else 1
        return req_id

    # -- event channel ---------------------------------------------------------------------
    def try_kick(self) -> bool:
        """Notify the daemon once; False (and ``kick_owed``) if its queue was full."""
        try:
            self.sock.sendto(KICK, socket.MSG_DONTWAIT, self.kick_addr)
        except BlockingIOError:
            self.stats.kicks_refused += 1
            self.kick_owed = True
            return False
        except OSError as err:
            raise ConnectionError(f"cannot kick the daemon: {err}") from None
        self.stats.kicks += 1
        self.kick_owed = False
        return True

    def kick(self) -> None:
        """Notify the daemon.  A refused kick is retried here every 50 µs, or, with
        ``lazy_kicks``, left owed for the caller's loop to retry (other rings go on)."""
        if self.try_kick() or self.lazy_kicks:
            return
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while True:
            time.sleep(50e-6)
            if self.try_kick():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the daemon's event channel stayed full")

    def wait(self) -> bool:
        """Block until a notification arrives or ``poll`` passes; False on a timeout."""
        try:
            self.sock.recv(64)
        except BlockingIOError:
            self.stats.poll_timeouts += 1
            return False
        return True

    def drain(self) -> None:
        """Consume queued notifications without blocking."""
        recv = self.sock.recv
        while True:
            try:
                recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return

    # -- ring ------------------------------------------------------------------------------
    def _check(self) -> None:
        error = self.ring.error
        if error:
            raise ConnectionError(f"the daemon marked domain {self.domid}'s ring broken ({error})")

    def send(self, data: bytes) -> None:
        """Write whole messages into the request ring, waiting for room; kick per move."""
        ring = self.ring
        view = memoryview(data)
        idle_since = 0.0
        while view:
            n = ring.write(view)
            if n:
                view = view[n:]
                self.kick()
                idle_since = 0.0
                continue
            self._check()
            if self.kick_owed:
                self.kick()
            if not self.wait():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > REQUEST_TIMEOUT:
                    raise TimeoutError(f"domain {self.domid}: the daemon stopped consuming")

    def pump(self) -> list[Message]:
        """Take whatever responses are in the ring; return the complete messages."""
        data = self.ring.read()
        if not data:
            return []
        if self.kick_on_consume or len(data) == RING_SIZE:
            self.kick()  # the ring was full: the daemon may be waiting for room
        return self.reader.feed(data)

    def receive(self) -> Message:
        """The next message from the daemon (reply or watch event), waiting for it."""
        pending = self.pending
        idle_since = 0.0
        while not pending:
            messages = self.pump()
            if messages:
                pending.extend(messages)
                break
            self._check()
            if self.kick_owed:
                self.kick()
            if not self.wait():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > REQUEST_TIMEOUT:
                    raise TimeoutError(f"domain {self.domid}: no reply from the daemon")
        return pending.pop(0)

    def request_raw(self, msg_type: int, payload: bytes) -> Message:
        req_id = self.next_id()
        self.send(HEADER.pack(msg_type, req_id, 0, len(payload)) + payload)
        while True:
            msg = self.receive()
            if msg.type != XS_WATCH_EVENT and msg.req_id == req_id:
                return msg

    def request(self, msg_type: int, payload: bytes) -> bytes:
        msg = self.request_raw(msg_type, payload)
        if msg.type == XS_ERROR:
            raise XsError(msg.payload.rstrip(b"\0").decode(errors="replace"), msg_type)
        return msg.payload


def timed_ring_requests(
    guest: RingGuest,
    msg_type: int,
    body: bytes,
    count: int,
    budget: float | None = None,
    min_count: int = 0,
) -> tuple[list[int], int]:
    """Send one request ``count`` times, one at a time; return (round trips in ns, errors).

    The clock runs from just before the request is written into the ring to the moment
    its reply has been decoded.  With ``budget`` (seconds), stops early once the budget
    is spent and ``min_count`` samples were taken.
    """
    samples: list[int] = []
    errors = 0
    clock = time.perf_counter_ns
    pack = HEADER.pack
    length = len(body)
    send = guest.send
    receive = guest.receive
    stop_at = clock() + int(budget * 1e9) if budget is not None else None
    for i in range(count):
        req_id = guest.next_id()
        frame = pack(msg_type, req_id, 0, length) + body
        t0 = clock()
        send(frame)
        while True:
            msg = receive()
            if msg.type != XS_WATCH_EVENT and msg.req_id == req_id:
                break
        t1 = clock()
        samples.append(t1 - t0)
        if msg.type == XS_ERROR:
            errors += 1
        if stop_at is not None and i + 1 >= min_count and t1 > stop_at:
            break
    return samples, errors


def guest_metrics(stats: GuestStats) -> JsonDict:
    return {
        "guest_kicks_refused": metric(stats.kicks_refused, "kicks", "lower"),
        "guest_poll_timeouts": metric(stats.poll_timeouts, "waits", "lower"),
    }


def measure_ops(
    guest: RingGuest,
    ops: Sequence[str],
    key: str,
    value: bytes,
    cpu: DaemonCpu,
    iterations: int,
    warmup: int,
    budget: float | None = None,
    min_count: int = 0,
) -> JsonDict:
    """Sequential READ and/or WRITE latency of ``key`` (relative to the guest's home)."""
    bodies = {
        "read": (XS_READ, xsload.read_payload(key)),
        "write": (XS_WRITE, xsload.write_payload(key, value)),
    }
    results: JsonDict = {}
    for name in ops:
        msg_type, body = bodies[name]
        timed_ring_requests(guest, msg_type, body, warmup)
        before = cpu.seconds()
        samples, errors = timed_ring_requests(guest, msg_type, body, iterations, budget, min_count)
        after = cpu.seconds()
        summary = xsload.summarize_us(samples)
        summary["errors"] = errors
        summary["daemon_cpu_us_per_req"] = xsload.cpu_per_request_us(before, after, len(samples))
        results[name] = summary
    return results


def prepare_key(guest: RingGuest, key: str, value: bytes) -> None:
    guest.request(XS_WRITE, xsload.write_payload(key, value))
    if guest.request(XS_READ, xsload.read_payload(key)) != value:
        raise RuntimeError(f"READ of {key} by domain {guest.domid} did not return the value")


# --------------------------------------------------------------------------
# Workload: latency
# --------------------------------------------------------------------------


def run_latency(args: argparse.Namespace, cpu: DaemonCpu) -> JsonDict:
    value = xsload.make_value(args.value_size)
    key = "bench/latency"  # relative: /local/domain/<domid>/bench/latency
    sim_guest = import_sim_guest()
    with xsload.Connection(args.socket) as dom0:
        guest = RingGuest(
            args.fakexen_dir,
            args.domid,
            poll=args.poll,
            kick_on_consume=args.kick_on_consume,
            sim_guest=sim_guest,
        )
        try:
            introduce(dom0, args.domid)
            prepare_key(guest, key, value)
            guest.stats = GuestStats()
            results = measure_ops(
                guest, ("read", "write"), key, value, cpu, args.iterations, args.warmup
            )
            stats = guest.stats
        finally:
            guest.close()
        release(dom0, args.domid)
    metrics: JsonDict = {}
    for name, summary in results.items():
        metrics[f"{name}.median_us"] = metric(summary["median_us"], "us", "lower")
        metrics[f"{name}.p99_us"] = metric(summary["p99_us"], "us", "lower")
        if summary["daemon_cpu_us_per_req"] is not None:
            metrics[f"{name}.cpu_us_per_req"] = metric(
                summary["daemon_cpu_us_per_req"], "us", "lower"
            )
    metrics.update(guest_metrics(stats))
    return {
        "params": {
            "iterations": args.iterations,
            "warmup": args.warmup,
            "value_size": args.value_size,
            "domid": args.domid,
            "poll_s": args.poll,
            "kick_on_consume": args.kick_on_consume,
        },
        "results": results,
        "guest": vars(stats),
        "metrics": metrics,
    }


def print_latency(report: JsonDict) -> None:
    xsload.print_latency(report)
    g = report["guest"]
    print(f"guest: {g['kicks_refused']} kicks refused, {g['poll_timeouts']} poll timeouts")


# --------------------------------------------------------------------------
# Workload: throughput
# --------------------------------------------------------------------------


@dataclass
class WorkerResult:
    index: int
    completed: int = 0
    errors: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    stats: GuestStats = field(default_factory=GuestStats)
    failure: str | None = None


@dataclass(frozen=True)
class WorkerParams:
    fakexen_dir: str
    domids: tuple[int, ...]
    seconds: float
    depth: int
    read_fraction: float
    value_size: int
    poll: float
    kick_on_consume: bool


def throughput_worker(
    index: int,
    p: WorkerParams,
    pages: Barrier,
    introduced: Barrier,
    start: Barrier,
    end: Barrier,
    results: Queue[WorkerResult],
) -> None:
    """One guest process: its guests in a closed loop, ``depth`` requests in flight each."""
    result = WorkerResult(index)
    guests: list[RingGuest] = []
    try:
        sim_guest = import_sim_guest()
        for domid in p.domids:
            guests.append(
                RingGuest(
                    p.fakexen_dir,
                    domid,
                    poll=p.poll,
                    kick_on_consume=p.kick_on_consume,
                    lazy_kicks=True,
                    sim_guest=sim_guest,
                )
            )
        pages.wait()
        introduced.wait()
        value = xsload.make_value(p.value_size)
        key = "bench/throughput"
        for g in guests:
            prepare_key(g, key, value)
            g.stats = GuestStats()
        read_body = xsload.read_payload(key)
        write_body = xsload.write_payload(key, value)
        read_len, write_len = len(read_body), len(write_body)
        pack = HEADER.pack
        ops = xsload.op_sequence(p.read_fraction)

        def next_request(g: RingGuest) -> bytes:
            req_id = g.next_id()
            if next(ops):
                return pack(XS_READ, req_id, 0, read_len) + read_body
            return pack(XS_WRITE, req_id, 0, write_len) + write_body

        poller = select.poll()
        by_fd = {g.sock.fileno(): g for g in guests}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        poll_ms = int(p.poll * 1000)
        outstanding = dict.fromkeys(guests, p.depth)
        single = guests[0] if len(guests) == 1 else None

        start.wait()
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        deadline = t0 + p.seconds
        for g in guests:
            g.send(b"".join(next_request(g) for _ in range(p.depth)))
        total = p.depth * len(guests)
        last_progress = time.monotonic()
        while total:
            progressed = False
            sending = time.perf_counter() < deadline
            for g in guests:
                if not outstanding[g]:
                    continue
                messages = g.pump()
                if not messages:
                    continue
                out: list[bytes] = []
                for msg in messages:
                    if msg.type == XS_WATCH_EVENT:
                        continue
                    outstanding[g] -= 1
                    total -= 1
                    result.completed += 1
                    if msg.type == XS_ERROR:
                        result.errors += 1
                    if sending:
                        out.append(next_request(g))
                        outstanding[g] += 1
                        total += 1
                if out:
                    g.send(b"".join(out))
                progressed = True
            owed = [g for g in guests if g.kick_owed and not g.try_kick()]
            if progressed:
                last_progress = time.monotonic()
                continue
            if owed:
                # The daemon's queue is full: retry soon, serving replies meanwhile.
                for fd, _ in poller.poll(1):
                    by_fd[fd].drain()
            elif single is not None:
                single.wait()
            else:
                events = poller.poll(poll_ms)
                for fd, _ in events:
                    by_fd[fd].drain()
                if not events:
                    guests[0].stats.poll_timeouts += 1
            for g in guests:
                g._check()
            if time.monotonic() - last_progress > REQUEST_TIMEOUT:
                raise TimeoutError(f"no reply for {REQUEST_TIMEOUT:.0f} s")
        result.elapsed = time.perf_counter() - t0
        result.cpu = time.process_time() - cpu0
        for g in guests:
            result.stats.add(g.stats)
        end.wait()
    except Exception as exc:  # reported to the parent, which fails the run
        result.failure = f"{type(exc).__name__}: {exc}"
        for barrier in (pages, introduced, start, end):
            barrier.abort()
    finally:
        for g in guests:
            g.close()
    results.put(result)


def run_throughput_once(
    args: argparse.Namespace, cpu: DaemonCpu, dom0: xsload.Connection, clients: int, first: int
) -> JsonDict:
    ctx = multiprocessing.get_context("fork")
    barriers = [ctx.Barrier(clients + 1) for _ in range(4)]
    pages, introduced, start, end = barriers
    queue: Queue[WorkerResult] = ctx.Queue()
    per = args.guests
    domids = [tuple(range(first + i * per, first + (i + 1) * per)) for i in range(clients)]
    procs = [
        ctx.Process(
            target=throughput_worker,
            args=(
                i,
                WorkerParams(
                    fakexen_dir=args.fakexen_dir,
                    domids=domids[i],
                    seconds=args.seconds,
                    depth=args.pipeline,
                    read_fraction=args.read_fraction,
                    value_size=args.value_size,
                    poll=args.poll,
                    kick_on_consume=args.kick_on_consume,
                ),
                *barriers,
                queue,
            ),
            daemon=True,
        )
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    failure: str | None = None
    before = after = None
    wall = 0.0
    all_domids = [d for ds in domids for d in ds]
    introduced_ok: list[int] = []
    try:
        pages.wait(timeout=xsload.CONNECT_TIMEOUT)
        try:
            for domid in all_domids:
                introduce(dom0, domid)
                introduced_ok.append(domid)
        except RuntimeError as err:
            introduced.abort()
            failure = str(err)
            raise threading.BrokenBarrierError from None
        introduced.wait(timeout=xsload.CONNECT_TIMEOUT)
        start.wait(timeout=xsload.CONNECT_TIMEOUT + 30)
        before = cpu.seconds()
        t0 = time.perf_counter()
        end.wait(timeout=args.seconds + 120)
        wall = time.perf_counter() - t0
        after = cpu.seconds()
    except threading.BrokenBarrierError:
        failure = failure or "a guest process failed or timed out"
    workers: list[WorkerResult] = []
    for _ in procs:
        try:
            workers.append(queue.get(timeout=30))
        except Exception:
            break
    for proc in procs:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    for domid in introduced_ok:
        release(dom0, domid)
    failures = [w.failure for w in workers if w.failure]
    if failure or failures or len(workers) != clients:
        # The parent's own reason first: the workers then only saw a broken barrier.
        reasons = [r for r in (failure, *failures) if r]
        raise RuntimeError(
            f"throughput with {clients} guest processes failed: "
            f"{'; '.join(reasons) or 'missing results'}"
        )
    completed = sum(w.completed for w in workers)
    stats = GuestStats()
    for w in workers:
        stats.add(w.stats)
    load_cores = len(os.sched_getaffinity(0))
    return {
        "clients": clients,
        "guests": clients * per,
        "domids": [all_domids[0], all_domids[-1]],
        "requests": completed,
        "errors": sum(w.errors for w in workers),
        "wall_s": wall,
        "req_per_s": completed / wall if wall > 0 else float("nan"),
        "daemon_cpu_us_per_req": xsload.cpu_per_request_us(before, after, completed),
        "daemon_cpu_busy": (
            (after - before) / wall if before is not None and after is not None and wall else None
        ),
        "client_cpu_busy": sum(w.cpu for w in workers) / wall / load_cores if wall > 0 else None,
        "guest": vars(stats),
    }


def run_throughput(args: argparse.Namespace, cpu: DaemonCpu) -> JsonDict:
    if not 0.0 <= args.read_fraction <= 1.0:
        raise ValueError("--read-fraction must be between 0 and 1")
    import_sim_guest()  # fail early, before any process starts
    results = []
    first = args.domid
    with xsload.Connection(args.socket) as dom0:
        for k in args.clients:
            results.append(run_throughput_once(args, cpu, dom0, k, first))
            first += k * args.guests  # fresh domids for every K (the previous are released)
    metrics: JsonDict = {}
    for r in results:
        k = r["clients"]
        metrics[f"K={k}.req_per_s"] = metric(r["req_per_s"], "req/s", "higher")
        if r["daemon_cpu_us_per_req"] is not None:
            metrics[f"K={k}.cpu_us_per_req"] = metric(r["daemon_cpu_us_per_req"], "us", "lower")
        # daemon busy about 100 %: the daemon is the bottleneck; client: the load is.
        for name, share, better in (
            ("daemon", r["daemon_cpu_busy"], "higher"),
            ("client", r["client_cpu_busy"], "lower"),
        ):
            if share is not None:
                metrics[f"K={k}.{name}_busy_pct"] = metric(100 * share, "%", better)
        metrics[f"K={k}.guest_kicks_refused"] = metric(
            r["guest"]["kicks_refused"], "kicks", "lower"
        )
    return {
        "params": {
            "clients": args.clients,
            "guests_per_client": args.guests,
            "seconds": args.seconds,
            "pipeline": args.pipeline,
            "read_fraction": args.read_fraction,
            "value_size": args.value_size,
            "load_cores": len(os.sched_getaffinity(0)),
            "poll_s": args.poll,
            "kick_on_consume": args.kick_on_consume,
        },
        "results": results,
        "metrics": metrics,
    }


def print_throughput(report: JsonDict) -> None:
    rows = []
    for r in report["results"]:
        rows.append(
            [
                str(r["clients"]),
                str(r["guests"]),
                fmt(r["req_per_s"], 0),
                str(r["requests"]),
                fmt(r["daemon_cpu_us_per_req"], 2),
                fmt(None if r["daemon_cpu_busy"] is None else 100 * r["daemon_cpu_busy"], 0),
                fmt(None if r["client_cpu_busy"] is None else 100 * r["client_cpu_busy"], 0),
                str(r["guest"]["kicks_refused"]),
                str(r["guest"]["poll_timeouts"]),
                str(r["errors"]),
            ]
        )
    p = report["params"]
    print(
        f"{p['guests_per_client']} guest(s) per process, pipeline depth {p['pipeline']} per "
        f"ring, READ share {p['read_fraction']:.2f}, {p['seconds']} s per K, load on "
        f"{p['load_cores']} core(s)"
    )
    print_table(
        [
            "K",
            "guests",
            "req/s",
            "requests",
            "daemon CPU µs/req",
            "daemon busy %",
            "client busy %",
            "kicks refused",
            "poll timeouts",
            "errors",
        ],
        rows,
    )


# --------------------------------------------------------------------------
# Workload: scaling with idle introduced domains
# --------------------------------------------------------------------------


def idle_helper(
    socket_path: str, fakexen_dir: str, first: int, pipe: Pipe, release_at_end: bool
) -> None:
    """Hold idle guests: on ``n`` from the pipe, create and introduce guests until there
    are ``n``; answer ("ok", n, seconds) or ("error", text).  ``None`` ends it."""
    guests: list[Any] = []
    dom0: xsload.Connection | None = None
    try:
        xsload.raise_nofile_limit()
        sim_guest = import_sim_guest()
        dom0 = xsload.Connection(socket_path)
        while True:
            target = pipe.recv()
            if target is None:
                break
            t0 = time.perf_counter()
            try:
                while len(guests) < target:
                    domid = first + len(guests)
                    guests.append(sim_guest(fakexen_dir, domid))
                    introduce(dom0, domid)
            except Exception as exc:
                pipe.send(("error", f"{type(exc).__name__}: {exc}", 0.0))
                continue
            pipe.send(("ok", len(guests), time.perf_counter() - t0))
        if release_at_end:
            for i in range(len(guests)):
                release(dom0, first + i)
    except (EOFError, OSError):
        pass  # the parent went away
    finally:
        for g in guests:
            with contextlib.suppress(Exception):
                g.close()
        if dom0 is not None:
            dom0.close()
        with contextlib.suppress(OSError):
            pipe.send(("done", len(guests), 0.0))


def run_scaling(args: argparse.Namespace, cpu: DaemonCpu) -> JsonDict:
    counts = sorted(set(args.idle))
    value = xsload.make_value(args.value_size)
    key = "bench/scaling"
    ops = ["read", "write"] if args.write else ["read"]
    sim_guest = import_sim_guest()
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    helper = ctx.Process(
        target=idle_helper,
        args=(args.socket, args.fakexen_dir, args.domid + 1, child_end, not args.no_release),
        daemon=True,
    )
    results: list[JsonDict] = []
    helper.start()  # before any socket or page of ours exists, so that it inherits none
    try:
        with xsload.Connection(args.socket) as dom0:
            guest = RingGuest(
                args.fakexen_dir,
                args.domid,
                poll=args.poll,
                kick_on_consume=args.kick_on_consume,
                sim_guest=sim_guest,
            )
            try:
                introduce(dom0, args.domid)
                prepare_key(guest, key, value)
                for n in counts:
                    parent_end.send(n)
                    if not parent_end.poll(args.setup_timeout):
                        raise RuntimeError(
                            f"introducing {n} idle domains took over {args.setup_timeout:.0f} s"
                        )
                    status, have, setup = parent_end.recv()
                    if status != "ok":
                        raise RuntimeError(f"idle helper: {have}")
                    time.sleep(args.settle)
                    guest.stats = GuestStats()
                    entry: JsonDict = {"idle": have, "setup_s": setup}
                    entry.update(
                        measure_ops(
                            guest,
                            ops,
                            key,
                            value,
                            cpu,
                            args.iterations,
                            args.warmup,
                            budget=args.budget,
                            min_count=args.min_iterations,
                        )
                    )
                    entry["guest"] = vars(guest.stats)
                    results.append(entry)
            finally:
                guest.close()
            release(dom0, args.domid)
    finally:
        with contextlib.suppress(OSError):
            parent_end.send(None)  # the helper releases the idle domains, then ends
        if parent_end.poll(args.setup_timeout):
            with contextlib.suppress(EOFError, OSError):
                parent_end.recv()
        helper.join(timeout=10)
        if helper.is_alive():
            helper.kill()
            helper.join()
    base = results[0]
    metrics: JsonDict = {}
    for entry in results:
        for name in ops:
            s = entry[name]
            for stat in ("median_us", "p99_us"):
                s[f"ratio_{stat[:-3]}"] = s[stat] / base[name][stat]
            prefix = f"N={entry['idle']}.{name}"
            metrics[f"{prefix}.median_us"] = metric(s["median_us"], "us", "lower")
            metrics[f"{prefix}.p99_us"] = metric(s["p99_us"], "us", "lower")
            if s["daemon_cpu_us_per_req"] is not None:
                metrics[f"{prefix}.cpu_us_per_req"] = metric(
                    s["daemon_cpu_us_per_req"], "us", "lower"
                )
            if entry is not base:
                metrics[f"{prefix}.median_ratio"] = metric(s["ratio_median"], "x N0", "lower")
        metrics[f"N={entry['idle']}.guest_poll_timeouts"] = metric(
            entry["guest"]["poll_timeouts"], "waits", "lower"
        )
    return {
        "params": {
            "idle": counts,
            "iterations": args.iterations,
            "min_iterations": args.min_iterations,
            "warmup": args.warmup,
            "budget_s": args.budget,
            "settle_s": args.settle,
            "value_size": args.value_size,
            "write": args.write,
            "domid": args.domid,
            "idle_domids": [args.domid + 1, args.domid + max(counts)] if max(counts) else [],
            "poll_s": args.poll,
            "kick_on_consume": args.kick_on_consume,
        },
        "results": results,
        "metrics": metrics,
    }


def print_scaling(report: JsonDict) -> None:
    xsload.print_idle(report)
    for entry in report["results"]:
        g = entry["guest"]
        if g["kicks_refused"] or g["poll_timeouts"]:
            print(
                f"N={entry['idle']}: {g['kicks_refused']} kicks refused, "
                f"{g['poll_timeouts']} poll timeouts"
            )


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


WORKLOADS: dict[
    str, tuple[Callable[[argparse.Namespace, DaemonCpu], JsonDict], Callable[[JsonDict], None], str]
] = {
    "latency": (run_latency, print_latency, "one guest's sequential READ and WRITE latency"),
    "throughput": (
        run_throughput,
        print_throughput,
        "closed-loop throughput with K guest processes",
    ),
    "scaling": (
        run_scaling,
        print_scaling,
        "one busy guest's latency with N idle introduced domains",
    ),
}


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_workload_arguments(parser: argparse.ArgumentParser, workload: str) -> None:
    """Register one workload's options (shared with compare.py)."""
    parser.add_argument(
        "--value-size",
        type=int,
        default=xsload.DEFAULT_VALUE_SIZE,
        help="bytes per value (default %(default)s)",
    )
    parser.add_argument(
        "--domid",
        type=xsload.positive_int,
        default=1,
        help="the (first) busy guest's domain id; others follow it (default %(default)s)",
    )
    parser.add_argument(
        "--poll",
        type=positive_float,
        default=0.5,
        help="seconds a guest waits for a notification before re-checking its ring "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--kick-on-consume",
        action="store_true",
        help="kick the daemon after every response read (default: only when the response "
        "ring was full, as Linux's xenbus driver does)",
    )
    if workload == "latency":
        parser.add_argument(
            "--iterations",
            type=xsload.positive_int,
            default=10000,
            help="measured round trips per operation (default %(default)s)",
        )
        parser.add_argument(
            "--warmup",
            type=int,
            default=1000,
            help="unmeasured round trips first (default %(default)s)",
        )
    elif workload == "throughput":
        parser.add_argument(
            "--clients",
            type=xsload.int_list,
            default=[1, 4, 16],
            help="comma-separated guest process counts K (default 1,4,16)",
        )
        parser.add_argument(
            "--guests",
            type=xsload.positive_int,
            default=1,
            help="guests (rings) per process (default %(default)s)",
        )
        parser.add_argument(
            "--seconds",
            type=float,
            default=3.0,
            help="measured seconds per K (default %(default)s)",
        )
        parser.add_argument(
            "--pipeline",
            type=xsload.positive_int,
            default=1,
            help="requests in flight per ring (default %(default)s; C xenstored allows 20 "
            "outstanding requests per domain)",
        )
        parser.add_argument(
            "--read-fraction",
            type=float,
            default=0.5,
            help="share of READs in the mix, the rest are WRITEs (default %(default)s)",
        )
    elif workload == "scaling":
        parser.add_argument(
            "--idle",
            type=xsload.int_list,
            default=[0, 100, 1000],
            help="comma-separated idle domain counts N (default 0,100,1000)",
        )
        parser.add_argument(
            "--iterations",
            type=xsload.positive_int,
            default=5000,
            help="measured requests per N and operation at most (default %(default)s)",
        )
        parser.add_argument(
            "--min-iterations",
            type=xsload.positive_int,
            default=500,
            help="measured requests per N and operation at least (default %(default)s)",
        )
        parser.add_argument(
            "--budget",
            type=float,
            default=5.0,
            help="seconds per N and operation after which measuring stops once "
            "--min-iterations are done (default %(default)s)",
        )
        parser.add_argument(
            "--warmup",
            type=int,
            default=300,
            help="unmeasured requests per N and operation (default %(default)s)",
        )
        parser.add_argument(
            "--settle",
            type=float,
            default=0.5,
            help="seconds to wait after introducing before measuring (default %(default)s)",
        )
        parser.add_argument(
            "--write", action="store_true", help="also measure WRITE latency at every N"
        )
        parser.add_argument(
            "--no-release",
            action="store_true",
            help="leave the idle domains introduced at the end (default: RELEASE them)",
        )
        parser.add_argument(
            "--setup-timeout",
            type=float,
            default=300.0,
            help="seconds allowed for introducing one step's idle domains (default %(default)s)",
        )
    else:
        raise ValueError(workload)


def add_common_arguments(parser: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    """Options accepted before or after the workload name (see xsload)."""
    xsload.add_common_arguments(parser, with_defaults=with_defaults)
    parser.add_argument(
        "--fakexen-dir",
        default=None if with_defaults else argparse.SUPPRESS,
        help="the simulated Xen's directory (default: 'fakexen' beside the socket)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="xenstore benchmarks through simulated guest rings "
        "(pyxenstored --sim-xen, or reference/rings.sh)",
        epilog="See benchmarks/README.md.",
    )
    add_common_arguments(parser, with_defaults=True)
    sub = parser.add_subparsers(dest="workload", required=True, metavar="WORKLOAD")
    for name, (_, _, help_text) in WORKLOADS.items():
        workload_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(workload_parser, with_defaults=False)
        add_workload_arguments(workload_parser, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.socket:
        parser.error("--socket is required")
    if args.fakexen_dir is None:
        args.fakexen_dir = os.path.join(os.path.dirname(os.path.abspath(args.socket)), "fakexen")
    if not os.path.isdir(args.fakexen_dir):
        parser.error(
            f"{args.fakexen_dir} is not a directory: start the daemon with the simulated Xen "
            "there (pyxenstored --sim-xen DIR, or reference/rings.sh), or give --fakexen-dir"
        )
    run, show, _ = WORKLOADS[args.workload]
    xsload.run_and_report(
        "rings",
        args.workload,
        f"through rings in {args.fakexen_dir}",
        args,
        run,
        show,
        {"fakexen_dir": args.fakexen_dir},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
