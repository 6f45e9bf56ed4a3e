#!/usr/bin/env python3
"""Load generator for any xenstore daemon that serves the Unix-socket protocol.

Talks the raw xenstore wire protocol (16-byte little-endian header
``<IIII`` = type, req_id, tx_id, len, then ``len`` payload bytes) with the
standard library only, so it measures C xenstored, oxenstored and
pyxenstored alike.  Three workloads::

    python benchmarks/xsload.py --socket PATH latency    [--iterations N]
    python benchmarks/xsload.py --socket PATH throughput [--clients 1,4,16]
                                                         [--seconds S] [--pipeline D]
    python benchmarks/xsload.py --socket PATH idle       [--idle 0,1000,5000]

* ``latency``: sequential 32-byte READ, then WRITE, round trips on one
  connection; median and p99 in microseconds.
* ``throughput``: K client processes, one connection each, closed loop of a
  READ/WRITE mix with D requests in flight per connection; total requests/s.
* ``idle``: N extra connections that each hold a WATCH and stay silent, then
  sequential READ latency from one more connection, for every N, with the
  ratio to N=0.

``--daemon-pid PID`` adds the daemon's CPU time per request, measured from
``/proc/PID`` before and after each measured phase.  ``--json FILE`` writes
machine-readable results (used by ``compare.py``).  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import resource
import selectors
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<IIII")
PAYLOAD_MAX = 4096

# Message types used here (xs_wire.h; spec/xenstore-protocol.md §1.3).
XS_DIRECTORY = 1
XS_READ = 2
XS_WATCH = 4
XS_WRITE = 11
XS_WATCH_EVENT = 15
XS_ERROR = 16

BENCH_ROOT = "/bench"
DEFAULT_VALUE_SIZE = 32
CONNECT_TIMEOUT = 60.0

JsonDict = dict[str, Any]


# --------------------------------------------------------------------------
# Wire protocol
# --------------------------------------------------------------------------


class XsError(Exception):
    """The daemon answered a request with an XS_ERROR reply."""

    def __init__(self, name: str, msg_type: int) -> None:
        super().__init__(f"{name} (request type {msg_type})")
        self.name = name


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded xenstore message."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes


class MessageReader:
    """Incremental decoder: feed it bytes, get back complete messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buf
        buf += data
        messages: list[Message] = []
        offset = 0
        size = len(buf)
        while size - offset >= HEADER.size:
            msg_type, req_id, tx_id, length = HEADER.unpack_from(buf, offset)
            end = offset + HEADER.size + length
            if end > size:
                break
            messages.append(
                Message(msg_type, req_id, tx_id, bytes(buf[offset + HEADER.size : end]))
            )
            offset = end
        if offset:
            del buf[:offset]
        return messages


def encode(msg_type: int, req_id: int, payload: bytes, tx_id: int = 0) -> bytes:
    """Frame one request."""
    if len(payload) > PAYLOAD_MAX:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {PAYLOAD_MAX}")
    return HEADER.pack(msg_type, req_id, tx_id, len(payload)) + payload


def read_payload(path: str) -> bytes:
    return path.encode() + b"\0"


def write_payload(path: str, value: bytes) -> bytes:
    return path.encode() + b"\0" + value


def watch_payload(path: str, token: str) -> bytes:
    return path.encode() + b"\0" + token.encode() + b"\0"


def connect_unix(path: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """Connect to the daemon's socket, retrying while its backlog is full.

    C xenstored and oxenstored listen with a backlog of 1, so a burst of
    connects gets EAGAIN from a non-blocking connect (a blocking one would
    sleep in the kernel with no timeout).  Returns a blocking socket.
    """
    deadline = time.monotonic() + timeout
    delay = 50e-6
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError, FileNotFoundError):
            sock.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not connect to {path} within {timeout:.0f} s") from None
            time.sleep(delay)
            delay = min(delay * 2, 5e-3)
            continue
        except BaseException:
            sock.close()
            raise
        sock.setblocking(True)
        return sock


