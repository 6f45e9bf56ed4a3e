#!/usr/bin/env python3
"""Memory under peers that stop reading: the daemon's RSS against docs/operations.md's bound.

Starts a fresh pyxenstored (``-N --socket-buffer-max CAP``), then opens ``--connections``
dom0 socket clients that each pipeline READs of a 4000-byte node without ever reading
(each is paused at its limit), and ``--watchers`` clients that watch ``/`` and never
read while one client writes ``--events`` nodes (each watcher is cut off past CAP).
Reports the daemon's RSS (``/proc/PID/status``) before and after, the growth per
stalled connection, and the bound docs/operations.md gives for one socket client
(``max(CAP, 256 KiB) + 256 KiB + 4112 + O``, here ``O`` = one READ reply of 4016 bytes).

    python benchmarks/stalled_peers.py                      # 1000 connections, 100 watchers
    python benchmarks/stalled_peers.py --quick              # 100 and 10
    python benchmarks/stalled_peers.py --connections 2000 --json memory.json

Imports nothing from ``pyxenstored``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from xsbench.daemons import parse_daemon, start_daemon, stop_daemon
from xsbench.measure import raise_nofile_limit
from xsbench.wire import (
    XS_READ,
    XS_WATCH,
    XS_WRITE,
    Connection,
    encode,
    path_arg,
    watch_arg,
    write_arg,
)

REPO = Path(__file__).resolve().parent.parent
HIGH_WATER = READ_CHUNK = 256 * 1024
MSG_MAX = 4096 + 16


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _stalled_client(path: str, request: bytes) -> socket.socket:
    """A client whose requests fill the daemon up to its limit; it never reads."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(path)
    s.setblocking(False)
    return s


def _push(clients: list[socket.socket], request: bytes, rounds: int) -> int:
    sent = 0
    for _ in range(rounds):
        for s in clients:
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                sent += s.send(request)
        time.sleep(0.2)
    return sent


def run(args: argparse.Namespace) -> dict[str, object]:
    raise_nofile_limit()
    spec = parse_daemon(
        "pyxenstored={repo}/.venv/bin/python -m pyxenstored -N --no-journal "
        f"--socket-buffer-max {args.cap} --socket {{dir}}/socket"
    )
    daemon = start_daemon(spec, [], REPO.parent / "shared", 30.0)
    path = str(daemon.socket)
    clients: list[socket.socket] = []
    try:
        with Connection(path) as dom0:
            dom0.request(XS_WRITE, write_arg("/big", b"B" * 4000))
        time.sleep(0.5)
        before = rss_kib(daemon.pid)
        request = encode(XS_READ, 1, path_arg("/big")) * 200
        clients = [_stalled_client(path, request) for _ in range(args.connections)]
        _push(clients, request, 4)
        time.sleep(1.0)
        stalled = rss_kib(daemon.pid)
        watchers = []
        for _ in range(args.watchers):
            w = _stalled_client(path, b"")
            w.setblocking(True)
            w.sendall(encode(XS_WATCH, 1, watch_arg("/", "tok")))
            watchers.append(w)
        time.sleep(0.5)
        with Connection(path) as writer:
            for i in range(args.events):
                writer.request(XS_WRITE, write_arg(f"/{'n' * 200}/{i}", b"v"))
        time.sleep(0.5)
        after = rss_kib(daemon.pid)
        with Connection(path) as probe:
            alive = probe.request(XS_READ, path_arg("/big")) == b"B" * 4000
        for w in watchers:
            w.close()
    finally:
        for s in clients:
            s.close()
        stop_daemon(daemon)
    per_client = max(args.cap, HIGH_WATER) + READ_CHUNK + MSG_MAX + 4016
    return {
        "connections": args.connections,
        "watchers": args.watchers,
        "events": args.events,
        "cap_bytes": args.cap,
        "rss_before_kib": before,
        "rss_stalled_kib": stalled,
        "rss_after_watchers_kib": after,
        "growth_per_stalled_connection_kib": round((stalled - before) / args.connections, 1),
        "bound_per_client_kib": per_client // 1024,
        "bound_total_kib": (args.connections + args.watchers) * per_client // 1024,
        "within_bound": after - before <= (args.connections + args.watchers) * per_client / 1024,
        "daemon_answers_after": alive,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument(
        "--cap", type=int, default=1 << 20, help="--socket-buffer-max of the daemon (default 1 MiB)"
    )
    parser.add_argument("--quick", action="store_true", help="100 connections, 10 watchers")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.connections, args.watchers, args.events = 100, 10, 2000
    report = run(args)
    for key, value in report.items():
        print(f"{key:34} {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["within_bound"] and report["daemon_answers_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
