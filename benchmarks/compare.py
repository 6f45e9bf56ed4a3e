#!/usr/bin/env python3
"""Run the xsload workloads against several xenstore daemons side by side.

For every run and workload, each daemon is started fresh from its command
template, the load generator (xsload.py, in a separate process) is run
against it, and the daemon is killed again.  Daemons are interleaved
(A, B, A, B, ...) so that drift on a noisy machine hits all of them alike.
The summary gives, per metric, the median over the runs with its spread
(min-max) and the ratio of each daemon's median to the baseline daemon's.

    python benchmarks/compare.py --daemon cxenstored --daemon oxenstored --runs 3
    python benchmarks/compare.py --daemon cxenstored --daemon pyxenstored \\
        --workloads latency,idle --idle-args "--idle 0,1000,5000"
    python benchmarks/compare.py --daemon 'mine={repo}/.venv/bin/python -m pyxenstored -N \\
        --socket {dir}/socket' --daemon cxenstored --baseline cxenstored
    python benchmarks/compare.py --workloads bootstorm --daemon cxenstored \\
        --daemon pyxenstored --daemon pyxenstored-generation --bootstorm-args "--vms 200"

A daemon is a preset name (see PRESETS) or ``NAME=TEMPLATE``.  The template is
split like a shell command line, then ``{dir}`` (a fresh directory per run;
the daemon must serve ``{dir}/socket``), ``{repo}`` (this repository) and
``{shared}`` (the shared directory beside it, see --shared) are substituted.
It is run without a shell, and it must ``exec`` into the daemon so that the
process started is the daemon whose CPU time is measured.  See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bootstorm
import rings
import xsload
from xsbench.cli import positive_int
from xsbench.daemons import (
    DEFAULT_DAEMONS,
    PRESETS,
    REPO,
    DaemonSpec,
    RunningDaemon,
    parse_daemon,
    shutdown_metrics,
    start_daemon,
    stop_daemon,
)
from xsbench.measure import JsonDict
from xsbench.report import fmt, print_table

XSLOAD = Path(__file__).resolve().parent / "xsload.py"
RINGS = Path(__file__).resolve().parent / "rings.py"
BOOTSTORM = Path(__file__).resolve().parent / "bootstorm.py"

# Ring workloads (rings.py; *-rings daemons only): compare.py name -> rings.py workload.
RING_WORKLOADS = {f"ring-{name}": name for name in rings.WORKLOADS}
# bootstorm.py: N concurrent libxl-style VM starts (long: not in the default set).
BOOTSTORM_WORKLOAD = "bootstorm"
PARSERS: dict[Path, Callable[[], argparse.ArgumentParser]] = {
    XSLOAD: xsload.build_parser,
    RINGS: rings.build_parser,
    BOOTSTORM: bootstorm.build_parser,
}
WORKLOAD_NAMES = tuple(xsload.WORKLOADS) + tuple(RING_WORKLOADS) + (BOOTSTORM_WORKLOAD,)


@dataclass
class RunRecord:
    run: int
    workload: str
    daemon: str
    ok: bool
    seconds: float
    error: str | None = None
    report: JsonDict | None = None
    daemon_comm: str = ""


@dataclass
class Settings:
    daemons: list[DaemonSpec]
    baseline: str
    runs: int
    workloads: list[str]
    workload_args: dict[str, list[str]]
    daemon_prefix: list[str]
    load_prefix: list[str]
    shared: Path
    start_timeout: float
    run_timeout: float
    keep: bool
    records: list[RunRecord] = field(default_factory=list)


# --------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------


def load_command(workload: str) -> tuple[Path, list[str]]:
    """The load generator of a workload, and the subcommand before its options."""
    if workload == BOOTSTORM_WORKLOAD:  # no subcommand
        return BOOTSTORM, []
    if workload in RING_WORKLOADS:
        return RINGS, [RING_WORKLOADS[workload]]
    return XSLOAD, [workload]


def load_argv(settings: Settings, workload: str, daemon: RunningDaemon, result: Path) -> list[str]:
    script, subcommand = load_command(workload)
    return [
        *settings.load_prefix,
        sys.executable,
        str(script),
        "--socket",
        str(daemon.socket),
        "--daemon-pid",
        str(daemon.pid),
        "--json",
        str(result),
        "--quiet",
        *subcommand,
        *settings.workload_args[workload],
    ]


def measure(settings: Settings, workload: str, daemon: RunningDaemon) -> JsonDict:
    """Run xsload once against a running daemon; return its JSON report."""
    result = daemon.run_dir / f"{workload}.json"
    try:
        done = subprocess.run(
            load_argv(settings, workload, daemon, result),
            capture_output=True,
            text=True,
            timeout=settings.run_timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"load generator timed out after {settings.run_timeout:.0f} s") from None
    if daemon.proc.poll() is not None:
        # oxenstored exits with status 0 on SIGTERM: a status 0 here usually
        # means another program signalled it.
        raise RuntimeError(f"daemon exited during the run (status {daemon.proc.returncode})")
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"status {done.returncode}, no output"]
        raise RuntimeError(f"load generator failed: {lines[-1]}")
    report: JsonDict = json.loads(result.read_text())
    return report


def run_one(settings: Settings, run: int, workload: str, spec: DaemonSpec) -> RunRecord:
    """Start a fresh daemon, measure one workload, stop the daemon."""
    started = time.monotonic()
    record = RunRecord(run, workload, spec.name, ok=False, seconds=0.0)
    try:
        daemon = start_daemon(spec, settings.daemon_prefix, settings.shared, settings.start_timeout)
    except RuntimeError as exc:
        record.error = str(exc)
    else:
        record.daemon_comm = daemon.comm
        try:
            record.report = measure(settings, workload, daemon)
            record.ok = True
        except RuntimeError as exc:
            record.error = f"{exc}; kept {daemon.run_dir} (daemon.log)"
        finally:
            stop_daemon(daemon)
            if record.report is not None:
                record.report["metrics"].update(shutdown_metrics(daemon.run_dir / "daemon.log"))
            # Kept after a failure (the error names the directory) or with --keep.
            if record.error is None and not settings.keep:
                shutil.rmtree(daemon.run_dir, ignore_errors=True)
    record.seconds = time.monotonic() - started
    return record


def headline(record: RunRecord) -> str:
    """A short progress summary of one run."""
    if not record.ok or record.report is None:
        return f"FAILED: {record.error}"
    metrics = record.report["metrics"]
    picks = [
        name
        for name in metrics
        if name.endswith((".median_us", ".req_per_s")) and not name.startswith("N=0.")
    ]
    scaled = [int(n[2:].split(".", 1)[0]) for n in metrics if n.startswith("N=")]
    if scaled:  # idle / ring-scaling: the largest N, where a scanning daemon is slowest
        top = f"N={max(scaled)}."
        picks = [n for n in picks if n.startswith(top)] + [
            n for n in metrics if n.startswith(top) and n.endswith(".median_ratio")
        ]
    if record.workload == BOOTSTORM_WORKLOAD:
        picks = ["wall_s", "eagain", "req_per_s", "vm_latency.p95_s"]
    shown = ", ".join(f"{n} {fmt(metrics[n]['value'])}" for n in picks[:4])
    return f"{shown}  [{record.seconds:.1f} s, pid comm {record.daemon_comm or '?'}]"


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------


def summarize(settings: Settings) -> JsonDict:
    """Per workload and metric: each daemon's median, min, max and ratio to the baseline."""
    summary: JsonDict = {}
    for workload in settings.workloads:
        per_metric: dict[str, JsonDict] = {}
        for record in settings.records:
            if record.workload != workload or not record.ok or record.report is None:
                continue
            for name, m in record.report["metrics"].items():
                if m["value"] is None:
                    continue
                entry = per_metric.setdefault(
                    name, {"unit": m["unit"], "better": m["better"], "daemons": {}}
                )
                entry["daemons"].setdefault(record.daemon, []).append(m["value"])
        for entry in per_metric.values():
            stats: dict[str, JsonDict] = {}
            for daemon, values in entry["daemons"].items():
                median = statistics.median(values)
                stats[daemon] = {
                    "values": values,
                    "n": len(values),
                    "median": median,
                    "min": min(values),
                    "max": max(values),
                    "spread_pct": (max(values) - min(values)) / median * 100 if median else None,
                }
            base = stats.get(settings.baseline)
            for s in stats.values():
                s["ratio"] = s["median"] / base["median"] if base and base["median"] else None
            entry["daemons"] = stats
        summary[workload] = per_metric
    return summary


