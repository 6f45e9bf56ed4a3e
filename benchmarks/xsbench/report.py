"""Reports: the JSON header every tool writes, metrics, and the plain-text tables."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from xsbench.measure import DaemonCpu, JsonDict

#: a workload: it runs against the daemon and returns the report's body
Run = Callable[[argparse.Namespace, DaemonCpu], JsonDict]
#: prints a report as tables
Show = Callable[[JsonDict], None]


def metric(value: float | None, unit: str, better: str) -> JsonDict:
    """One entry of a report's flat ``metrics`` map (what compare.py aggregates)."""
    return {"value": value, "unit": unit, "better": better}


def us_metric(value: float | None) -> JsonDict:
    return metric(value, "us", "lower")


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def fmt_pct(share: float | None) -> str:
    """A share (0.93) as a whole percentage (93)."""
    return fmt(None if share is None else 100 * share, 0)


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


def run_and_report(
    tool: str,
    workload: str,
    where: str,
    args: argparse.Namespace,
    run: Run,
    show: Show,
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


# --------------------------------------------------------------------------
# The tables of the latency, throughput and scaling workloads
# --------------------------------------------------------------------------


def print_guest(guest: JsonDict, where: str) -> None:
    print(f"{where}{guest['kicks_refused']} kicks refused, {guest['poll_timeouts']} poll timeouts")


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
    if "guest" in report:  # rings
        print_guest(report["guest"], "guest: ")


def print_throughput(report: JsonDict) -> None:
    p = report["params"]
    rings = "guests_per_client" in p
    headers = ["K", "guests"] if rings else ["K"]
    headers += ["req/s", "requests", "daemon CPU µs/req", "daemon busy %", "client busy %"]
    if rings:
        headers += ["kicks refused", "poll timeouts"]
    rows = []
    for r in report["results"]:
        row = [str(r["clients"])] + ([str(r["guests"])] if rings else [])
        row += [
            fmt(r["req_per_s"], 0),
            str(r["requests"]),
            fmt(r["daemon_cpu_us_per_req"], 2),
            fmt_pct(r["daemon_cpu_busy"]),
            fmt_pct(r["client_cpu_busy"]),
        ]
        if rings:
            row += [str(r["guest"]["kicks_refused"]), str(r["guest"]["poll_timeouts"])]
        rows.append([*row, str(r["errors"])])
    print(
        (f"{p['guests_per_client']} guest(s) per process, " if rings else "")
        + f"pipeline depth {p['pipeline']}{' per ring' if rings else ''}, "
        f"READ share {p['read_fraction']:.2f}, {p['seconds']} s per K, load on "
        f"{p['load_cores']} core(s)"
    )
    print_table([*headers, "errors"], rows)


def print_scaling(report: JsonDict) -> None:
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
    for entry in report["results"]:  # rings
        g = entry.get("guest")
        if g and (g["kicks_refused"] or g["poll_timeouts"]):
            print_guest(g, f"N={entry['idle']}: ")
