#!/usr/bin/env python3
"""A daemon's memory per node: RSS growth while a tree is written, any daemon, over its socket.

    python benchmarks/memory.py                                   # pyxenstored vs C, 100k nodes
    python benchmarks/memory.py --daemon cxenstored --daemon oxenstored --daemon pyxenstored \\
        --cases nodes,domains --nodes 100000,1000000 --runs 3 --json /tmp/memory.json

Every daemon is started fresh for every run of every case (compare.py's presets and
``NAME=TEMPLATE`` daemons, see benchmarks/README.md), the runs are interleaved (for run:
for case: for daemon), and the daemon's memory is read from ``/proc/PID/status`` just
before the case writes anything (after one request has been answered) and again after
the last reply (and a DIRECTORY round trip, so that everything is settled):

* ``nodes`` (``--nodes N``, a list): dom0 WRITEs N nodes with ``--value-size``-byte
  values (16 by default), 1000 per directory: ``/bench/memory/d<j>/n<i>``. With
  ``--names unique`` (the default) every node's name is its own number ``n<i>``; with
  ``--names repeated`` the names ``k0..k999`` repeat in every directory, as the names
  of a real tree do (``state``, ``backend``, ``0``...). The directories are counted
  as nodes (N/1000 of them).
* ``domains``: ``--domains`` (1000) domains' homes ``/local/domain/<D>``, each created by
  dom0 and given to the domain (SET_PERMS ``n<D>``), then ``--per-domain`` (150) nodes in
  each, named as a guest's home is (``name``, ``memory/target``,
  ``device/vif/0/state``, ..., then ``data/k<i>``), and one WATCH per domain on its
  home, from one socket connection per domain, which stays open (C xenstored and
  oxenstored under ``peer.sh`` make every socket dom0's, so these are privileged
  connections standing in for the domains' rings; the nodes are written over dom0's
  connection, the watches' connections send only their WATCH).

Every value is ``--value-size`` bytes. With ``--values same`` (the default, as every
figure in RESULTS.md before this option) all of them are equal; with ``--values
distinct`` each is its own (the writes' counter in hex): a daemon that shares equal
values pays for every one there.

Reported per daemon and case: ``VmRSS`` before and after, the growth per node written
(``B/node``), and the same for ``RssAnon`` (anonymous memory only: without file
mappings, such as pyxenstored's mapped crash journal). With several runs each cell is
the median, with the spread. Writes are pipelined (``--pipeline`` requests in flight on
one connection) so that a million nodes take minutes, not an hour.

Standard library only: this script imports nothing from ``pyxenstored``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xsbench.cli import int_list, positive_int
from xsbench.daemons import PRESETS, REPO, DaemonSpec, parse_daemon, start_daemon, stop_daemon
from xsbench.measure import raise_nofile_limit
from xsbench.wire import (
    HEADER,
    XS_DIRECTORY,
    XS_ERROR,
    XS_SET_PERMS,
    XS_WATCH,
    XS_WATCH_EVENT,
    XS_WRITE,
    Connection,
    XsError,
    encode,
    error_name,
    path_arg,
    perms_arg,
    watch_arg,
    write_arg,
)

CASES = ("nodes", "domains")
#: A guest's home as a toolstack and the guest's drivers leave it (names that repeat in
#: every domain, as on a host); the rest of ``--per-domain`` is ``data/k<i>``.
HOME_KEYS = (
    "name",
    "domid",
    "vm",
    "memory/static-max",
    "memory/target",
    "memory/videoram",
    "cpu/0/availability",
    "cpu/1/availability",
    "store/port",
    "store/ring-ref",
    "console/port",
    "console/ring-ref",
    "console/type",
    "console/limit",
    "control/shutdown",
    "control/feature-poweroff",
    "control/feature-reboot",
    "control/feature-suspend",
    "control/platform-feature-multiprocessor-suspend",
    "control/platform-feature-xs_reset_watches",
    "device/vbd/51712/backend",
    "device/vbd/51712/backend-id",
    "device/vbd/51712/state",
    "device/vbd/51712/virtual-device",
    "device/vbd/51712/device-type",
    "device/vbd/51712/ring-ref",
    "device/vbd/51712/event-channel",
    "device/vbd/51712/protocol",
    "device/vif/0/backend",
    "device/vif/0/backend-id",
    "device/vif/0/state",
    "device/vif/0/handle",
    "device/vif/0/mac",
    "device/vif/0/tx-ring-ref",
    "device/vif/0/rx-ring-ref",
    "device/vif/0/event-channel",
    "device/vif/0/request-rx-copy",
    "device/vif/0/feature-rx-notify",
    "data/updated",
    "attr/os/name",
)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of a process, in KiB (from /proc/PID/status)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(rest.split()[0])
    return out


def home_paths(domid: int, count: int) -> list[str]:
    """The ``count`` nodes of one domain's home, as absolute paths."""
    keys = list(HOME_KEYS[:count]) + [f"data/k{i}" for i in range(count - len(HOME_KEYS))]
    return [f"/local/domain/{domid}/{key}" for key in keys]


