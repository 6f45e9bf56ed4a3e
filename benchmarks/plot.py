#!/usr/bin/env python3
"""PNG plots of pyxenstored beside C xenstored and oxenstored (issue 10 item 6).

Three figures, each made from the ``--json`` document of one or two ``compare.py``
sessions (fresh daemon per run, daemons interleaved, daemon and load pinned):

* ``idle.png``: READ (and WRITE) latency, median and p99, against the number of idle
  socket connections that each hold a watch (xsload.py ``idle``): C xenstored,
  oxenstored, pyxenstored.
* ``rings.png``: the same against the number of idle introduced domains on simulated
  rings (rings.py ``scaling``): C xenstored under ``reference/rings.sh`` and
  pyxenstored with ``--sim-xen``.  oxenstored has no simulated rings here.
* ``bootstorm.png``: wall time and per-VM start latency (median, p95) of concurrent
  libxl-style VM starts (bootstorm.py), for each VM count, the three daemons.

    python benchmarks/plot.py                    # run the sessions, then plot (make plots)
    python benchmarks/plot.py --from-json        # re-plot the JSON already in --out
    python benchmarks/plot.py --figures idle --runs 3 --out /tmp/plots

The sessions' JSON is kept beside the PNGs (``idle.json``, ``rings.json``,
``bootstorm-50.json``, ...), so a figure can be redrawn, or its numbers read, without
running anything.  Points are the median over the runs; the shaded band or error bar
is the range [min..max] of the runs.  Each figure's footnote gives the runs, the
workload's options, the date and the machine's load average during the runs.

matplotlib is needed only here: ``pip install -e '.[bench]'`` (``make plots`` does it).
Everything but the drawing (the runs and reading the JSON) uses the standard library.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsbench.measure import JsonDict

HERE = Path(__file__).resolve().parent
COMPARE = HERE / "compare.py"
DEFAULT_OUT = HERE / "plots"

#: how each compare.py daemon name is labelled, and its colour (one per daemon family)
LABELS = {
    "cxenstored": "C xenstored",
    "cxenstored-rings": "C xenstored (rings.sh)",
    "oxenstored": "oxenstored",
    "pyxenstored": "pyxenstored",
    "pyxenstored-rings": "pyxenstored (--sim-xen)",
}
COLOURS = {"cxenstored": "tab:blue", "oxenstored": "tab:orange", "pyxenstored": "tab:green"}
MARKERS = {"cxenstored": "s", "oxenstored": "^", "pyxenstored": "o"}


@dataclass(frozen=True)
class Session:
    """One compare.py session behind a figure: its daemons, workload and options."""

    name: str  # the JSON file's stem
    daemons: tuple[str, ...]
    workload: str
    args: str  # the workload's options (compare.py --WORKLOAD-args)
    runs: int  # the default number of runs (--runs overrides it)


#: what ``make plots`` runs (about 12 minutes on the 2-core development machine)
SESSIONS: dict[str, tuple[Session, ...]] = {
    "idle": (
        Session(
            "idle",
            ("cxenstored", "oxenstored", "pyxenstored"),
            "idle",
            "--idle 0,500,1000,2000,5000 --write --iterations 2000 --min-iterations 100 --budget 2",
            3,
        ),
    ),
    "rings": (
        Session(
            "rings",
            ("cxenstored-rings", "pyxenstored-rings"),
            "ring-scaling",
            "--idle 0,100,250,500,1000 --write --iterations 2000 --min-iterations 100 --budget 2",
            3,
        ),
    ),
    # Without the backend watcher: oxenstored stalls with one (benchmarks/RESULTS.md,
    # "Bootstorm"), and issue 10's bootstorm target is the run without it.
    "bootstorm": tuple(
        Session(
            f"bootstorm-{vms}",
            ("cxenstored", "oxenstored", "pyxenstored"),
            "bootstorm",
            f"--vms {vms} --no-backend-watcher --timeout 240",
            runs,
        )
        for vms, runs in ((50, 3), (200, 3))
    ),
}


class MissingMatplotlib(RuntimeError):
    pass


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display).

    Imported by name at run time: matplotlib is an optional extra (``bench``), so the
    type checker of ``make test`` must not need it; the drawing code is typed ``Any``.
    """
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise MissingMatplotlib(
            "matplotlib is missing; it is not a dependency of the daemon: install the "
            "'bench' extra (.venv/bin/pip install -e '.[bench]', or run `make plots`)"
        ) from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


