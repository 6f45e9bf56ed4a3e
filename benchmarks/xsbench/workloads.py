"""The sequential and closed-loop workloads, written once over a ``Transport``.

* ``latency``: sequential READ, then WRITE, round trips of one client; median and p99.
* ``throughput``: K client processes in a closed loop of a READ/WRITE mix with D requests
  in flight per connection or ring; total requests/s.
* ``scaling``: one client's sequential latency with N idle peers (connections holding a
  watch, or introduced domains), for every N, with the ratio to the first N.  xsload.py
  calls it ``idle``.

A transport is how the load reaches the daemon: ``sockets.SocketTransport`` (xsload.py)
or ``guests.RingTransport`` (rings.py).  It opens the busy client (a ``wire.SyncConn``),
holds the idle peers, runs the closed loop of one worker process, and adds its own
parameters and counters to the report.
"""

from __future__ import annotations

import math
import sys
import time
from abc import ABC, abstractmethod
from argparse import ArgumentParser, Namespace
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Protocol

from xsbench import cli, native, report
from xsbench.cli import Words
from xsbench.measure import (
    DaemonCpu,
    JsonDict,
    cpu_per_request_us,
    load_cores,
    make_value,
    measure_ops,
    op_sequence,
)
from xsbench.procs import Phase, run_workers
from xsbench.report import fmt, metric, run_and_report, us_metric
from xsbench.wire import HEADER, XS_READ, XS_WRITE, SyncConn, path_arg, write_arg

#: one workload of a tool: run, show, help text
Workload = tuple[report.Run, report.Show, str]


@dataclass
class LoadResult:
    """What one throughput worker process posts."""

    index: int
    completed: int = 0
    reads: int = 0
    writes: int = 0
    errors: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    guest: dict[str, int] = field(default_factory=dict)  # rings: the guests' counters
    failure: str | None = None


#: what one throughput worker process drives: its guests' domids (rings), or nothing
Share = tuple[int, ...]


class IdlePool(Protocol):
    def grow(self, count: int) -> tuple[int, float]:
        """Add idle peers until there are ``count``; return (how many, seconds it took)."""
        ...


class Load(Protocol):
    """One throughput worker's clients."""

    def closed_loop(
        self, deadline: float, depth: int, next_request: Callable[[], bytes], result: LoadResult
    ) -> None:
        """``depth`` requests in flight per client until ``deadline``, then until all are
        answered; counts ``completed`` and ``errors`` in ``result``."""
        ...

    def tally(self, result: LoadResult) -> None:
        """Add the clients' own counters to ``result`` (after the measured phase)."""
        ...


class LoadSession(Protocol):
    """The parent's side of the throughput workload, over all K."""

    def shares(self, clients: int) -> list[Share]: ...

    def setup(self) -> Callable[[], None] | None:
        """What the parent does once the workers are ready (INTRODUCE), or None."""
        ...

    def cleanup(self) -> None:
        """After one K (RELEASE)."""
        ...


class Transport(ABC):
    """How the load reaches the daemon; see the module docstring."""

    tool: str  # the report's "tool"
    description: str  # the tool's --help
    #: workload name -> (the workload function's name, help text)
    workloads: dict[str, tuple[str, str]]
    words: Words  # how the options name things
    latency_key: str
    scaling_key: str
    throughput_key: str  # with {index}, the worker's number
    group_noun: str  # what K worker processes are ("clients")

    def add_common_arguments(self, parser: ArgumentParser, *, with_defaults: bool) -> None:
        """Options accepted before or after the workload name (beyond ``cli``'s)."""
        return None

    def add_client_arguments(self, parser: ArgumentParser) -> None:
        """Options of the transport's clients, in every workload."""
        return None

    def add_arguments(self, parser: ArgumentParser, workload: str) -> None:
        """A workload's own options, after the shared block of ``cli.BLOCKS``."""
        return None

    def prepare(self, args: Namespace, parser: ArgumentParser) -> JsonDict:
        """Check and complete the arguments; return what the report's header adds."""
        return {}

    def where(self, args: Namespace) -> str:
        return f"on {args.socket}"

    def client_params(self, args: Namespace) -> JsonDict:
        """Parameters of the transport's clients, in every report."""
        return {}

    def client_report(self, conn: SyncConn) -> JsonDict:
        """The busy client's counters since the last call (rings: ``{"guest": ...}``)."""
        return {}

    def load_params(self, args: Namespace) -> JsonDict:
        return {}

    @abstractmethod
    def probe(self, args: Namespace, key: str, value: bytes) -> ContextManager[SyncConn]:
        """The busy client, with ``key`` written and read back."""

    @abstractmethod
    def idle_pool(self, args: Namespace, counts: Sequence[int]) -> ContextManager[IdlePool]:
        """The scaling workload's idle peers (entered before the probe)."""

    @abstractmethod
    def scaling_params(self, args: Namespace, counts: Sequence[int]) -> JsonDict: ...

    @abstractmethod
    def load_session(self, args: Namespace) -> ContextManager[LoadSession]: ...

    @abstractmethod
    def load(
        self, args: Namespace, share: Share, ready: Sequence[Barrier], key: str, value: bytes
    ) -> ContextManager[Load]:
        """One worker's clients, ``key`` written by each; waits on the ``ready`` barriers."""


