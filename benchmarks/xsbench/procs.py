"""Client worker processes: forked, started together behind barriers, collected, reaped."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any, Generic, Protocol, TypeVar

from xsbench.measure import DaemonCpu
from xsbench.wire import CONNECT_TIMEOUT


class Outcome(Protocol):
    """What a worker posts: ``failure`` says why it failed (None: it did not)."""

    failure: str | None


R = TypeVar("R", bound=Outcome)


def collect(queue: Queue[R], count: int, timeout: float) -> list[R]:
    """Up to ``count`` results from the queue; stops at the first that does not come."""
    results: list[R] = []
    for _ in range(count):
        try:
            results.append(queue.get(timeout=timeout))
        except Exception:
            break
    return results


def reap(procs: Sequence[BaseProcess], grace: float) -> None:
    """Join every process, killing those still alive after ``grace`` seconds."""
    for proc in procs:
        proc.join(timeout=grace)
        if proc.is_alive():
            proc.kill()
            proc.join()


def die_with_parent(parent: int) -> None:
    """Be killed when the controller dies, even by SIGKILL (prctl PR_SET_PDEATHSIG).

    compare.py kills a load generator that overruns its --run-timeout; the worker
    processes must not go on loading the next daemon under test.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(1)


@dataclass
class Phase(Generic[R]):
    """One measured phase of worker processes, seen from the parent."""

    workers: list[R] = field(default_factory=list)
    wall: float = 0.0
    cpu_before: float | None = None
    cpu_after: float | None = None
    failure: str | None = None  # the parent's own reason

    def check(self, expected: int, what: str) -> None:
        """RuntimeError naming every reason if the phase or a worker failed."""
        failures = [w.failure for w in self.workers if w.failure]
        if self.failure or failures or len(self.workers) != expected:
            # The parent's own reason first: the workers then only saw a broken barrier.
            reasons = [r for r in (self.failure, *failures) if r]
            raise RuntimeError(f"{what} failed: {'; '.join(reasons) or 'missing results'}")

    def daemon_busy(self) -> float | None:
        """The daemon's CPU time ÷ the wall time."""
        if self.cpu_before is None or self.cpu_after is None or not self.wall:
            return None
        return (self.cpu_after - self.cpu_before) / self.wall


def run_workers(
    target: Callable[..., None],
    worker_args: Sequence[tuple[Any, ...]],
    cpu: DaemonCpu,
    seconds: float,
    noun: str,
    setup: Callable[[], None] | None = None,
) -> Phase[Any]:
    """Fork one process per entry of ``worker_args``; measure from start to end.

    Each runs ``target(*args, barriers, queue)`` and must wait on ``barriers`` in order,
    abort them all if it fails, and put one result on ``queue``.  The barriers are
    ``[start, end]``, or with ``setup`` ``[ready, set_up, start, end]``: the parent
    calls ``setup()`` between ``ready`` and ``set_up`` (a RuntimeError from it fails
    the phase).  The daemon's CPU time and the wall time are taken at ``start`` and
    ``end``.  The processes are reaped before this returns.
    """
    count = len(worker_args)
    ctx = multiprocessing.get_context("fork")
    barriers = [ctx.Barrier(count + 1) for _ in range(4 if setup else 2)]
    start, end = barriers[-2:]
    queue: Queue[Any] = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(*args, barriers, queue), daemon=True)
        for args in worker_args
    ]
    for proc in procs:
        proc.start()
    phase: Phase[Any] = Phase()
    try:
        if setup is not None:
            set_up_barriers(barriers[:2], setup, phase)
        start.wait(timeout=CONNECT_TIMEOUT + 30)
        phase.cpu_before = cpu.seconds()
        t0 = time.perf_counter()
        end.wait(timeout=seconds + 120)
        phase.wall = time.perf_counter() - t0
        phase.cpu_after = cpu.seconds()
    except threading.BrokenBarrierError:
        phase.failure = phase.failure or f"a {noun} failed or timed out"
    phase.workers = collect(queue, count, 30)
    reap(procs, 10)
    return phase


def set_up_barriers(
    barriers: Sequence[Barrier], setup: Callable[[], None], phase: Phase[Any]
) -> None:
    ready, set_up = barriers
    ready.wait(timeout=CONNECT_TIMEOUT)
    try:
        setup()
    except RuntimeError as err:
        set_up.abort()
        phase.failure = str(err)
        raise threading.BrokenBarrierError from None
    set_up.wait(timeout=CONNECT_TIMEOUT)
