"""Recovery time after a crash (issue 9): a pyxenstored with N nodes is killed with
SIGKILL and started again with the same command line; the time from the start to the
first answered request, and the replay time the daemon logs.

    python3 benchmarks/recovery.py [--nodes 100000] [--runs 3]

Starts its own daemon (the checkout's `.venv/bin/pyxenstored -N`) in a private directory
(the journal beside the socket); imports nothing from the package.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import time

from liveupdate import Private, fill
from xsbench.wire import XS_READ, Connection

_RECOVERED = re.compile(r"recovered from a crash: .* in ([0-9.]+) s")


def first_answer(path: str, timeout: float) -> Connection:
    """A connection once the daemon answers (connecting retries while the socket is
    missing or refuses: the killed daemon's file may still be there)."""
    conn = Connection(path, timeout=timeout)
    conn.request(XS_READ, b"/\0")
    return conn


def one_run(nodes: int) -> dict[str, float]:
    with Private("pxs-rec-") as run:
        daemon = run.start()
        fill(first_answer(run.path, 30), nodes)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
        t0 = time.perf_counter()
        run.start()
        conn = first_answer(run.path, 60)
        serving = time.perf_counter() - t0
        value = conn.request(XS_READ, b"/bench/d%d/n%d\0" % ((nodes - 1) // 1000, nodes - 1))
        assert value == b"v" * 16, value
        conn.close()
        found = _RECOVERED.findall((run.work / "log").read_text())
        return {"serving": serving, "replay": float(found[-1]) if found else float("nan")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    runs = [one_run(args.nodes) for _ in range(args.runs)]
    serving = [r["serving"] for r in runs]
    replay = [r["replay"] for r in runs]
    print(
        f"recovery after kill -9, {args.nodes} nodes: serving again after median "
        f"{statistics.median(serving):.2f} s ({', '.join(f'{t:.2f}' for t in serving)}); "
        f"replay median {statistics.median(replay):.2f} s "
        f"({', '.join(f'{t:.2f}' for t in replay)}), over {args.runs} runs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