def bind(t: Transport) -> dict[str, Workload]:
    """A tool's workloads, bound to its transport."""
    return {
        name: (partial(FUNCTIONS[function], t), SHOW[function], help_text)
        for name, (function, help_text) in t.workloads.items()
    }


# --------------------------------------------------------------------------
# Metrics shared by the workloads
# --------------------------------------------------------------------------


def progress(args: Namespace, text: str) -> None:
    """One line on stderr after each step of a long workload (each N, each K); none with
    --quiet, as when compare.py runs it (its own line per run is the progress there)."""
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def op_metrics(metrics: JsonDict, prefix: str, summary: JsonDict) -> None:
    metrics[f"{prefix}.median_us"] = us_metric(summary["median_us"])
    metrics[f"{prefix}.p99_us"] = us_metric(summary["p99_us"])
    if summary["daemon_cpu_us_per_req"] is not None:
        metrics[f"{prefix}.cpu_us_per_req"] = us_metric(summary["daemon_cpu_us_per_req"])
    for part in ("user", "system"):
        value = summary.get(f"daemon_{part}_us_per_req")
        if value is not None:
            metrics[f"{prefix}.{part}_us_per_req"] = us_metric(value)


def guest_metrics(guest: JsonDict) -> JsonDict:
    return {
        "guest_kicks_refused": metric(guest["kicks_refused"], "kicks", "lower"),
        "guest_poll_timeouts": metric(guest["poll_timeouts"], "waits", "lower"),
    }


# --------------------------------------------------------------------------
# latency
# --------------------------------------------------------------------------


def latency(t: Transport, args: Namespace, cpu: DaemonCpu) -> JsonDict:
    value = make_value(args.value_size)
    key = t.latency_key
    with t.probe(args, key, value) as probe:
        results = measure_ops(
            probe, ("read", "write"), key, value, cpu, args.iterations, args.warmup
        )
        counters = t.client_report(probe)
    metrics: JsonDict = {}
    for name, summary in results.items():
        op_metrics(metrics, name, summary)
    if "guest" in counters:
        metrics.update(guest_metrics(counters["guest"]))
    return {
        "params": {
            "iterations": args.iterations,
            "warmup": args.warmup,
            "value_size": args.value_size,
            **t.client_params(args),
        },
        "results": results,
        **counters,
        "metrics": metrics,
    }


# --------------------------------------------------------------------------
# scaling (xsload.py's idle)
# --------------------------------------------------------------------------


def scaling(t: Transport, args: Namespace, cpu: DaemonCpu) -> JsonDict:
    counts = sorted(set(args.idle))
    value = make_value(args.value_size)
    key = t.scaling_key
    ops = ["read", "write"] if args.write else ["read"]
    results: list[JsonDict] = []
    with t.idle_pool(args, counts) as pool, t.probe(args, key, value) as probe:
        for n in counts:
            have, setup = pool.grow(n)
            entry: JsonDict = {"idle": have, "setup_s": setup}
            budget = (args.budget, args.min_iterations)
            entry.update(
                measure_ops(probe, ops, key, value, cpu, args.iterations, args.warmup, *budget)
            )
            entry.update(t.client_report(probe))
            results.append(entry)
            progress(
                args,
                f"scaling: N={have} ({len(results)}/{len(counts)}): set up in {setup:.1f} s, "
                + ", ".join(f"{op.upper()} median {fmt(entry[op]['median_us'])} µs" for op in ops),
            )
    base = results[0]
    metrics: JsonDict = {}
    for entry in results:
        for name in ops:
            s = entry[name]
            for stat in ("median_us", "p99_us"):
                s[f"ratio_{stat[:-3]}"] = s[stat] / base[name][stat]
            prefix = f"N={entry['idle']}.{name}"
            op_metrics(metrics, prefix, s)
            if entry is not base:
                metrics[f"{prefix}.median_ratio"] = metric(s["ratio_median"], "x N0", "lower")
        if "guest" in entry:
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
            "value_size": args.value_size,
            "write": args.write,
            **t.scaling_params(args, counts),
            **t.client_params(args),
        },
        "results": results,
        "metrics": metrics,
    }


