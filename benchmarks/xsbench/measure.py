"""What is measured: the daemon's CPU time, timed round trips, and their statistics."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xsbench.wire import (
    HEADER,
    XS_ERROR,
    XS_READ,
    XS_WATCH_EVENT,
    XS_WRITE,
    SyncConn,
    path_arg,
    write_arg,
)

JsonDict = dict[str, Any]


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
        split = self.split()
        return None if split is None else split[0] + split[1]

    def split(self) -> tuple[float, float] | None:
        """User and system CPU seconds (``utime`` and ``stime`` of ``/proc/PID/stat``, in
        clock ticks, usually 10 ms: over a run of a second or more that tells where the
        time goes, the interpreter or the kernel)."""
        if self.pid is None:
            return None
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return int(fields[11]) / self._ticks, int(fields[12]) / self._ticks


def cpu_per_request_us(before: float | None, after: float | None, requests: int) -> float | None:
    if before is None or after is None or requests <= 0:
        return None
    return (after - before) / requests * 1e6


def load_cores() -> int:
    """The cores this process (the load) may run on."""
    return len(os.sched_getaffinity(0))


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
    conn: SyncConn,
    msg_type: int,
    body: bytes,
    count: int,
    budget: float | None = None,
    min_count: int = 0,
) -> tuple[list[int], int]:
    """Send one request ``count`` times, one at a time; return (round trips in ns, errors).

    The clock runs from just before the request is sent (a socket ``send``, or the write
    into a ring) to the moment its reply has been decoded.  With ``budget`` (seconds),
    stops early once the budget is spent and ``min_count`` samples were taken.
    """
    samples: list[int] = []
    errors = 0
    clock = time.perf_counter_ns
    pack = HEADER.pack
    length = len(body)
    next_id = conn.next_id
    send = conn.send
    receive = conn.receive
    stop_at = clock() + int(budget * 1e9) if budget is not None else None
    for i in range(count):
        req_id = next_id()
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


def measure_ops(
    conn: SyncConn,
    ops: Sequence[str],
    key: str,
    value: bytes,
    cpu: DaemonCpu,
    iterations: int,
    warmup: int,
    budget: float | None = None,
    min_count: int = 0,
) -> JsonDict:
    """Sequential READ and/or WRITE latency of ``key``: after ``warmup`` unmeasured round
    trips, the summary of the measured ones with the daemon's CPU µs per request."""
    bodies = {
        "read": (XS_READ, path_arg(key)),
        "write": (XS_WRITE, write_arg(key, value)),
    }
    results: JsonDict = {}
    for name in ops:
        msg_type, body = bodies[name]
        timed_requests(conn, msg_type, body, warmup)
        before, split_before = cpu.seconds(), cpu.split()
        samples, errors = timed_requests(conn, msg_type, body, iterations, budget, min_count)
        after, split_after = cpu.seconds(), cpu.split()
        summary = summarize_us(samples)
        summary["errors"] = errors
        summary["daemon_cpu_us_per_req"] = cpu_per_request_us(before, after, len(samples))
        # Where the daemon's time went: in its own code (user) or in the kernel (system).
        user = system = None
        if split_before is not None and split_after is not None:
            user = cpu_per_request_us(split_before[0], split_after[0], len(samples))
            system = cpu_per_request_us(split_before[1], split_after[1], len(samples))
        summary["daemon_user_us_per_req"] = user
        summary["daemon_system_us_per_req"] = system
        results[name] = summary
    return results


def make_value(size: int) -> bytes:
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (pattern * (size // len(pattern) + 1))[:size]


def op_sequence(read_fraction: float) -> Iterator[bool]:
    """Endless READ (True) / WRITE (False) pattern with the given READ share, evenly spread."""
    i = 0
    while True:
        yield math.floor((i + 1) * read_fraction) > math.floor(i * read_fraction)
        i += 1


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
