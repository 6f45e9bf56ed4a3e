"""Live update time (issue 9): a pyxenstored with N nodes and C socket connections replaces
itself with CONTROL live-update; the time from `-s` to its `OK` (sent by the new process,
once it has restored everything and adopted every connection) is the update's cost.

    python3 benchmarks/liveupdate.py [--nodes 100000] [--connections 1000] [--runs 3]

Starts its own daemon (the checkout's `.venv/bin/pyxenstored -N`) in a private directory;
imports nothing from the package (xsbench's wire code over the socket).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xsbench.wire import XS_READ, XS_WRITE, Connection, Message, MessageReader, encode

XS_CONTROL = 0
BINARY = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "pyxenstored")


def replies(sock: socket.socket, count: int) -> list[Message]:
    """The next ``count`` messages from ``sock`` (pipelined requests' replies)."""
    reader = MessageReader()
    out: list[Message] = []
    while len(out) < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("daemon closed the connection")
        out += reader.feed(chunk)
    return out


def fill(conn: Connection, nodes: int, batch: int = 2000) -> None:
    """Write ``nodes`` nodes of 16-byte values under /bench, pipelined by ``batch``."""
    for start in range(0, nodes, batch):
        n = min(batch, nodes - start)
        conn.sock.sendall(
            b"".join(
                encode(XS_WRITE, i, b"/bench/d%d/n%d\0%s" % (i // 1000, i, b"v" * 16))
                for i in range(start, start + n)
            )
        )
        assert all(m.type == XS_WRITE for m in replies(conn.sock, n))


def control(conn: Connection, *args: str) -> bytes:
    """A CONTROL request's text answer (live-update answers its outcome as text)."""
    return conn.request(XS_CONTROL, b"".join(a.encode() + b"\0" for a in args)).rstrip(b"\0")


class Private:
    """A private run directory (``XENSTORED_RUNDIR``, the socket, the log, the journal)
    and the daemons started in it; ``with`` stops them all and removes it."""

    def __init__(self, prefix: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.path = str(self.work / "socket")
        self.daemons: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        """The checkout's pyxenstored, in the foreground, serving ``self.path``."""
        daemon = subprocess.Popen(
            [BINARY, "-N", "--socket", self.path, "--log-file", str(self.work / "log")],
            env=dict(os.environ, XENSTORED_RUNDIR=str(self.work)),
            stdin=subprocess.DEVNULL,
        )
        self.daemons.append(daemon)
        return daemon

    def __enter__(self) -> Private:
        return self

    def __exit__(self, *exc: object) -> None:
        for daemon in self.daemons:
            if daemon.poll() is None:
                daemon.terminate()
                daemon.wait(30)
        shutil.rmtree(self.work, ignore_errors=True)


def one_run(nodes: int, connections: int) -> dict[str, float]:
    with Private("pxs-lu-") as run:
        path = run.path
        daemon = run.start()
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.05)
        main = Connection(path)
        fill(main, nodes)
        clients = []
        for _ in range(connections):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            clients.append(c)
        for c in clients[:50]:  # they are served (and counted) before the update
            c.sendall(encode(XS_READ, 9, b"/bench/d0/n0\0"))
            assert replies(c, 1)[0].type == XS_READ
        assert control(main, "live-update", "-f", BINARY) == b"OK"
        t0 = time.perf_counter()
        answer = control(main, "live-update", "-s", "-t", "30")
        elapsed = time.perf_counter() - t0
        if answer != b"OK":
            raise RuntimeError(f"live update answered {answer!r}")
        for c in clients[-50:]:  # and served by the new process
            c.sendall(encode(XS_READ, 9, b"/bench/d0/n0\0"))
            assert replies(c, 1)[0].type == XS_READ
        for c in clients:
            c.close()
        main.close()
        assert daemon.poll() is None
        return {"seconds": elapsed}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=100_000)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    times = [one_run(args.nodes, args.connections)["seconds"] for _ in range(args.runs)]
    print(
        f"live update, {args.nodes} nodes, {args.connections} socket connections: "
        f"median {statistics.median(times):.2f} s over {args.runs} runs "
        f"({', '.join(f'{t:.2f}' for t in times)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