# --------------------------------------------------------------------------
# Reading compare.py's JSON (standard library only)
# --------------------------------------------------------------------------


def family(daemon: str) -> str:
    """``cxenstored-rings`` -> ``cxenstored``: colours and markers go by family."""
    return daemon.split("-", 1)[0]


def label(daemon: str) -> str:
    return LABELS.get(daemon, daemon)


@dataclass(frozen=True)
class Point:
    x: float
    median: float
    low: float
    high: float
    n: int


def metric_stats(doc: JsonDict, workload: str, metric: str) -> dict[str, JsonDict]:
    """Per daemon: compare.py's summary of one metric (median, min, max, n)."""
    per_metric: JsonDict = doc.get("summary", {}).get(workload, {})
    entry = per_metric.get(metric)
    return {} if entry is None else dict(entry["daemons"])


def scaling_series(doc: JsonDict, workload: str, op: str, stat: str) -> dict[str, list[Point]]:
    """Per daemon, the points (idle N, latency µs) of ``N=<N>.<op>.<stat>`` metrics."""
    pattern = re.compile(rf"N=(\d+)\.{re.escape(op)}\.{re.escape(stat)}")
    series: dict[str, list[Point]] = {}
    for name in doc.get("summary", {}).get(workload, {}):
        found = pattern.fullmatch(name)
        if found is None:
            continue
        for daemon, s in metric_stats(doc, workload, name).items():
            point = Point(float(found.group(1)), s["median"], s["min"], s["max"], s["n"])
            series.setdefault(daemon, []).append(point)
    for points in series.values():
        points.sort(key=lambda p: p.x)
    return {d: series[d] for d in ordered_daemons(doc) if d in series}


def ordered_daemons(doc: JsonDict) -> list[str]:
    """The session's daemons in its own order."""
    return list(doc.get("daemons", {}))


def failures(doc: JsonDict) -> dict[str, int]:
    """Per daemon, how many of its runs failed."""
    failed: dict[str, int] = {}
    for record in doc.get("records", []):
        if not record["ok"]:
            failed[record["daemon"]] = failed.get(record["daemon"], 0) + 1
    return failed


def session_note(doc: JsonDict) -> str:
    """Runs, options, date and load average of a session: a figure's footnote."""
    records = doc.get("records", [])
    loads: list[float] = []
    started: list[float] = []
    for record in records:
        report = record.get("report") or {}
        loadavg = report.get("loadavg", {})
        loads += [loadavg[k][0] for k in ("before", "after") if k in loadavg]
        if "started" in report:
            started.append(report["started"])
    args = "; ".join(f"{w}: {shlex.join(a)}" for w, a in doc.get("workload_args", {}).items())
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(min(started))) if started else "?"
    load = f"load avg (1 min) {min(loads):.1f}-{max(loads):.1f}" if loads else "load avg ?"
    cpus = doc.get("host", {}).get("cpus", "?")
    return f"{doc.get('runs', '?')} run(s) per daemon, {args}; {when}, {cpus} CPUs, {load}"


# --------------------------------------------------------------------------
# Drawing (matplotlib)
# --------------------------------------------------------------------------


def style(daemon: str) -> dict[str, Any]:
    fam = family(daemon)
    return {
        "color": COLOURS.get(fam),
        "marker": MARKERS.get(fam, "o"),
        "label": label(daemon),
    }


def plain_log_axis(ax: Any) -> None:
    """A logarithmic y axis labelled 50, 100, 2000 rather than 5x10^1: the powers of ten
    and, between them, 2 and 5 times a power of ten, or every tick when the axis spans
    less than a decade (decided when drawing, once the limits are known)."""
    ticker = importlib.import_module("matplotlib.ticker")
    ax.set_yscale("log")

    def minor(value: float, _pos: object) -> str:
        low, high = ax.get_ylim()
        return minor_label(value, every=low > 0 and high / low < 10)

    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(minor))


def minor_label(value: float, *, every: bool) -> str:
    """``value`` when ``every`` or it is 2 or 5 times a power of ten, else nothing."""
    return f"{value:g}" if every or f"{value:e}"[0] in "25" else ""