def value_maker(size: int, distinct: bool) -> Callable[[], bytes]:
    """A function giving each write its value: always the same, or each a new one."""
    same = b"v" * size
    if not distinct:
        return lambda: same
    written = 0

    def next_value() -> bytes:
        nonlocal written
        written += 1
        return (b"%0*x" % (size, written))[-size:] if size else b""

    return next_value


def pipelined(conn: Connection, messages: Iterator[tuple[int, bytes]], depth: int) -> int:
    """Send every (type, payload) with ``depth`` requests in flight; RuntimeError on the
    first error reply. Returns how many were sent."""
    sent = 0
    batch: list[bytes] = []
    for msg_type, payload in messages:
        batch.append(encode(msg_type, conn.next_id(), payload))
        if len(batch) == depth:
            sent += flush(conn, batch)
            batch = []
    if batch:
        sent += flush(conn, batch)
    return sent


def flush(conn: Connection, batch: list[bytes]) -> int:
    conn.sock.sendall(b"".join(batch))
    for _ in batch:
        while True:
            reply = conn.receive()
            if reply.type != XS_WATCH_EVENT:
                break
        if reply.type == XS_ERROR:
            first = HEADER.unpack_from(batch[0])
            raise RuntimeError(f"error reply {error_name(reply.payload)} (batch from {first})")
    return len(batch)