# --------------------------------------------------------------------------
# throughput
# --------------------------------------------------------------------------


def request_maker(
    key: str, value: bytes, read_fraction: float, result: LoadResult
) -> Callable[[], bytes]:
    """The closed loop's next request: an evenly spread READ/WRITE mix of ``key``."""
    read_body = path_arg(key)
    write_body = write_arg(key, value)
    read_len, write_len = len(read_body), len(write_body)
    pack = HEADER.pack
    ops = op_sequence(read_fraction)
    req_id = 0

    def next_request() -> bytes:
        nonlocal req_id
        req_id += 1
        if next(ops):
            result.reads += 1
            return pack(XS_READ, req_id, 0, read_len) + read_body
        result.writes += 1
        return pack(XS_WRITE, req_id, 0, write_len) + write_body

    return next_request


def throughput_worker(
    t: Transport,
    args: Namespace,
    index: int,
    share: Share,
    barriers: Sequence[Barrier],
    results: Queue[LoadResult],
) -> None:
    """One worker process (see procs.run_workers): its clients in a closed loop."""
    result = LoadResult(index)
    *ready, start, end = barriers
    try:
        key = t.throughput_key.format(index=index)
        value = make_value(args.value_size)
        with t.load(args, share, ready, key, value) as load:
            next_request = request_maker(key, value, args.read_fraction, result)
            start.wait()
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            load.closed_loop(t0 + args.seconds, args.pipeline, next_request, result)
            result.elapsed = time.perf_counter() - t0
            result.cpu = time.process_time() - cpu0
            load.tally(result)
            end.wait()
    except Exception as exc:  # reported to the parent, which fails the run
        result.failure = f"{type(exc).__name__}: {exc}"
        for barrier in barriers:
            barrier.abort()
    results.put(result)


def throughput_row(clients: int, shares: list[Share], phase: Phase[LoadResult]) -> JsonDict:
    workers = phase.workers
    wall = phase.wall
    completed = sum(w.completed for w in workers)
    domids = [d for share in shares for d in share]
    head: JsonDict = {"guests": len(domids), "domids": [domids[0], domids[-1]]} if domids else {}
    guest: JsonDict = {}
    for w in workers:
        for name, n in w.guest.items():
            guest[name] = guest.get(name, 0) + n
    tail: JsonDict = (
        {"guest": guest}
        if guest
        else {
            "reads": sum(w.reads for w in workers),
            "writes": sum(w.writes for w in workers),
            "per_client_req_per_s": [
                w.completed / w.elapsed if w.elapsed else 0.0
                for w in sorted(workers, key=lambda w: w.index)
            ],
        }
    )
    return {
        "clients": clients,
        **head,
        "requests": completed,
        "errors": sum(w.errors for w in workers),
        "wall_s": wall,
        "req_per_s": completed / wall if wall > 0 else math.nan,
        "daemon_cpu_us_per_req": cpu_per_request_us(phase.cpu_before, phase.cpu_after, completed),
        "daemon_cpu_busy": phase.daemon_busy(),
        "client_cpu_busy": sum(w.cpu for w in workers) / wall / load_cores() if wall > 0 else None,
        **tail,
    }


def process_throughput_rows(t: Transport, args: Namespace, cpu: DaemonCpu) -> list[JsonDict]:
    """The throughput rows with one client worker process per K (the default load)."""
    results: list[JsonDict] = []
    with t.load_session(args) as session:
        for k in args.clients:
            shares = session.shares(k)
            phase: Phase[LoadResult] = run_workers(
                throughput_worker,
                [(t, args, i, share) for i, share in enumerate(shares)],
                cpu,
                args.seconds,
                t.words.worker,
                session.setup(),
            )
            session.cleanup()
            phase.check(k, f"throughput with {k} {t.group_noun}")
            results.append(throughput_row(k, shares, phase))
            progress(
                args,
                f"throughput: K={k} ({len(results)}/{len(args.clients)}): "
                f"{fmt(results[-1]['req_per_s'], 0)} req/s",
            )
    return results


