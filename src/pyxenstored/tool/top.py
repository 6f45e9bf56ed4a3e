"""``pyxenstore top``: a live view of the store per domain, like xentop.

One row per domain (the privileged domain and every introduced one): request rate,
nodes and memory against the quota in force, watches, open transactions, queued
output, and the refusals: EAGAINs, quota refusals, permission refusals, and the
conflicts its changes caused other domains (conflict fairness blames it; ``T`` marks a
domain throttled for it now). Figures come from the statistics nodes under
``/tool/xenstored/stats/`` (liveconfig.stats), so the view works against any
pyxenstored the caller may read them from: dom0 over the socket, or a privileged guest
over xenbus. Rates are differences between two refreshes.

Keys: ``s``/``S`` sort by the next/previous column, ``r`` reverses the order, ``1``-``9``
and letters shown in the header choose a column; ``+``/``-`` change the delay; ``q``
quits. ``-b`` (batch) prints frames as text instead, for scripts and logs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..client.sync import Client
from ..metrics import DomainRow, Stats
from .common import SubParsers, warn
from .connect import contact
from .stats import NoStatistics, read_stats

__all__ = ["COLUMNS", "Column", "Sample", "View", "register", "render"]


@dataclass(frozen=True)
class Column:
    """One column: header, width, sort key (``k``), and how a row shows."""

    key: str
    title: str
    width: int
    value: Callable[[Sample, DomainRow], float]
    show: Callable[[Sample, DomainRow], str]


@dataclass
class Sample:
    """Two readings of the statistics and the seconds between them."""

    now: Stats
    before: Stats | None
    seconds: float

    def _seconds(self, node: str) -> float:
        """Time between the two reads of ``node`` (they may lie apart from the
        readings' ends by a good part of a reading under load), else between the
        readings."""
        assert self.before is not None
        t1, t0 = self.now.read_at.get(node), self.before.read_at.get(node)
        return t1 - t0 if t1 is not None and t0 is not None else self.seconds

    def rate(self, row: DomainRow, name: str) -> float:
        """Per second since the previous reading (0 on the first, or after a reset)."""
        if self.before is None or self.seconds <= 0:
            return 0.0
        old = self.before.domains.get(row.domid)
        seconds = self._seconds(f"domain/{row.domid}")
        if old is None or seconds <= 0:
            return 0.0
        return max(0, row.get(name) - old.get(name)) / seconds

    def global_rate(self, name: str) -> float:
        if self.before is None or self.seconds <= 0:
            return 0.0
        seconds = self._seconds(name)
        delta = self.now.values.get(name, 0) - self.before.values.get(name, 0)
        return max(0, delta) / seconds if seconds > 0 else 0.0


def _used(name: str, scale: int = 1) -> Callable[[Sample, DomainRow], str]:
    """``used/limit`` (``used`` alone when there is no limit)."""

    def show(_: Sample, row: DomainRow) -> str:
        used, limit = row.get(name) // scale, row.quotas.get(name, 0) // scale
        return f"{used}/{limit}" if limit else str(used)

    return show


def _percent(name: str) -> Callable[[Sample, DomainRow], float]:
    """Sort by the share of the quota used (no limit: by the amount, below any share)."""

    def value(_: Sample, row: DomainRow) -> float:
        limit = row.quotas.get(name, 0)
        return row.get(name) / limit if limit else row.get(name) * 1e-12

    return value


def _count(name: str) -> tuple[Callable[[Sample, DomainRow], float], Callable[..., str]]:
    return (lambda _s, row: row.get(name)), (lambda _s, row: str(row.get(name)))


def _columns() -> list[Column]:
    cols = [
        Column("d", "DOMID", 5, lambda _s, r: r.domid, lambda _s, r: str(r.domid)),
        Column(
            "r",
            "REQ/s",
            8,
            lambda s, r: s.rate(r, "requests"),
            lambda s, r: f"{s.rate(r, 'requests'):.1f}",
        ),
        Column("n", "NODES/QUOTA", 13, _percent("nodes"), _used("nodes")),
        Column("m", "MEM(K)/QUOTA", 14, _percent("memory"), _used("memory", 1024)),
        Column("w", "WATCH", 6, *_count("watches")),
        Column("t", "TXN", 4, *_count("transactions")),
        Column("o", "OUTQ", 5, *_count("outstanding")),
        Column(
            "a",
            "EAGAIN/s",
            8,
            lambda s, r: s.rate(r, "eagain"),
            lambda s, r: f"{s.rate(r, 'eagain'):.1f}",
        ),
        Column("e", "EAGAIN", 7, *_count("eagain")),
        Column("f", "REFUSED", 7, *_count("refused")),
        Column("p", "DENIED", 7, *_count("denied")),
        Column(
            "b",
            "BLAMED",
            7,
            lambda _s, r: r.get("blamed"),
            lambda _s, r: str(r.get("blamed")) + ("T" if r.get("throttled") else ""),
        ),
    ]
    return cols


#: The columns in display order; each has a one-letter sort key.
COLUMNS: list[Column] = _columns()


@dataclass
class View:
    """What the screen shows: the sample, the sort column and order, the delay."""

    sample: Sample
    sort: str = "r"
    reverse: bool = True
    delay: float = 2.0
    where: str = ""

    def rows(self) -> list[DomainRow]:
        col = next((c for c in COLUMNS if c.key == self.sort), COLUMNS[1])
        rows = sorted(self.sample.now.domains.values(), key=lambda r: r.domid)
        rows.sort(key=lambda r: col.value(self.sample, r), reverse=self.reverse)
        return rows

    def key(self, ch: str) -> bool:
        """Apply a key press; False for ``q`` (quit)."""
        keys = [c.key for c in COLUMNS]
        if ch == "q":
            return False
        if ch in ("s", "S"):
            i = keys.index(self.sort) if self.sort in keys else 0
            self.sort = keys[(i + (1 if ch == "s" else -1)) % len(keys)]
        elif ch == "r":
            self.reverse = not self.reverse
        elif ch in keys:
            if self.sort == ch:
                self.reverse = not self.reverse
            else:
                self.sort, self.reverse = ch, ch != "d"
        elif ch == "+":
            self.delay = min(60.0, self.delay * 2)
        elif ch == "-":
            self.delay = max(0.25, self.delay / 2)
        return True


def _header(view: View) -> list[str]:
    s = view.sample
    v = s.now.values
    clock = time.strftime("%H:%M:%S")
    rss = v.get("memory/rss", 0) / (1 << 20)
    return [
        f"pyxenstore top - {clock}  {view.where}  delay {view.delay:g}s",
        f"domains {v.get('domains', 0)}  connections {v.get('connections', 0)}  "
        f"nodes {v.get('nodes', 0)}  watches {v.get('watches', 0)}  "
        f"open transactions {v.get('transactions/open', 0)}  rss {rss:.1f} MiB",
        f"requests {s.global_rate('requests/total'):.1f}/s  "
        f"events {s.global_rate('events/sent'):.1f}/s  "
        f"commits {s.global_rate('transactions/committed'):.1f}/s  "
        f"EAGAIN {s.global_rate('transactions/refused'):.1f}/s  "
        f"events dropped {v.get('events/dropped', 0)}",
        "",
    ]


def render(view: View, width: int = 200, height: int = 1000) -> list[str]:
    """The screen as lines (cut to ``width`` x ``height``): header, column titles (the
    sort column marked), one line per domain."""
    lines = _header(view)
    titles = []
    for col in COLUMNS:
        mark = ("v" if view.reverse else "^") if col.key == view.sort else " "
        titles.append(f"{col.title}{mark}".rjust(col.width + 1))
    lines.append(" ".join(titles))
    for row in view.rows():
        cells = [col.show(view.sample, row).rjust(col.width + 1) for col in COLUMNS]
        lines.append(" ".join(cells))
    keys = " ".join(f"{c.key}:{c.title.split('/')[0]}" for c in COLUMNS)
    footer = f"sort {keys}  s/S next/prev  r reverse  +/- delay  q quit"
    body = lines[: max(1, height - 1)]
    return [line[:width] for line in [*body, footer]]


class Poller:
    """Reads the statistics and keeps the previous reading for the rates."""

    def __init__(self, xs: Client, clock: Callable[[], float] = time.monotonic) -> None:
        self.xs = xs
        self.clock = clock
        self.last: Stats | None = None
        self.last_time = 0.0

    def sample(self) -> Sample:
        now = read_stats(self.xs)
        t = self.clock()
        sample = Sample(now, self.last, t - self.last_time if self.last else 0.0)
        self.last, self.last_time = now, t
        return sample


def _batch(args: argparse.Namespace, poller: Poller, view: View) -> int:
    count = 0
    while True:
        view.sample = poller.sample()
        for line in render(view):
            print(line)
        print(flush=True)
        count += 1
        if args.iterations and count >= args.iterations:
            return 0
        time.sleep(view.delay)


def _interactive(stdscr: Any, args: argparse.Namespace, poller: Poller, view: View) -> int:
    import curses

    with contextlib.suppress(curses.error):
        curses.curs_set(0)
    count = 0
    while True:
        view.sample = poller.sample()
        height, width = stdscr.getmaxyx()
        stdscr.erase()
        lines = render(view, width - 1, height)
        for y, line in enumerate(lines):
            attr = curses.A_REVERSE if y == 4 else curses.A_NORMAL
            with contextlib.suppress(curses.error):
                stdscr.addstr(y, 0, line, attr)
        stdscr.refresh()
        count += 1
        if args.iterations and count >= args.iterations:
            return 0
        deadline = time.monotonic() + view.delay
        while (left := deadline - time.monotonic()) > 0:
            stdscr.timeout(max(1, int(left * 1000)))
            ch = stdscr.getch()
            if ch == -1:
                continue
            if ch == curses.KEY_RESIZE:
                break
            if not view.key(chr(ch) if 0 <= ch < 256 else ""):
                return 0
            break  # redraw at once with the new order


def _run(args: argparse.Namespace) -> int:
    xs = contact(args)
    if xs is None:
        return 1
    with xs:
        poller = Poller(xs)
        where = args.connect or getattr(xs, "path", "") or "xenstored"
        view = View(Sample(Stats({}, {}), None, 0.0), args.sort, True, args.delay, str(where))
        if args.sort == "d":
            view.reverse = False
        try:
            if args.batch or not sys.stdout.isatty():
                return _batch(args, poller, view)
            import curses

            result: int = curses.wrapper(_interactive, args, poller, view)
            return result
        except NoStatistics as err:
            warn(args, str(err))
            return 1
        except KeyboardInterrupt:
            return 0


def register(subparsers: SubParsers) -> None:
    """Add ``top``."""
    p = subparsers.add_parser(
        "top",
        help="live per-domain view of requests, quotas and refusals (like xentop)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument(
        "-d", "--delay", type=float, default=2.0, metavar="SECONDS", help="between refreshes"
    )
    p.add_argument(
        "-b", "--batch", action="store_true", help="print frames as text (no terminal control)"
    )
    p.add_argument(
        "-i",
        "-n",
        "--iterations",
        type=int,
        default=0,
        metavar="N",
        help="stop after N refreshes (default: run until q or Ctrl-C)",
    )
    p.add_argument(
        "-s",
        "--sort",
        choices=[c.key for c in COLUMNS],
        default="r",
        help="sort column by its key: "
        + ", ".join(f"{c.key} {c.title}" for c in COLUMNS)
        + " (default: r)",
    )
    p.set_defaults(func=_run)