def progress(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


@dataclass
class Sample:
    """One run of one case on one daemon."""

    daemon: str
    case: str
    nodes: int
    before: dict[str, int]
    after: dict[str, int]
    seconds: float
    extra: dict[str, object] = field(default_factory=dict)

    def per_node(self, key: str) -> float:
        return (self.after[key] - self.before[key]) * 1024 / self.nodes


def run_nodes(
    conn: Connection, count: int, value: Callable[[], bytes], names: str, depth: int, quiet: bool
) -> int:
    """Write ``count`` nodes (and their directories); the nodes created."""

    def messages() -> Iterator[tuple[int, bytes]]:
        for i in range(count):
            name = f"n{i}" if names == "unique" else f"k{i % 1000}"
            yield XS_WRITE, write_arg(f"/bench/memory/d{i // 1000}/{name}", value())
            if not quiet and i and i % 100000 == 0:
                progress(quiet, f"    {i} nodes written")

    pipelined(conn, messages(), depth)
    return count + (count + 999) // 1000


def run_domains(
    sock: str,
    conn: Connection,
    domains: int,
    per_domain: int,
    value: Callable[[], bytes],
    depth: int,
    watchers: list[Connection],
) -> int:
    """Homes, their nodes and one watching connection per domain; the nodes created."""

    def messages() -> Iterator[tuple[int, bytes]]:
        for d in range(1, domains + 1):
            home = f"/local/domain/{d}"
            yield XS_WRITE, write_arg(home, b"")
            yield XS_SET_PERMS, perms_arg(home, [f"n{d}"])
            for path in home_paths(d, per_domain):
                yield XS_WRITE, write_arg(path, value())

    pipelined(conn, messages(), depth)
    for d in range(1, domains + 1):
        watcher = Connection(sock)
        watcher.request(XS_WATCH, watch_arg(f"/local/domain/{d}", f"home{d}"))
        watchers.append(watcher)
    # Directories created on the way (memory/, device/vbd/51712/, ...) count as nodes.
    dirs = {p.rsplit("/", 1)[0] for p in home_paths(1, per_domain)} - {"/local/domain/1"}
    implicit = {"/local/domain/1"} | {
        "/".join(p.split("/")[: i + 1]) for p in dirs for i in range(4, p.count("/") + 1)
    }
    return domains * (per_domain + len(implicit))


def one_run(spec: DaemonSpec, case: str, size: int, args: argparse.Namespace) -> Sample:
    daemon = start_daemon(spec, [], args.shared, args.start_timeout)
    watchers: list[Connection] = []
    failed = True
    try:
        with Connection(str(daemon.socket)) as conn:
            conn.request(XS_DIRECTORY, path_arg("/"))
            time.sleep(args.settle)
            before = memory_kib(daemon.pid)
            t0 = time.monotonic()
            value = value_maker(args.value_size, args.values == "distinct")
            if case == "nodes":
                nodes = run_nodes(conn, size, value, args.names, args.pipeline, args.quiet)
            else:
                nodes = run_domains(
                    str(daemon.socket),
                    conn,
                    args.domains,
                    args.per_domain,
                    value,
                    args.pipeline,
                    watchers,
                )
            conn.request(XS_DIRECTORY, path_arg("/"))
            seconds = time.monotonic() - t0
            time.sleep(args.settle)
            after = memory_kib(daemon.pid)
        failed = False
        return Sample(spec.name, case, nodes, before, after, seconds)
    finally:
        for w in watchers:
            w.close()
        stop_daemon(daemon)
        if not failed and not args.keep:
            shutil.rmtree(daemon.run_dir, ignore_errors=True)


def label(case: str, size: int, args: argparse.Namespace) -> str:
    values = ", distinct values" if args.values == "distinct" else ""
    if case == "nodes":
        return f"nodes {size} ({args.names} names{values})"
    return f"domains {args.domains} x {args.per_domain} + watches{values}"


def summary(samples: list[Sample], daemons: list[str], baseline: str) -> str:
    keys: dict[str, None] = {}
    for s in samples:
        keys[str(s.extra["label"])] = None
    width = max(34, *(len(k) for k in keys))
    head = (
        f"{'case':<{width}} {'daemon':<22} {'nodes':>8} {'RSS MiB before':>14} "
        f"{'after':>8} {'B/node':>14} {'anon B/node':>12} {'÷' + baseline:>12}"
    )
    lines = [head, "-" * len(head)]
    for case in keys:
        medians: dict[str, float] = {}
        for name in daemons:
            mine = [s for s in samples if s.extra["label"] == case and s.daemon == name]
            if mine:
                medians[name] = statistics.median(s.per_node("VmRSS") for s in mine)
        for name in daemons:
            mine = [s for s in samples if s.extra["label"] == case and s.daemon == name]
            if not mine:
                continue
            rss = [s.per_node("VmRSS") for s in mine]
            anon = statistics.median(s.per_node("RssAnon") for s in mine)
            spread = f"{statistics.median(rss):.0f}"
            if len(rss) > 1:
                spread += f" [{min(rss):.0f}..{max(rss):.0f}]"
            ratio = f"{medians[name] / medians[baseline]:.2f}" if medians.get(baseline) else "-"
            lines.append(
                f"{case:<{width}} {name:<22} {mine[0].nodes:>8} "
                f"{statistics.median(s.before['VmRSS'] for s in mine) / 1024:>14.1f} "
                f"{statistics.median(s.after['VmRSS'] for s in mine) / 1024:>8.1f} "
                f"{spread:>14} {anon:>12.0f} {ratio:>12}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--daemon",
        action="append",
        help=f"a preset ({', '.join(PRESETS)}) or NAME=TEMPLATE; repeat it "
        "(default: cxenstored, pyxenstored)",
    )
    parser.add_argument("--baseline", help="the daemon ratios are to (default: the first)")
    parser.add_argument("--cases", default="nodes", help=f"comma-separated, of {CASES}")
    parser.add_argument("--nodes", type=int_list, default=[100000], help="e.g. 100000,1000000")
    parser.add_argument("--names", choices=("unique", "repeated"), default="unique")
    parser.add_argument("--value-size", type=int, default=16)
    parser.add_argument(
        "--values",
        choices=("same", "distinct"),
        default="same",
        help="equal values or each its own",
    )
    parser.add_argument("--domains", type=positive_int, default=1000)
    parser.add_argument("--per-domain", type=positive_int, default=150)
    parser.add_argument("--pipeline", type=positive_int, default=64, help="requests in flight")
    parser.add_argument("--runs", type=positive_int, default=1)
    parser.add_argument("--settle", type=float, default=0.5, help="seconds before reading RSS")
    parser.add_argument("--start-timeout", type=float, default=60.0)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--keep", action="store_true", help="keep the daemons' directories")
    parser.add_argument("--json", type=Path, help="write every sample to this file")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.case_names = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not args.case_names or any(c not in CASES for c in args.case_names):
        parser.error(f"--cases takes some of {', '.join(CASES)}")
    try:
        args.specs = [parse_daemon(d) for d in (args.daemon or ["cxenstored", "pyxenstored"])]
    except ValueError as exc:
        parser.error(str(exc))
    args.baseline = args.baseline or args.specs[0].name
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    runs: list[tuple[str, int]] = []
    for case in args.case_names:
        runs += [(case, n) for n in args.nodes] if case == "nodes" else [(case, 0)]
    samples: list[Sample] = []
    failures = []
    for run in range(args.runs):
        for case, size in runs:
            for spec in args.specs:
                what = label(case, size, args)
                progress(args.quiet, f"run {run + 1}/{args.runs}: {what}: {spec.name}")
                try:
                    sample = one_run(spec, case, size, args)
                except (RuntimeError, OSError, XsError) as exc:
                    failures.append(f"{spec.name} {what} run {run + 1}: {exc}")
                    progress(args.quiet, f"    failed: {exc}")
                    continue
                sample.extra["label"] = what
                samples.append(sample)
                progress(
                    args.quiet,
                    f"    {sample.nodes} nodes in {sample.seconds:.1f} s: "
                    f"{sample.per_node('VmRSS'):.0f} B/node RSS",
                )
    print(
        f"memory per node: value {args.value_size} B, {args.runs} run(s), "
        f"RSS from /proc/PID/status; baseline {args.baseline}"
    )
    print(summary(samples, [s.name for s in args.specs], args.baseline))
    for failure in failures:
        print(f"FAILED: {failure}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "params": {
                        k: v for k, v in vars(args).items() if k not in ("specs", "json", "shared")
                    },
                    "samples": [vars(s) for s in samples],
                },
                indent=1,
                default=str,
            )
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