def finish(plt: Any, fig: Any, note: str, path: Path) -> None:
    fig.text(0.01, 0.005, note, fontsize=6.5, color="dimgray", ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(path, dpi=80)  # small enough to commit (< 150 KB), sharp enough to read
    plt.close(fig)


def plot_scaling(doc: JsonDict, path: Path, *, title: str, xlabel: str, remark: str = "") -> None:
    """Latency against idle N: one panel per (op, median/p99) that the session measured."""
    plt = pyplot()
    workload = next(iter(doc.get("summary", {})), "")
    panels = [
        (op, stat)
        for op in ("read", "write")
        for stat in ("median_us", "p99_us")
        if scaling_series(doc, workload, op, stat)
    ]
    if not panels:
        raise ValueError(f"{path.name}: the session has no N=<n>.<op>.median_us metrics")
    cols = 2
    rows = (len(panels) + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.6 * rows + 0.6), squeeze=False)
    failed = failures(doc)
    for ax, (op, stat) in zip(axes.flat, panels, strict=False):
        for daemon, points in scaling_series(doc, workload, op, stat).items():
            xs = [p.x for p in points]
            st = style(daemon)
            if failed.get(daemon):
                st["label"] += f" ({failed[daemon]} run(s) failed)"
            ax.plot(xs, [p.median for p in points], **st)
            ax.fill_between(
                xs, [p.low for p in points], [p.high for p in points], color=st["color"], alpha=0.2
            )
        plain_log_axis(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{op.upper()} round trip, {stat.removesuffix('_us')} (µs)")
        ax.set_title(f"{op.upper()} {stat.removesuffix('_us')}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title + (f"\n{remark}" if remark else ""), fontsize=11)
    finish(plt, fig, session_note(doc), path)


BOOTSTORM_METRICS = (
    ("wall_s", "wall time, first VM start to last (s)"),
    ("vm_latency.median_s", "one VM's start, median (s)"),
    ("vm_latency.p95_s", "one VM's start, p95 (s)"),
)


def plot_bootstorm(docs: Sequence[JsonDict], path: Path) -> None:
    """Grouped bars per VM count: wall time and per-VM latency, one bar per daemon."""
    plt = pyplot()
    docs = sorted(docs, key=vm_count)
    daemons: list[str] = []
    for doc in docs:
        daemons += [d for d in ordered_daemons(doc) if d not in daemons]
    fig, axes = plt.subplots(1, len(BOOTSTORM_METRICS), figsize=(12, 4.4), squeeze=False)
    width = 0.8 / max(1, len(daemons))
    for ax, (metric, ylabel) in zip(axes.flat, BOOTSTORM_METRICS, strict=True):
        for i, daemon in enumerate(daemons):
            for j, doc in enumerate(docs):
                s = metric_stats(doc, "bootstorm", metric).get(daemon)
                x = j + (i - (len(daemons) - 1) / 2) * width
                st = style(daemon)
                if s is None:  # every run failed (timed out): say so where the bar would be
                    ax.text(
                        x,
                        0.5,
                        "did not\nfinish",
                        rotation=90,
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color=st["color"],
                        transform=ax.get_xaxis_transform(),
                    )
                    continue
                ax.bar(
                    x,
                    s["median"],
                    width,
                    color=st["color"],
                    label=st["label"] if j == 0 else None,
                    yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]],
                    capsize=3,
                )
                ax.annotate(
                    f"{s['median']:.3g}",
                    (x, s["max"]),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.set_xticks(range(len(docs)), [f"{vm_count(d)} VMs" for d in docs])
        plain_log_axis(ax)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes.flat[0].legend(handles, labels, fontsize=8)
    fig.suptitle(
        "Bootstorm: N concurrent libxl-style VM starts over the Unix socket "
        "(no backend watcher; lower is better)",
        fontsize=11,
    )
    finish(plt, fig, "\n".join(session_note(d) for d in docs), path)


def vm_count(doc: JsonDict) -> int:
    args = doc.get("workload_args", {}).get("bootstorm", [])
    for flag, value in itertools.pairwise(args):
        if flag == "--vms":
            return int(value)
    return 200  # bootstorm.py's default


# --------------------------------------------------------------------------
# Running the sessions
# --------------------------------------------------------------------------


def compare_argv(
    session: Session, runs: int, json_path: Path, args: argparse.Namespace
) -> list[str]:
    argv = [sys.executable, str(COMPARE)]
    for daemon in session.daemons:
        argv += ["--daemon", daemon]
    argv += [
        "--baseline", session.daemons[0],
        "--runs", str(runs),
        "--workloads", session.workload,
        f"--{session.workload}-args", session.args,
        "--json", str(json_path),
    ]  # fmt: skip
    if args.shared:
        argv += ["--shared", str(args.shared)]
    if args.no_pin:
        argv.append("--no-pin")
    if args.quiet:
        argv.append("--quiet")
    return argv


def progress(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def run_sessions(figures: Sequence[str], args: argparse.Namespace) -> None:
    sessions = [s for f in figures for s in SESSIONS[f]]
    for i, session in enumerate(sessions, 1):
        runs = args.runs or session.runs
        argv = compare_argv(session, runs, args.out / f"{session.name}.json", args)
        progress(args, f"plot.py: session {i}/{len(sessions)}: {session.name}: {shlex.join(argv)}")
        started = time.monotonic()
        status = run_compare(argv, args.verbose)
        progress(
            args,
            f"plot.py: session {i}/{len(sessions)}: {session.name} done in "
            f"{time.monotonic() - started:.0f} s (compare.py status {status})",
        )
        # Status 1: some runs failed, which the figure shows (a daemon's missing bars or
        # points).  Anything else (killed, bad arguments): stop here.
        if status not in (0, 1):
            raise RuntimeError(f"compare.py stopped with status {status}; {session.name} not run")


def run_compare(argv: list[str], verbose: bool) -> int:
    """Run one compare.py session; its summary goes to stdout only when ``verbose``.

    When this script is stopped (SIGTERM, Ctrl-C), compare.py gets SIGTERM and is waited
    for: it stops the daemon it started, which runs in a session of its own.
    """
    proc = subprocess.Popen(argv, stdout=None if verbose else subprocess.DEVNULL)
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


def load(path: Path) -> JsonDict:
    doc: JsonDict = json.loads(path.read_text())
    return doc


def draw(figures: Sequence[str], out: Path) -> list[Path]:
    """Draw the figures from the session JSON in ``out``; return the PNGs written."""
    made: list[Path] = []
    for figure in figures:
        sessions = SESSIONS[figure]
        missing = [s.name for s in sessions if not (out / f"{s.name}.json").exists()]
        if missing:
            raise FileNotFoundError(
                f"{figure}: no {', '.join(m + '.json' for m in missing)} in {out} (run without "
                "--from-json first)"
            )
        docs = [load(out / f"{s.name}.json") for s in sessions]
        png = out / f"{figure}.png"
        if figure == "idle":
            plot_scaling(
                docs[0],
                png,
                title="Latency with N idle Unix-socket connections, each holding a watch",
                xlabel="idle connections N (xsload.py idle)",
            )
        elif figure == "rings":
            plot_scaling(
                docs[0],
                png,
                title="Latency of one busy guest with N idle introduced domains "
                "(simulated Xen rings)",
                xlabel="idle introduced domains N (rings.py scaling)",
                remark="oxenstored is not shown: it has no simulated-ring mode here",
            )
        else:
            plot_bootstorm(docs, png)
        made.append(png)
    return made


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run compare.py sessions and plot them as PNGs (needs matplotlib).",
        epilog="See benchmarks/README.md, 'Plots'.",
    )
    parser.add_argument(
        "--figures",
        default=",".join(SESSIONS),
        help=f"comma-separated figures of {','.join(SESSIONS)} (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where the JSON and PNGs go (benchmarks/plots)",
    )
    parser.add_argument(
        "--from-json", action="store_true", help="run nothing: re-plot the JSON already in --out"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=0,
        help="runs per daemon for every session (default: each session's own, 3)",
    )
    parser.add_argument("--shared", type=Path, help="compare.py --shared (the reference daemons)")
    parser.add_argument("--no-pin", action="store_true", help="compare.py --no-pin")
    parser.add_argument(
        "--verbose", action="store_true", help="show compare.py's summary tables on stdout"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress lines on stderr (here and in compare.py)"
    )
    return parser


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM becomes SystemExit, so that the running compare.py is stopped on the way out."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    for f in figures:
        if f not in SESSIONS:
            parser.error(f"unknown figure {f!r} (choose from {', '.join(SESSIONS)})")
    if args.runs < 0:
        parser.error("--runs must be >= 0")
    try:
        pyplot()  # before any long run: fail at once without matplotlib
    except MissingMatplotlib as err:
        print(f"plot.py: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.from_json:
        try:
            run_sessions(figures, args)
        except RuntimeError as err:
            print(f"plot.py: {err}", file=sys.stderr)
            return 1
    try:
        made = draw(figures, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"plot.py: {err}", file=sys.stderr)
        return 1
    for png in made:
        print(f"wrote {png} ({png.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    sys.exit(main())