class Connection:
    """A blocking client connection that matches replies by req_id."""

    def __init__(self, path: str, timeout: float = CONNECT_TIMEOUT) -> None:
        self.sock = connect_unix(path, timeout)
        self.reader = MessageReader()
        self.pending: list[Message] = []
        self.watch_events = 0
        self._next_id = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_id(self) -> int:
        req_id = self._next_id
        self._next_id = req_id + 1 if req_id < 0xFFFFFFFF else 1
        return req_id

    def receive(self) -> Message:
        """Return the next message from the daemon (reply or watch event)."""
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("daemon closed the connection")
            self.pending = self.reader.feed(data)
        return self.pending.pop(0)

    def request_raw(self, msg_type: int, payload: bytes, tx_id: int = 0) -> Message:
        """Send one request and wait for its reply (which may be XS_ERROR)."""
        req_id = self.next_id()
        self.sock.sendall(encode(msg_type, req_id, payload, tx_id))
        while True:
            msg = self.receive()
            if msg.type == XS_WATCH_EVENT:
                self.watch_events += 1
            elif msg.req_id == req_id:
                return msg

    def request(self, msg_type: int, payload: bytes, tx_id: int = 0) -> bytes:
        """Send one request; return the reply payload or raise XsError."""
        msg = self.request_raw(msg_type, payload, tx_id)
        if msg.type == XS_ERROR:
            raise XsError(msg.payload.rstrip(b"\0").decode(errors="replace"), msg_type)
        return msg.payload

    def read(self, path: str) -> bytes:
        return self.request(XS_READ, read_payload(path))

    def write(self, path: str, value: bytes) -> None:
        self.request(XS_WRITE, write_payload(path, value))

    def watch(self, path: str, token: str) -> None:
        self.request(XS_WATCH, watch_payload(path, token))


# --------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------


