"""The socket transport (xsload.py): every client is a connection to the daemon's socket.

Standard library only: nothing here imports ``pyxenstored``.
"""

from __future__ import annotations

import selectors
import socket
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.synchronize import Barrier

from xsbench import cli
from xsbench.measure import JsonDict, raise_nofile_limit
from xsbench.wire import (
    CONNECT_TIMEOUT,
    XS_ERROR,
    XS_WATCH,
    XS_WATCH_EVENT,
    Connection,
    MessageReader,
    XsError,
    connect_unix,
    encode,
    error_name,
    watch_arg,
)
from xsbench.workloads import IdlePool, Load, LoadResult, LoadSession, Share, Transport

BENCH_ROOT = "/bench"


def open_idle_connections(
    path: str, first: int, count: int, batch: int, watch: bool = True
) -> list[socket.socket]:
    """Open ``count`` connections that each register one WATCH, then go quiet.

    Connections are opened in batches: connect every socket of a batch (with
    retries, see connect_unix), send all their WATCH requests, then collect
    each one's reply and the initial watch event with a selector.  With
    ``watch`` false the connections are only opened.
    """
    opened: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        for base in range(first, first + count, batch):
            size = min(batch, first + count - base)
            waiting: dict[socket.socket, tuple[MessageReader, list[int]]] = {}
            for i in range(base, base + size):
                sock = connect_unix(path)
                opened.append(sock)
                if not watch:
                    continue
                sock.sendall(encode(XS_WATCH, 1, watch_arg(f"{BENCH_ROOT}/idle/w{i}", f"t{i}")))
                sock.setblocking(False)
                # state: [replies seen, events seen]
                waiting[sock] = (MessageReader(), [0, 0])
                sel.register(sock, selectors.EVENT_READ, sock)
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while waiting:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{len(waiting)} WATCH replies missing after {CONNECT_TIMEOUT:.0f} s"
                    )
                for key, _ in sel.select(timeout=1.0):
                    sock = key.data
                    reader, seen = waiting[sock]
                    data = sock.recv(4096)
                    if not data:
                        raise ConnectionError("daemon closed an idle connection during setup")
                    for msg in reader.feed(data):
                        if msg.type == XS_ERROR:
                            raise XsError(error_name(msg.payload), XS_WATCH)
                        seen[0 if msg.type == XS_WATCH else 1] += 1
                    if seen[0] and seen[1]:
                        sel.unregister(sock)
                        del waiting[sock]
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    finally:
        sel.close()
    return opened


class IdleConnections:
    """The scaling workload's idle peers: connections, each watching its own path."""

    def __init__(self, args: Namespace) -> None:
        self.args = args
        self.socks: list[socket.socket] = []

    def grow(self, count: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        self.socks += open_idle_connections(
            self.args.socket,
            len(self.socks),
            count - len(self.socks),
            self.args.batch,
            watch=not self.args.no_watch,
        )
        return count, time.perf_counter() - t0


class SocketLoad:
    """One throughput worker's connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def closed_loop(
        self, deadline: float, depth: int, next_request: Callable[[], bytes], result: LoadResult
    ) -> None:
        sock = self.conn.sock
        reader = self.conn.reader
        sock.sendall(b"".join(next_request() for _ in range(depth)))
        outstanding = depth
        while outstanding:
            data = sock.recv(262144)
            if not data:
                raise ConnectionError("daemon closed the connection")
            sending = time.perf_counter() < deadline
            out: list[bytes] = []
            for msg in reader.feed(data):
                if msg.type == XS_WATCH_EVENT:
                    continue
                outstanding -= 1
                result.completed += 1
                if msg.type == XS_ERROR:
                    result.errors += 1
                if sending:
                    out.append(next_request())
                    outstanding += 1
            if out:
                sock.sendall(b"".join(out))

    def tally(self, result: LoadResult) -> None:
        pass


class SocketSession:
    """Nothing to do between the K of the throughput workload."""

    def shares(self, clients: int) -> list[Share]:
        return [()] * clients

    def setup(self) -> None:
        return None

    def cleanup(self) -> None:
        pass


class SocketTransport(Transport):
    tool = "xsload"
    description = "xenstore load generator (raw socket protocol, any daemon)"
    workloads = {
        "latency": ("latency", "sequential READ and WRITE round-trip latency"),
        "throughput": ("throughput", "closed-loop throughput with K client processes"),
        "idle": ("scaling", "READ latency with N idle watching connections open"),
    }
    latency_key = f"{BENCH_ROOT}/latency"
    scaling_key = f"{BENCH_ROOT}/idle/probe"
    throughput_key = f"{BENCH_ROOT}/throughput/c{{index}}"
    group_noun = "clients"
    words = cli.Words(
        worker="client process",
        pipeline="requests in flight per connection (default %(default)s)",
        idle="idle connection",
        idle_counts=[0, 1000, 5000],
        unit="READs",
        per="per N",
        least=(300, 200),
        write="also measure WRITE latency (fires the watch matching code)",
    )

    def add_arguments(self, parser: ArgumentParser, workload: str) -> None:
        if workload == "throughput":
            parser.add_argument(
                "--native",
                action="store_true",
                help="one compiled client process (xsbench/loadgen.c, built with cc on "
                "first use) holds the K connections, instead of K Python processes: "
                "the daemon, not the load, sets the pace",
            )
        if workload != "scaling":
            return
        parser.add_argument(
            "--batch",
            type=cli.positive_int,
            default=200,
            help="connections opened per batch (default %(default)s)",
        )
        parser.add_argument(
            "--no-watch",
            action="store_true",
            help="idle connections register no WATCH (they are only opened)",
        )

    @contextmanager
    def probe(self, args: Namespace, key: str, value: bytes) -> Iterator[Connection]:
        with Connection(args.socket) as conn:
            conn.write(key, value)
            if conn.read(key) != value:
                raise RuntimeError(f"READ of {key} did not return the value just written")
            yield conn

    @contextmanager
    def idle_pool(self, args: Namespace, counts: Sequence[int]) -> Iterator[IdlePool]:
        needed = max(counts) + 64
        soft = raise_nofile_limit()
        if soft < needed:
            raise RuntimeError(
                f"RLIMIT_NOFILE is {soft} (hard limit too), need about {needed} descriptors"
            )
        pool = IdleConnections(args)
        try:
            yield pool
        finally:
            for sock in pool.socks:
                sock.close()

    def scaling_params(self, args: Namespace, counts: Sequence[int]) -> JsonDict:
        return {"batch": args.batch, "watch": not args.no_watch}

    @contextmanager
    def load_session(self, args: Namespace) -> Iterator[LoadSession]:
        yield SocketSession()

    @contextmanager
    def load(
        self, args: Namespace, share: Share, ready: Sequence[Barrier], key: str, value: bytes
    ) -> Iterator[Load]:
        with Connection(args.socket) as conn:
            conn.write(key, value)
            yield SocketLoad(conn)