def native_throughput_row(t: Transport, args: Namespace, k: int, cpu: DaemonCpu) -> JsonDict:
    """One K of ``--native``: the K connections held by the compiled generator (sockets
    only; see xsbench/native.py), as a worker-process row plus ``native``. Each
    connection counts as a worker; the generator's CPU time is shared out evenly."""
    key = t.throughput_key
    if not key.endswith("{index}"):
        raise ValueError(f"--native needs a key ending in the client's number, not {key!r}")
    run = native.run(
        args.socket,
        key.removesuffix("{index}"),
        k,
        args.seconds,
        args.pipeline,
        args.read_fraction,
        args.value_size,
        cpu,
    )
    phase: Phase[LoadResult] = Phase(
        workers=[
            LoadResult(
                i, c["completed"], c["reads"], c["writes"], c["errors"], run.wall, run.load_cpu / k
            )
            for i, c in enumerate(run.clients)
        ],
        wall=run.wall,
        cpu_before=run.cpu_before,
        cpu_after=run.cpu_after,
        failure=run.failure,
    )
    phase.check(k, f"throughput with {k} {t.group_noun}")
    row = throughput_row(k, [()] * k, phase)
    row["native"] = True
    progress(args, f"throughput (native): K={k}: {fmt(row['req_per_s'], 0)} req/s")
    return row


def throughput(t: Transport, args: Namespace, cpu: DaemonCpu) -> JsonDict:
    if not 0.0 <= args.read_fraction <= 1.0:
        raise ValueError("--read-fraction must be between 0 and 1")
    is_native = bool(getattr(args, "native", False))
    if is_native:
        results = [native_throughput_row(t, args, k, cpu) for k in args.clients]
    else:
        results = process_throughput_rows(t, args, cpu)
    metrics: JsonDict = {}
    for r in results:
        k = r["clients"]
        metrics[f"K={k}.req_per_s"] = metric(r["req_per_s"], "req/s", "higher")
        if r["daemon_cpu_us_per_req"] is not None:
            metrics[f"K={k}.cpu_us_per_req"] = us_metric(r["daemon_cpu_us_per_req"])
        if "guest" not in r and not is_native:
            continue
        # Daemon busy about 100 %: the daemon is the bottleneck; client: the load is.
        for name, share, better in (
            ("daemon", r["daemon_cpu_busy"], "higher"),
            ("client", r["client_cpu_busy"], "lower"),
        ):
            if share is not None:
                metrics[f"K={k}.{name}_busy_pct"] = metric(100 * share, "%", better)
        if "guest" in r:
            metrics[f"K={k}.guest_kicks_refused"] = metric(
                r["guest"]["kicks_refused"], "kicks", "lower"
            )
    return {
        "params": {
            "clients": args.clients,
            **t.load_params(args),
            "seconds": args.seconds,
            "pipeline": args.pipeline,
            "read_fraction": args.read_fraction,
            "value_size": args.value_size,
            "load_cores": load_cores(),
            "native": is_native,
            **t.client_params(args),
        },
        "results": results,
        "metrics": metrics,
    }


# --------------------------------------------------------------------------
# Command line: xsload.py and rings.py, WORKLOAD subcommands over one transport
# --------------------------------------------------------------------------


def build_parser(t: Transport) -> ArgumentParser:
    parser = ArgumentParser(description=t.description, epilog="See benchmarks/README.md.")
    cli.add_common_arguments(parser, with_defaults=True)
    t.add_common_arguments(parser, with_defaults=True)
    sub = parser.add_subparsers(dest="workload", required=True, metavar="WORKLOAD")
    for name, (function, help_text) in t.workloads.items():
        workload_parser = sub.add_parser(name, help=help_text, description=help_text)
        cli.add_common_arguments(workload_parser, with_defaults=False)
        t.add_common_arguments(workload_parser, with_defaults=False)
        cli.add_value_size(workload_parser)
        t.add_client_arguments(workload_parser)
        cli.BLOCKS[function](workload_parser, t.words)
        t.add_arguments(workload_parser, function)
    return parser


def main(t: Transport, argv: Sequence[str] | None = None) -> int:
    parser = build_parser(t)
    args = parser.parse_args(argv)
    if not args.socket:
        parser.error("--socket is required")
    extra = t.prepare(args, parser)
    run, show, _ = bind(t)[args.workload]
    run_and_report(t.tool, args.workload, t.where(args), args, run, show, extra)
    return 0


FUNCTIONS = {"latency": latency, "throughput": throughput, "scaling": scaling}
SHOW: dict[str, report.Show] = {
    "latency": report.print_latency,
    "throughput": report.print_throughput,
    "scaling": report.print_scaling,
}