class DaemonCpu:
    """CPU time consumed by the daemon process, from /proc.

    Uses the per-thread ``schedstat`` run time (nanoseconds) summed over all
    threads when the kernel provides it, otherwise ``utime + stime`` from
    ``/proc/PID/stat`` (clock ticks, usually 10 ms).
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.source = "none"
        if pid is None:
            return
        if not Path(f"/proc/{pid}").is_dir():
            raise ValueError(f"no process with pid {pid}")
        if Path(f"/proc/{pid}/schedstat").exists():
            self.source = "schedstat"
        else:
            self.source = "stat"
        self._ticks = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float | None:
        if self.pid is None:
            return None
        if self.source == "schedstat":
            total = 0
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                try:
                    total += int((task / "schedstat").read_text().split()[0])
                except (FileNotFoundError, ProcessLookupError):
                    continue  # thread exited meanwhile
            return total / 1e9
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / self._ticks


def cpu_per_request_us(before: float | None, after: float | None, requests: int) -> float | None:
    if before is None or after is None or requests <= 0:
        return None
    return (after - before) / requests * 1e6


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize_us(samples_ns: Sequence[int]) -> JsonDict:
    """Median, p99, mean, min and max of round-trip times, in microseconds."""
    values = sorted(s / 1000.0 for s in samples_ns)
    return {
        "count": len(values),
        "median_us": statistics.median(values),
        "p99_us": percentile(values, 0.99),
        "mean_us": statistics.fmean(values),
        "min_us": values[0],
        "max_us": values[-1],
    }


def timed_requests(
    conn: Connection, request: bytes, count: int, budget: float | None = None, min_count: int = 0
) -> tuple[list[int], int]:
    """Send ``request`` ``count`` times, one at a time; return (round trips in ns, errors).

    ``request`` is a framed message whose req_id is replaced for every
    round trip.  With ``budget`` (seconds), stops early once the budget is
    spent and at least ``min_count`` samples were taken.
    """
    body = request[HEADER.size :]
    msg_type, _, tx_id, length = HEADER.unpack_from(request)
    samples: list[int] = []
    errors = 0
    sock = conn.sock
    clock = time.perf_counter_ns
    stop_at = clock() + int(budget * 1e9) if budget is not None else None
    for i in range(count):
        req_id = conn.next_id()
        frame = HEADER.pack(msg_type, req_id, tx_id, length) + body
        t0 = clock()
        sock.sendall(frame)
        while True:
            msg = conn.receive()
            if msg.type != XS_WATCH_EVENT and msg.req_id == req_id:
                break
        t1 = clock()
        samples.append(t1 - t0)
        if msg.type == XS_ERROR:
            errors += 1
        if stop_at is not None and i + 1 >= min_count and t1 > stop_at:
            break
    return samples, errors


def make_value(size: int) -> bytes:
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (pattern * (size // len(pattern) + 1))[:size]


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def metric(value: float | None, unit: str, better: str) -> JsonDict:
    return {"value": value, "unit": unit, "better": better}


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


# --------------------------------------------------------------------------
# Workload: latency
# --------------------------------------------------------------------------


def run_latency(args: argparse.Namespace, cpu: DaemonCpu) -> JsonDict:
    value = make_value(args.value_size)
    key = f"{BENCH_ROOT}/latency"
    ops: dict[str, bytes] = {
        "read": encode(XS_READ, 0, read_payload(key)),
        "write": encode(XS_WRITE, 0, write_payload(key, value)),
    }
    results: JsonDict = {}
    with Connection(args.socket) as conn:
        conn.write(key, value)
        if conn.read(key) != value:
            raise RuntimeError(f"READ of {key} did not return the value just written")
        for name, frame in ops.items():
            timed_requests(conn, frame, args.warmup)
            before = cpu.seconds()
            samples, errors = timed_requests(conn, frame, args.iterations)
            after = cpu.seconds()
            summary = summarize_us(samples)
            summary["errors"] = errors
            summary["daemon_cpu_us_per_req"] = cpu_per_request_us(before, after, len(samples))
            results[name] = summary
    metrics = {}
    for name, summary in results.items():
        metrics[f"{name}.median_us"] = metric(summary["median_us"], "us", "lower")
        metrics[f"{name}.p99_us"] = metric(summary["p99_us"], "us", "lower")
        if summary["daemon_cpu_us_per_req"] is not None:
            metrics[f"{name}.cpu_us_per_req"] = metric(
                summary["daemon_cpu_us_per_req"], "us", "lower"
            )
    return {
        "params": {
            "iterations": args.iterations,
            "warmup": args.warmup,
            "value_size": args.value_size,
        },
        "results": results,
        "metrics": metrics,
    }


def print_latency(report: JsonDict) -> None:
    rows = []
    for name, s in report["results"].items():
        rows.append(
            [
                name.upper(),
                str(s["count"]),
                fmt(s["median_us"]),
                fmt(s["p99_us"]),
                fmt(s["mean_us"]),
                fmt(s["daemon_cpu_us_per_req"]),
                str(s["errors"]),
            ]
        )
    print_table(["op", "n", "median µs", "p99 µs", "mean µs", "daemon CPU µs/req", "errors"], rows)


# --------------------------------------------------------------------------
# Workload: throughput
# --------------------------------------------------------------------------


@dataclass
class WorkerResult:
    index: int
    completed: int = 0
    reads: int = 0
    writes: int = 0
    errors: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    failure: str | None = None


def op_sequence(read_fraction: float) -> Iterator[bool]:
    """Endless READ (True) / WRITE (False) pattern with the given READ share, evenly spread."""
    i = 0
    while True:
        yield math.floor((i + 1) * read_fraction) > math.floor(i * read_fraction)
        i += 1


def throughput_worker(
    path: str,
    index: int,
    seconds: float,
    depth: int,
    read_fraction: float,
    value_size: int,
    start: Barrier,
    end: Barrier,
    results: Queue[WorkerResult],
) -> None:
    """One client process: a closed loop with ``depth`` requests in flight."""
    result = WorkerResult(index)
    try:
        conn = Connection(path)
        key = f"{BENCH_ROOT}/throughput/c{index}"
        value = make_value(value_size)
        conn.write(key, value)
        read_body = read_payload(key)
        write_body = write_payload(key, value)
        read_len, write_len = len(read_body), len(write_body)
        pack = HEADER.pack
        ops = op_sequence(read_fraction)
        sock = conn.sock
        reader = conn.reader
        req_id = 0

        def next_request() -> bytes:
            nonlocal req_id
            req_id += 1
            if next(ops):
                result.reads += 1
                return pack(XS_READ, req_id, 0, read_len) + read_body
            result.writes += 1
            return pack(XS_WRITE, req_id, 0, write_len) + write_body

        start.wait()
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        deadline = t0 + seconds
        sock.sendall(b"".join(next_request() for _ in range(depth)))
        outstanding = depth
        while outstanding:
            data = sock.recv(262144)
            if not data:
                raise ConnectionError("daemon closed the connection")
            sending = time.perf_counter() < deadline
            out: list[bytes] = []
            for msg in reader.feed(data):
                if msg.type == XS_WATCH_EVENT:
                    continue
                outstanding -= 1
                result.completed += 1
                if msg.type == XS_ERROR:
                    result.errors += 1
                if sending:
                    out.append(next_request())
                    outstanding += 1
            if out:
                sock.sendall(b"".join(out))
        result.elapsed = time.perf_counter() - t0
        result.cpu = time.process_time() - cpu0
        end.wait()
        conn.close()
    except Exception as exc:  # reported to the parent, which fails the run
        result.failure = f"{type(exc).__name__}: {exc}"
        start.abort()
        end.abort()
    results.put(result)


def run_throughput_once(args: argparse.Namespace, cpu: DaemonCpu, clients: int) -> JsonDict:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(clients + 1)
    end = ctx.Barrier(clients + 1)
    queue: Queue[WorkerResult] = ctx.Queue()
    procs = [
        ctx.Process(
            target=throughput_worker,
            args=(
                args.socket,
                i,
                args.seconds,
                args.pipeline,
                args.read_fraction,
                args.value_size,
                start,
                end,
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
    try:
        start.wait(timeout=CONNECT_TIMEOUT + 30)
        before = cpu.seconds()
        t0 = time.perf_counter()
        end.wait(timeout=args.seconds + 120)
        wall = time.perf_counter() - t0
        after = cpu.seconds()
    except threading.BrokenBarrierError:
        failure = "a client process failed or timed out"
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
    failures = [w.failure for w in workers if w.failure]
    if failure or failures or len(workers) != clients:
        raise RuntimeError(
            f"throughput with {clients} clients failed: "
            f"{'; '.join(failures) or failure or 'missing client results'}"
        )
    completed = sum(w.completed for w in workers)
    load_cores = len(os.sched_getaffinity(0))
    return {
        "clients": clients,
        "requests": completed,
        "reads": sum(w.reads for w in workers),
        "writes": sum(w.writes for w in workers),
        "errors": sum(w.errors for w in workers),
        "wall_s": wall,
        "req_per_s": completed / wall if wall > 0 else math.nan,
        "daemon_cpu_us_per_req": cpu_per_request_us(before, after, completed),
        "daemon_cpu_busy": (
            (after - before) / wall if before is not None and after is not None and wall else None
        ),
        "client_cpu_busy": sum(w.cpu for w in workers) / wall / load_cores if wall > 0 else None,
        "per_client_req_per_s": [
            w.completed / w.elapsed if w.elapsed else 0.0
            for w in sorted(workers, key=lambda w: w.index)
        ],
    }


def run_throughput(args: argparse.Namespace, cpu: DaemonCpu) -> JsonDict:
    if not 0.0 <= args.read_fraction <= 1.0:
        raise ValueError("--read-fraction must be between 0 and 1")
    results = [run_throughput_once(args, cpu, k) for k in args.clients]
    metrics: JsonDict = {}
    for r in results:
        k = r["clients"]
        metrics[f"K={k}.req_per_s"] = metric(r["req_per_s"], "req/s", "higher")
        if r["daemon_cpu_us_per_req"] is not None:
            metrics[f"K={k}.cpu_us_per_req"] = metric(r["daemon_cpu_us_per_req"], "us", "lower")
    return {
        "params": {
            "clients": args.clients,
            "seconds": args.seconds,
            "pipeline": args.pipeline,
            "read_fraction": args.read_fraction,
            "value_size": args.value_size,
            "load_cores": len(os.sched_getaffinity(0)),
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
                fmt(r["req_per_s"], 0),
                str(r["requests"]),
                fmt(r["daemon_cpu_us_per_req"], 2),
                fmt(None if r["daemon_cpu_busy"] is None else 100 * r["daemon_cpu_busy"], 0),
                fmt(None if r["client_cpu_busy"] is None else 100 * r["client_cpu_busy"], 0),
                str(r["errors"]),
            ]
        )
    p = report["params"]
    print(
        f"pipeline depth {p['pipeline']}, READ share {p['read_fraction']:.2f}, "
        f"{p['seconds']} s per K, load on {p['load_cores']} core(s)"
    )
    print_table(
        ["K", "req/s", "requests", "daemon CPU µs/req", "daemon busy %", "client busy %", "errors"],
        rows,
    )


# --------------------------------------------------------------------------
# Workload: idle connections
# --------------------------------------------------------------------------


def open_idle_connections(
    path: str, first: int, count: int, batch: int, watch: bool = True
) -> list[socket.socket]:
    """Open ``count`` connections that each register one WATCH, then go quiet.

    Connections are opened in batches: connect every socket of a batch (with
    retries, see connect_unix), send all their WATCH requests, then collect
    each one's reply and the initial watch event with a selector.  With
    ``watch`` false the connections are only opened.
    """
    opened: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        for base in range(first, first + count, batch):
            size = min(batch, first + count - base)
            waiting: dict[socket.socket, tuple[MessageReader, list[int]]] = {}
            for i in range(base, base + size):
                sock = connect_unix(path)
                opened.append(sock)
                if not watch:
                    continue
                sock.sendall(encode(XS_WATCH, 1, watch_payload(f"{BENCH_ROOT}/idle/w{i}", f"t{i}")))
                sock.setblocking(False)
                # state: [replies seen, events seen]
                waiting[sock] = (MessageReader(), [0, 0])
                sel.register(sock, selectors.EVENT_READ, sock)
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while waiting:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{len(waiting)} WATCH replies missing after {CONNECT_TIMEOUT:.0f} s"
                    )
                for key, _ in sel.select(timeout=1.0):
                    sock = key.data
                    reader, seen = waiting[sock]
                    data = sock.recv(4096)
                    if not data:
                        raise ConnectionError("daemon closed an idle connection during setup")
                    for msg in reader.feed(data):
                        if msg.type == XS_ERROR:
                            raise XsError(
                                msg.payload.rstrip(b"\0").decode(errors="replace"), XS_WATCH
                            )
                        seen[0 if msg.type == XS_WATCH else 1] += 1
                    if seen[0] and seen[1]:
                        sel.unregister(sock)
                        del waiting[sock]
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    finally:
        sel.close()
    return opened


def run_idle(args: argparse.Namespace, cpu: DaemonCpu) -> JsonDict:
    counts = sorted(set(args.idle))
    needed = max(counts) + 64
    soft = raise_nofile_limit()
    if soft < needed:
        raise RuntimeError(
            f"RLIMIT_NOFILE is {soft} (hard limit too), need about {needed} descriptors"
        )
    key = f"{BENCH_ROOT}/idle/probe"
    value = make_value(args.value_size)
    read_frame = encode(XS_READ, 0, read_payload(key))
    write_frame = encode(XS_WRITE, 0, write_payload(key, value))
    idle: list[socket.socket] = []
    results: list[JsonDict] = []
    with Connection(args.socket) as probe:
        probe.write(key, value)
        try:
            for n in counts:
                t0 = time.perf_counter()
                idle += open_idle_connections(
                    args.socket, len(idle), n - len(idle), args.batch, watch=not args.no_watch
                )
                setup = time.perf_counter() - t0
                entry: JsonDict = {"idle": n, "setup_s": setup}
                ops = [("read", read_frame)] + ([("write", write_frame)] if args.write else [])
                for name, frame in ops:
                    timed_requests(probe, frame, args.warmup)
                    before = cpu.seconds()
                    samples, errors = timed_requests(
                        probe,
                        frame,
                        args.iterations,
                        budget=args.budget,
                        min_count=args.min_iterations,
                    )
                    after = cpu.seconds()
                    summary = summarize_us(samples)
                    summary["errors"] = errors
                    summary["daemon_cpu_us_per_req"] = cpu_per_request_us(
                        before, after, len(samples)
                    )
                    entry[name] = summary
                results.append(entry)
        finally:
            for sock in idle:
                sock.close()
    base = results[0]
    metrics: JsonDict = {}
    for entry in results:
        for name in ("read", "write"):
            if name not in entry:
                continue
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
    return {
        "params": {
            "idle": counts,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "budget_s": args.budget,
            "batch": args.batch,
            "value_size": args.value_size,
            "write": args.write,
            "watch": not args.no_watch,
        },
        "results": results,
        "metrics": metrics,
    }


def print_idle(report: JsonDict) -> None:
    rows = []
    base_n = report["results"][0]["idle"]
    for entry in report["results"]:
        for name in ("read", "write"):
            if name not in entry:
                continue
            s = entry[name]
            rows.append(
                [
                    str(entry["idle"]),
                    name.upper(),
                    str(s["count"]),
                    fmt(s["median_us"]),
                    fmt(s["p99_us"]),
                    fmt(s["ratio_median"], 2),
                    fmt(s["ratio_p99"], 2),
                    fmt(s["daemon_cpu_us_per_req"]),
                    fmt(entry["setup_s"], 2),
                ]
            )
    print_table(
        [
            "idle N",
            "op",
            "n",
            "median µs",
            "p99 µs",
            f"median ÷N={base_n}",
            f"p99 ÷N={base_n}",
            "daemon CPU µs/req",
            "setup s",
        ],
        rows,
    )


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


WORKLOADS: dict[
    str, tuple[Callable[[argparse.Namespace, DaemonCpu], JsonDict], Callable[[JsonDict], None], str]
] = {
    "latency": (run_latency, print_latency, "sequential READ and WRITE round-trip latency"),
    "throughput": (
        run_throughput,
        print_throughput,
        "closed-loop throughput with K client processes",
    ),
    "idle": (run_idle, print_idle, "READ latency with N idle watching connections open"),
}


def add_workload_arguments(parser: argparse.ArgumentParser, workload: str) -> None:
    """Register one workload's options (shared with compare.py)."""
    parser.add_argument(
        "--value-size",
        type=int,
        default=DEFAULT_VALUE_SIZE,
        help="bytes per value (default %(default)s)",
    )
    if workload == "latency":
        parser.add_argument(
            "--iterations",
            type=positive_int,
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
            type=int_list,
            default=[1, 4, 16],
            help="comma-separated client process counts K (default 1,4,16)",
        )
        parser.add_argument(
            "--seconds",
            type=float,
            default=3.0,
            help="measured seconds per K (default %(default)s)",
        )
        parser.add_argument(
            "--pipeline",
            type=positive_int,
            default=1,
            help="requests in flight per connection (default %(default)s)",
        )
        parser.add_argument(
            "--read-fraction",
            type=float,
            default=0.5,
            help="share of READs in the mix, the rest are WRITEs (default %(default)s)",
        )
    elif workload == "idle":
        parser.add_argument(
            "--idle",
            type=int_list,
            default=[0, 1000, 5000],
            help="comma-separated idle connection counts N (default 0,1000,5000)",
        )
        parser.add_argument(
            "--iterations",
            type=positive_int,
            default=5000,
            help="measured READs per N at most (default %(default)s)",
        )
        parser.add_argument(
            "--min-iterations",
            type=positive_int,
            default=300,
            help="measured READs per N at least (default %(default)s)",
        )
        parser.add_argument(
            "--budget",
            type=float,
            default=5.0,
            help="seconds per N after which measuring stops once "
            "--min-iterations are done (default %(default)s)",
        )
        parser.add_argument(
            "--warmup", type=int, default=200, help="unmeasured READs per N (default %(default)s)"
        )
        parser.add_argument(
            "--batch",
            type=positive_int,
            default=200,
            help="connections opened per batch (default %(default)s)",
        )
        parser.add_argument(
            "--write",
            action="store_true",
            help="also measure WRITE latency (fires the watch matching code)",
        )
        parser.add_argument(
            "--no-watch",
            action="store_true",
            help="idle connections register no WATCH (they are only opened)",
        )
    else:
        raise ValueError(workload)