def fmt_ratio(ratio: float | None) -> str:
    """A ratio with two decimals, or two significant digits when it is small."""
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def print_summary(settings: Settings, summary: JsonDict) -> None:
    names = [d.name for d in settings.daemons]
    print()
    print(
        f"Medians over {settings.runs} run(s) per daemon, [min..max], and ratio to "
        f"{settings.baseline} (÷{settings.baseline}).  ↓ lower is better, ↑ higher is better."
    )
    for workload, per_metric in summary.items():
        print()
        print(f"== {workload} ==")
        if not per_metric:
            print("(no successful runs)")
            continue
        headers = ["metric"]
        for name in names:
            headers += [name, f"÷{settings.baseline}"]
        rows = []
        for metric_name, entry in per_metric.items():
            arrow = "↓" if entry["better"] == "lower" else "↑"
            row = [f"{metric_name} ({entry['unit']}) {arrow}"]
            for name in names:
                s = entry["daemons"].get(name)
                if s is None:
                    row += ["-", "-"]
                    continue
                digits = 0 if s["median"] >= 1000 else 1 if s["median"] >= 10 else 2
                cell = (
                    f"{fmt(s['median'], digits)} [{fmt(s['min'], digits)}..{fmt(s['max'], digits)}]"
                )
                if s["n"] < settings.runs:
                    cell += f" n={s['n']}"
                row += [cell, fmt_ratio(s["ratio"])]
            rows.append(row)
        print_table(headers, rows)
    failures = [r for r in settings.records if not r.ok]
    if failures:
        print()
        print(f"{len(failures)} run(s) failed:")
        for r in failures:
            print(f"  run {r.run} {r.workload} {r.daemon}: {r.error}")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def daemon_arg(text: str) -> DaemonSpec:
    try:
        return parse_daemon(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cpu_list(text: str) -> set[int]:
    """The CPUs of a taskset-style list such as ``0``, ``0,2`` or ``2-3``."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compare xenstore daemons with xsload workloads, interleaved runs.",
        epilog=f"Presets: {'; '.join(f'{k} = {v}' for k, v in PRESETS.items())}. "
        "See benchmarks/README.md.",
    )
    parser.add_argument(
        "--daemon",
        dest="daemons",
        action="append",
        type=daemon_arg,
        metavar="SPEC",
        help="a preset name or NAME=TEMPLATE (repeat; default: cxenstored and oxenstored)",
    )
    parser.add_argument(
        "--baseline", help="daemon the ratios are relative to (default: the first one)"
    )
    parser.add_argument("--runs", type=positive_int, default=3, help="runs per daemon (default 3)")
    parser.add_argument(
        "--workloads",
        default=",".join(
            w for w in WORKLOAD_NAMES if w not in RING_WORKLOADS and w != BOOTSTORM_WORKLOAD
        ),
        help=f"comma-separated workloads of {','.join(WORKLOAD_NAMES)} "
        "(default: all but ring-* and bootstorm)",
    )
    for workload in WORKLOAD_NAMES:
        parser.add_argument(
            f"--{workload}-args",
            default="",
            metavar="ARGS",
            help=f"extra xsload options for {workload}, one string, e.g. "
            + {
                "latency": '"--iterations 5000"',
                "throughput": '"--clients 1,4 --seconds 2 --pipeline 4"',
                "idle": '"--idle 0,1000,5000 --budget 3"',
                "ring-latency": '"--iterations 5000"',
                "ring-throughput": '"--clients 1,4,16 --guests 2 --seconds 3"',
                "ring-scaling": '"--idle 0,100,1000 --write"',
                "bootstorm": '"--vms 200 --timeout 300" (bootstorm.py --help)',
            }[workload],
        )
    parser.add_argument("--daemon-cpus", default="1", help="taskset CPU list for the daemon")
    parser.add_argument("--load-cpus", default="0", help="taskset CPU list for the load")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--shared",
        type=Path,
        default=REPO.parent / "shared",
        help="the shared directory for {shared} (default: beside the repository)",
    )
    parser.add_argument(
        "--start-timeout", type=float, default=30.0, help="seconds to wait for the socket"
    )
    parser.add_argument(
        "--run-timeout", type=float, default=900.0, help="seconds allowed for one load run"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep each run's directory (daemon log, JSON)"
    )
    parser.add_argument("--json", metavar="FILE", help="write all raw results and the summary")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress lines (one per run) on stderr"
    )
    return parser


def make_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    daemons: list[DaemonSpec] = args.daemons or [parse_daemon(n) for n in DEFAULT_DAEMONS]
    names = [d.name for d in daemons]
    if len(set(names)) != len(names):
        parser.error(f"daemon names must be unique: {names}")
    baseline = args.baseline or names[0]
    if baseline not in names:
        parser.error(f"--baseline {baseline} is not one of {names}")
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOAD_NAMES:
            parser.error(f"unknown workload {w!r} (choose from {', '.join(WORKLOAD_NAMES)})")
    workload_args: dict[str, list[str]] = {}
    for w in workloads:
        extra = shlex.split(getattr(args, f"{w.replace('-', '_')}_args"))
        script, subcommand = load_command(w)
        check = PARSERS[script]()
        try:
            check.parse_args(["--socket", "/dev/null", *subcommand, *extra])
        except SystemExit:
            parser.error(f"bad --{w}-args: {shlex.join(extra)}")
        workload_args[w] = extra
    daemon_prefix: list[str] = []
    load_prefix: list[str] = []
    if not args.no_pin:
        if shutil.which("taskset") is None:
            print("note: taskset not found; daemon and load are not pinned", file=sys.stderr)
        else:
            available = os.sched_getaffinity(0)
            for option, cpus in (
                ("--daemon-cpus", args.daemon_cpus),
                ("--load-cpus", args.load_cpus),
            ):
                try:
                    wanted = cpu_list(cpus)
                except ValueError:
                    parser.error(f"{option}: bad CPU list {cpus!r}")
                if not wanted <= available:
                    parser.error(
                        f"{option} {cpus}: CPUs {sorted(wanted - available)} are not available "
                        f"(have {sorted(available)}); choose others or use --no-pin"
                    )
            daemon_prefix = ["taskset", "-c", args.daemon_cpus]
            load_prefix = ["taskset", "-c", args.load_cpus]
    return Settings(
        daemons=daemons,
        baseline=baseline,
        runs=args.runs,
        workloads=workloads,
        workload_args=workload_args,
        daemon_prefix=daemon_prefix,
        load_prefix=load_prefix,
        shared=args.shared.resolve(),
        start_timeout=args.start_timeout,
        run_timeout=args.run_timeout,
        keep=args.keep,
    )


def progress(quiet: bool, text: str, end: str = "\n") -> None:
    """One progress line (or its start) on stderr, unless --quiet."""
    if not quiet:
        print(text, end=end, file=sys.stderr, flush=True)


def exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit so that the running daemon is stopped on the way out."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = make_settings(args, parser)
    for spec in settings.daemons:
        argv = settings.daemon_prefix + spec.argv(Path("{dir}"), settings.shared)
        print(f"{spec.name}: {shlex.join(argv)}")
    scripts = "xsload.py/rings.py" if set(settings.workloads) & set(RING_WORKLOADS) else "xsload.py"
    if BOOTSTORM_WORKLOAD in settings.workloads:
        scripts += "/bootstorm.py"
    print(
        f"load: {shlex.join(settings.load_prefix) or '(unpinned)'} {scripts}; "
        f"{settings.runs} run(s) of {', '.join(settings.workloads)}, interleaved"
    )
    total = settings.runs * len(settings.workloads) * len(settings.daemons)
    started = time.monotonic()
    try:
        for run in range(1, settings.runs + 1):
            for workload in settings.workloads:
                for spec in settings.daemons:
                    # Progress on stderr (stdout is the report): what runs now, then its
                    # headline, the count over the whole session and the time so far.
                    done = len(settings.records)
                    progress(
                        args.quiet,
                        f"[{done + 1}/{total}] run {run}/{settings.runs} {workload:<10} "
                        f"{spec.name:<12} ",
                        end="",
                    )
                    record = run_one(settings, run, workload, spec)
                    settings.records.append(record)
                    elapsed = time.monotonic() - started
                    minutes, seconds = divmod(int(elapsed), 60)
                    progress(args.quiet, f"{headline(record)}  {minutes}:{seconds:02d} elapsed")
    except KeyboardInterrupt:
        print("\ninterrupted; summarising the runs done so far", file=sys.stderr)
    summary = summarize(settings)
    print_summary(settings, summary)
    if args.json:
        document = {
            "tool": "xsload-compare",
            "format": 1,
            "host": {
                "machine": platform.machine(),
                "kernel": platform.release(),
                "cpus": os.cpu_count(),
                "hostname": socket.gethostname(),
            },
            "daemons": {d.name: d.template for d in settings.daemons},
            "baseline": settings.baseline,
            "runs": settings.runs,
            "workload_args": settings.workload_args,
            "daemon_prefix": settings.daemon_prefix,
            "load_prefix": settings.load_prefix,
            "records": [vars(r) for r in settings.records],
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 1 if any(not r.ok for r in settings.records) else 0


if __name__ == "__main__":
    sys.exit(main())