def add_common_arguments(parser: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    """Options accepted before or after the workload name.

    The copy on each workload's subparser has no defaults (SUPPRESS), so it
    only overrides what was given before the workload name.
    """

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    parser.add_argument("--socket", default=default(None), help="the daemon's Unix socket")
    parser.add_argument(
        "--json", metavar="FILE", default=default(None), help="also write results as JSON to FILE"
    )
    parser.add_argument(
        "--daemon-pid",
        type=int,
        metavar="PID",
        default=default(None),
        help="measure this process's CPU time per request",
    )
    parser.add_argument(
        "--quiet", action="store_true", default=default(False), help="no table on stdout"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="xenstore load generator (raw socket protocol, any daemon)",
        epilog="See benchmarks/README.md.",
    )
    add_common_arguments(parser, with_defaults=True)
    sub = parser.add_subparsers(dest="workload", required=True, metavar="WORKLOAD")
    for name, (_, _, help_text) in WORKLOADS.items():
        workload_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(workload_parser, with_defaults=False)
        add_workload_arguments(workload_parser, name)
    return parser


def run_and_report(
    tool: str,
    workload: str,
    where: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, DaemonCpu], JsonDict],
    show: Callable[[JsonDict], None],
    extra: JsonDict | None = None,
) -> JsonDict:
    """Run one workload, then print and (``--json``) save the report. Shared by
    xsload.py, rings.py and bootstorm.py so that every report has the same header."""
    cpu = DaemonCpu(args.daemon_pid)
    started = time.time()
    loadavg_before = os.getloadavg()
    body = run(args, cpu)
    report: JsonDict = {
        "tool": tool,
        "format": 1,
        "workload": workload,
        "socket": args.socket,
        **(extra or {}),
        "daemon_pid": args.daemon_pid,
        "cpu_source": cpu.source,
        "started": started,
        "duration_s": time.time() - started,
        "load_affinity": sorted(os.sched_getaffinity(0)),
        # Machine load average (1, 5, 15 min) before and after: other work on
        # the machine is the usual cause of outliers.
        "loadavg": {"before": loadavg_before, "after": os.getloadavg()},
        **body,
    }
    if not args.quiet:
        print(
            f"{workload} {where}"
            + (f" (daemon pid {args.daemon_pid}, CPU from {cpu.source})" if args.daemon_pid else "")
        )
        show(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.socket:
        parser.error("--socket is required")
    run, show, _ = WORKLOADS[args.workload]
    run_and_report("xsload", args.workload, f"on {args.socket}", args, run, show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
