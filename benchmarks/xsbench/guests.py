"""Simulated guest domains on shared-memory rings, and the ring transport (rings.py).

The daemon must serve the simulated Xen of spec/simulated-xen.md in ``--fakexen-dir``:
pyxenstored with ``--sim-xen DIR``, or the reference C xenstored under
``reference/rings.sh``.  dom0 (a socket connection) introduces every guest: MKDIR
``/local/domain/N``, SET_PERMS ``n<N>``, INTRODUCE ``N 0 <port>``.  The guest side is
pyxenstored's own ``pyxenstored.client.ring.SimGuest`` (the page file and the notify
socket), driven here by a small synchronous loop (``RingGuest``), so that the client's
cost per request stays low and is the same whichever daemon is measured.

This is the one module that imports ``pyxenstored`` (``import_client``, from ``src/``
when pyxenstored is not installed), and only when a ring workload runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import select
import socket
import struct
import sys
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from xsbench import cli
from xsbench.measure import JsonDict, raise_nofile_limit
from xsbench.wire import (
    HEADER,
    XS_ERROR,
    XS_INTRODUCE,
    XS_MKDIR,
    XS_READ,
    XS_RELEASE,
    XS_RM,
    XS_SET_PERMS,
    XS_WATCH_EVENT,
    XS_WRITE,
    Connection,
    Message,
    MessageReader,
    XsError,
    error_name,
    path_arg,
    perms_arg,
    write_arg,
)
from xsbench.workloads import IdlePool, Load, LoadResult, LoadSession, Share, Transport

RING_SIZE = 1024
KICK = b"\0\0\0\0"
#: the event-channel port named in INTRODUCE (the simulated Xen ignores it)
GUEST_PORT = 1
#: give up on one request after this long without a reply
REQUEST_TIMEOUT = 30.0

REPO = Path(__file__).resolve().parent.parent.parent


def import_client() -> tuple[Any, Any]:
    """pyxenstored's ``client.ring`` and ``client.aio``; from src/ when not installed."""
    try:
        from pyxenstored.client import aio, ring
    except ImportError:
        src = str(REPO / "src")
        if src not in sys.path:
            sys.path.insert(0, src)
        from pyxenstored.client import aio, ring
    return ring, aio


def import_sim_guest() -> Any:
    """pyxenstored's SimGuest class."""
    return import_client()[0].SimGuest


# --------------------------------------------------------------------------
# dom0: introducing guests over the socket
# --------------------------------------------------------------------------


def domain_home(domid: int) -> str:
    return f"/local/domain/{domid}"


def introduce(dom0: Connection, domid: int, port: int = GUEST_PORT) -> None:
    """What a toolstack does for a new guest: its home directory, owned by it, then INTRODUCE.

    Raises:
        RuntimeError: the daemon refused, with a hint about FAKEXEN_NDOMS.
    """
    home = domain_home(domid)
    try:
        dom0.request(XS_MKDIR, path_arg(home))
        dom0.request(XS_SET_PERMS, perms_arg(home, [f"n{domid}"]))
        dom0.request(XS_INTRODUCE, f"{domid}\0{0}\0{port}\0".encode())
    except XsError as err:
        raise RuntimeError(
            f"introducing domain {domid} failed: {err}. Does the daemon serve the simulated "
            f"Xen in --fakexen-dir, with FAKEXEN_NDOMS > {domid} in its environment?"
        ) from None


def release(dom0: Connection, domid: int) -> None:
    """RELEASE the domain (its connection goes) and remove its home directory."""
    with contextlib.suppress(XsError):
        dom0.request(XS_RELEASE, f"{domid}\0".encode())
    with contextlib.suppress(XsError):
        dom0.request(XS_RM, path_arg(domain_home(domid)))


# --------------------------------------------------------------------------
# The guest side: a synchronous client over one simulated ring
# --------------------------------------------------------------------------


@dataclass
class GuestStats:
    """Guest-side counters, summed over guests."""

    kicks: int = 0
    kicks_refused: int = 0
    poll_timeouts: int = 0


class RingGuest:
    """One simulated guest: its page and notify socket (SimGuest), a blocking request loop.

    The notify socket is made blocking with a kernel receive timeout (``SO_RCVTIMEO``), so
    waiting for the daemon is one ``recv``; kicks are sent with ``MSG_DONTWAIT`` and
    retried while the daemon's queue is full.  Must be created before INTRODUCE (the
    page is made fresh) and used only after it.
    """

    def __init__(
        self,
        fakexen_dir: str,
        domid: int,
        *,
        poll: float = 0.5,
        kick_on_consume: bool = False,
        lazy_kicks: bool = False,
        sim_guest: Any = None,
    ) -> None:
        cls = sim_guest or import_sim_guest()
        self.domid = domid
        self.guest = cls(fakexen_dir, domid)
        self.ring = self.guest.ring
        self.sock: socket.socket = self.guest.sock
        self.sock.setblocking(True)
        seconds = int(poll)
        self.sock.setsockopt(
            socket.SOL_SOCKET,
            socket.SO_RCVTIMEO,
            struct.pack("ll", seconds, int((poll - seconds) * 1e6)),
        )
        self.poll = poll
        self.kick_addr: str = self.guest.kick_addr
        self.kick_on_consume = kick_on_consume
        self.lazy_kicks = lazy_kicks
        #: a kick was refused and not yet retried successfully (lazy_kicks only)
        self.kick_owed = False
        self.reader = MessageReader()
        self.pending: list[Message] = []
        self.stats = GuestStats()
        self._next_id = 1

    def close(self) -> None:
        self.guest.close()

    def next_id(self) -> int:
        req_id = self._next_id
        self._next_id = req_id + 1 if req_id < 0xFFFFFFFF else 1
        return req_id

    # -- event channel ---------------------------------------------------------------------
    def try_kick(self) -> bool:
        """Notify the daemon once; False (and ``kick_owed``) if its queue was full."""
        try:
            self.sock.sendto(KICK, socket.MSG_DONTWAIT, self.kick_addr)
        except BlockingIOError:
            self.stats.kicks_refused += 1
            self.kick_owed = True
            return False
        except OSError as err:
            raise ConnectionError(f"cannot kick the daemon: {err}") from None
        self.stats.kicks += 1
        self.kick_owed = False
        return True

    def kick(self) -> None:
        """Notify the daemon.  A refused kick is retried here every 50 µs, or, with
        ``lazy_kicks``, left owed for the caller's loop to retry (other rings go on)."""
        if self.try_kick() or self.lazy_kicks:
            return
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while True:
            time.sleep(50e-6)
            if self.try_kick():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the daemon's event channel stayed full")

    def wait(self) -> bool:
        """Block until a notification arrives or ``poll`` passes; False on a timeout."""
        try:
            self.sock.recv(64)
        except BlockingIOError:
            self.stats.poll_timeouts += 1
            return False
        return True

    def drain(self) -> None:
        """Consume queued notifications without blocking."""
        recv = self.sock.recv
        while True:
            try:
                recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return

    # -- ring ------------------------------------------------------------------------------
    def check(self) -> None:
        """ConnectionError if the daemon marked the ring broken."""
        error = self.ring.error
        if error:
            raise ConnectionError(f"the daemon marked domain {self.domid}'s ring broken ({error})")

    def idle_turn(self, idle_since: float, what: str) -> float:
        """Nothing moved: check the ring, retry an owed kick, wait for a notification.
        Returns when the idling began (0: not idling); TimeoutError after too long."""
        self.check()
        if self.kick_owed:
            self.kick()
        if self.wait():
            return idle_since
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since > REQUEST_TIMEOUT:
            raise TimeoutError(f"domain {self.domid}: {what}")
        return idle_since

    def send(self, data: bytes) -> None:
        """Write whole messages into the request ring, waiting for room; kick per move."""
        ring = self.ring
        view = memoryview(data)
        idle_since = 0.0
        while view:
            n = ring.write(view)
            if n:
                view = view[n:]
                self.kick()
                idle_since = 0.0
                continue
            idle_since = self.idle_turn(idle_since, "the daemon stopped consuming")

    def pump(self) -> list[Message]:
        """Take whatever responses are in the ring; return the complete messages."""
        data = self.ring.read()
        if not data:
            return []
        if self.kick_on_consume or len(data) == RING_SIZE:
            self.kick()  # the ring was full: the daemon may be waiting for room
        return self.reader.feed(data)

    def receive(self) -> Message:
        """The next message from the daemon (reply or watch event), waiting for it."""
        pending = self.pending
        idle_since = 0.0
        while not pending:
            messages = self.pump()
            if messages:
                pending.extend(messages)
                break
            idle_since = self.idle_turn(idle_since, "no reply from the daemon")
        return pending.pop(0)

    def request(self, msg_type: int, payload: bytes) -> bytes:
        req_id = self.next_id()
        self.send(HEADER.pack(msg_type, req_id, 0, len(payload)) + payload)
        while True:
            msg = self.receive()
            if msg.type != XS_WATCH_EVENT and msg.req_id == req_id:
                break
        if msg.type == XS_ERROR:
            raise XsError(error_name(msg.payload), msg_type)
        return msg.payload


def prepare_key(guest: RingGuest, key: str, value: bytes) -> None:
    guest.request(XS_WRITE, write_arg(key, value))
    if guest.request(XS_READ, path_arg(key)) != value:
        raise RuntimeError(f"READ of {key} by domain {guest.domid} did not return the value")


# --------------------------------------------------------------------------
# throughput: a worker process's guests in a closed loop
# --------------------------------------------------------------------------


class RingLoad:
    """One worker process's guests; several are served with ``poll`` on their sockets."""

    def __init__(self, guests: list[RingGuest], poll: float) -> None:
        self.guests = guests
        self.poller = select.poll()
        self.by_fd = {g.sock.fileno(): g for g in guests}
        for fd in self.by_fd:
            self.poller.register(fd, select.POLLIN)
        self.poll_ms = int(poll * 1000)

    def closed_loop(
        self, deadline: float, depth: int, next_request: Callable[[], bytes], result: LoadResult
    ) -> None:
        guests = self.guests
        poller = self.poller
        by_fd = self.by_fd
        outstanding = dict.fromkeys(guests, depth)
        single = guests[0] if len(guests) == 1 else None
        for g in guests:
            g.send(b"".join(next_request() for _ in range(depth)))
        total = depth * len(guests)
        last_progress = time.monotonic()
        while total:
            progressed = False
            sending = time.perf_counter() < deadline
            for g in guests:
                if not outstanding[g]:
                    continue
                messages = g.pump()
                if not messages:
                    continue
                out: list[bytes] = []
                for msg in messages:
                    if msg.type == XS_WATCH_EVENT:
                        continue
                    outstanding[g] -= 1
                    total -= 1
                    result.completed += 1
                    if msg.type == XS_ERROR:
                        result.errors += 1
                    if sending:
                        out.append(next_request())
                        outstanding[g] += 1
                        total += 1
                if out:
                    g.send(b"".join(out))
                progressed = True
            owed = [g for g in guests if g.kick_owed and not g.try_kick()]
            if progressed:
                last_progress = time.monotonic()
                continue
            if owed:
                # The daemon's queue is full: retry soon, serving replies meanwhile.
                for fd, _ in poller.poll(1):
                    by_fd[fd].drain()
            elif single is not None:
                single.wait()
            else:
                events = poller.poll(self.poll_ms)
                for fd, _ in events:
                    by_fd[fd].drain()
                if not events:
                    guests[0].stats.poll_timeouts += 1
            for g in guests:
                g.check()
            if time.monotonic() - last_progress > REQUEST_TIMEOUT:
                raise TimeoutError(f"no reply for {REQUEST_TIMEOUT:.0f} s")

    def tally(self, result: LoadResult) -> None:
        total = GuestStats()
        for g in self.guests:
            for name, n in vars(g.stats).items():
                setattr(total, name, getattr(total, name) + n)
        result.guest = vars(total)


class RingSession:
    """The parent's dom0 connection: fresh domids for every K, introduced and released."""

    def __init__(self, dom0: Connection, first: int, per: int) -> None:
        self.dom0 = dom0
        self.next_domid = first
        self.per = per
        self.current: list[int] = []
        self.introduced: list[int] = []

    def shares(self, clients: int) -> list[Share]:
        first, per = self.next_domid, self.per
        self.next_domid += clients * per  # fresh domids for every K (the previous are released)
        self.current = list(range(first, first + clients * per))
        return [tuple(self.current[i * per : (i + 1) * per]) for i in range(clients)]

    def setup(self) -> Callable[[], None]:
        def introduce_all() -> None:
            for domid in self.current:
                introduce(self.dom0, domid)
                self.introduced.append(domid)

        return introduce_all

    def cleanup(self) -> None:
        for domid in self.introduced:
            release(self.dom0, domid)
        self.introduced = []


# --------------------------------------------------------------------------
# scaling: idle introduced domains, held by a helper process
# --------------------------------------------------------------------------


def idle_helper(
    socket_path: str, fakexen_dir: str, first: int, pipe: Pipe, release_at_end: bool
) -> None:
    """Hold idle guests: on ``n`` from the pipe, create and introduce guests until there
    are ``n``; answer ("ok", n, seconds) or ("error", text).  ``None`` ends it."""
    guests: list[Any] = []
    dom0: Connection | None = None
    try:
        raise_nofile_limit()
        sim_guest = import_sim_guest()
        dom0 = Connection(socket_path)
        while True:
            target = pipe.recv()
            if target is None:
                break
            t0 = time.perf_counter()
            try:
                while len(guests) < target:
                    domid = first + len(guests)
                    guests.append(sim_guest(fakexen_dir, domid))
                    introduce(dom0, domid)
            except Exception as exc:
                pipe.send(("error", f"{type(exc).__name__}: {exc}", 0.0))
                continue
            pipe.send(("ok", len(guests), time.perf_counter() - t0))
        if release_at_end:
            for i in range(len(guests)):
                release(dom0, first + i)
    except (EOFError, OSError):
        pass  # the parent went away
    finally:
        for g in guests:
            with contextlib.suppress(Exception):
                g.close()
        if dom0 is not None:
            dom0.close()
        with contextlib.suppress(OSError):
            pipe.send(("done", len(guests), 0.0))


class IdleDomains:
    """The scaling workload's idle peers: the helper process's introduced domains."""

    def __init__(self, args: Namespace, pipe: Pipe) -> None:
        self.args = args
        self.pipe = pipe

    def grow(self, count: int) -> tuple[int, float]:
        self.pipe.send(count)
        if not self.pipe.poll(self.args.setup_timeout):
            raise RuntimeError(
                f"introducing {count} idle domains took over {self.args.setup_timeout:.0f} s"
            )
        status, have, setup = self.pipe.recv()
        if status != "ok":
            raise RuntimeError(f"idle helper: {have}")
        time.sleep(self.args.settle)
        return have, setup


# --------------------------------------------------------------------------
# The transport
# --------------------------------------------------------------------------


class RingTransport(Transport):
    tool = "rings"
    description = (
        "xenstore benchmarks through simulated guest rings "
        "(pyxenstored --sim-xen, or reference/rings.sh)"
    )
    workloads = {
        "latency": ("latency", "one guest's sequential READ and WRITE latency"),
        "throughput": ("throughput", "closed-loop throughput with K guest processes"),
        "scaling": ("scaling", "one busy guest's latency with N idle introduced domains"),
    }
    latency_key = "bench/latency"  # relative: /local/domain/<domid>/bench/latency
    scaling_key = "bench/scaling"
    throughput_key = "bench/throughput"
    group_noun = "guest processes"
    words = cli.Words(
        worker="guest process",
        pipeline="requests in flight per ring (default %(default)s; C xenstored allows 20 "
        "outstanding requests per domain)",
        idle="idle domain",
        idle_counts=[0, 100, 1000],
        unit="requests",
        per="per N and operation",
        least=(500, 300),
        write="also measure WRITE latency at every N",
    )

    def add_common_arguments(self, parser: ArgumentParser, *, with_defaults: bool) -> None:
        cli.add_fakexen_dir(parser, with_defaults=with_defaults)

    def add_client_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--domid",
            type=cli.positive_int,
            default=1,
            help="the (first) busy guest's domain id; others follow it (default %(default)s)",
        )
        parser.add_argument(
            "--poll",
            type=cli.positive_float,
            default=0.5,
            help="seconds a guest waits for a notification before re-checking its ring "
            "(default %(default)s)",
        )
        parser.add_argument(
            "--kick-on-consume",
            action="store_true",
            help="kick the daemon after every response read (default: only when the response "
            "ring was full, as Linux's xenbus driver does)",
        )

    def add_arguments(self, parser: ArgumentParser, workload: str) -> None:
        if workload == "throughput":
            parser.add_argument(
                "--guests",
                type=cli.positive_int,
                default=1,
                help="guests (rings) per process (default %(default)s)",
            )
        if workload != "scaling":
            return
        parser.add_argument(
            "--settle",
            type=float,
            default=0.5,
            help="seconds to wait after introducing before measuring (default %(default)s)",
        )
        parser.add_argument(
            "--no-release",
            action="store_true",
            help="leave the idle domains introduced at the end (default: RELEASE them)",
        )
        parser.add_argument(
            "--setup-timeout",
            type=float,
            default=300.0,
            help="seconds allowed for introducing one step's idle domains (default %(default)s)",
        )

    def prepare(self, args: Namespace, parser: ArgumentParser) -> JsonDict:
        fakexen_dir = cli.default_fakexen_dir(args)
        if not Path(fakexen_dir).is_dir():
            parser.error(
                f"{fakexen_dir} is not a directory: start the daemon with the simulated Xen "
                "there (pyxenstored --sim-xen DIR, or reference/rings.sh), or give --fakexen-dir"
            )
        return {"fakexen_dir": fakexen_dir}

    def where(self, args: Namespace) -> str:
        return f"through rings in {args.fakexen_dir}"

    def client_params(self, args: Namespace) -> JsonDict:
        return {"domid": args.domid, "poll_s": args.poll, "kick_on_consume": args.kick_on_consume}

    def client_report(self, conn: Any) -> JsonDict:
        assert isinstance(conn, RingGuest)
        stats = vars(conn.stats)
        conn.stats = GuestStats()
        return {"guest": stats}

    def guest(self, args: Namespace, domid: int, **options: Any) -> RingGuest:
        return RingGuest(
            args.fakexen_dir, domid, poll=args.poll, kick_on_consume=args.kick_on_consume, **options
        )

    @contextmanager
    def probe(self, args: Namespace, key: str, value: bytes) -> Iterator[RingGuest]:
        sim_guest = import_sim_guest()
        with Connection(args.socket) as dom0:
            guest = self.guest(args, args.domid, sim_guest=sim_guest)
            try:
                introduce(dom0, args.domid)
                prepare_key(guest, key, value)
                guest.stats = GuestStats()
                yield guest
            finally:
                guest.close()
            release(dom0, args.domid)

    @contextmanager
    def idle_pool(self, args: Namespace, counts: Sequence[int]) -> Iterator[IdlePool]:
        import_sim_guest()  # fail early, before the helper starts
        ctx = multiprocessing.get_context("fork")
        parent_end, child_end = ctx.Pipe()
        helper = ctx.Process(
            target=idle_helper,
            args=(args.socket, args.fakexen_dir, args.domid + 1, child_end, not args.no_release),
            daemon=True,
        )
        helper.start()  # before any socket or page of ours exists, so that it inherits none
        try:
            yield IdleDomains(args, parent_end)
        finally:
            with contextlib.suppress(OSError):
                parent_end.send(None)  # the helper releases the idle domains, then ends
            if parent_end.poll(args.setup_timeout):
                with contextlib.suppress(EOFError, OSError):
                    parent_end.recv()
            helper.join(timeout=10)
            if helper.is_alive():
                helper.kill()
                helper.join()

    def scaling_params(self, args: Namespace, counts: Sequence[int]) -> JsonDict:
        return {
            "settle_s": args.settle,
            "idle_domids": [args.domid + 1, args.domid + max(counts)] if max(counts) else [],
        }

    def load_params(self, args: Namespace) -> JsonDict:
        return {"guests_per_client": args.guests}

    @contextmanager
    def load_session(self, args: Namespace) -> Iterator[LoadSession]:
        import_sim_guest()  # fail early, before any process starts
        with Connection(args.socket) as dom0:
            yield RingSession(dom0, args.domid, args.guests)

    @contextmanager
    def load(
        self, args: Namespace, share: Share, ready: Sequence[Barrier], key: str, value: bytes
    ) -> Iterator[Load]:
        sim_guest = import_sim_guest()
        guests: list[RingGuest] = []
        try:
            for domid in share:
                guests.append(self.guest(args, domid, lazy_kicks=True, sim_guest=sim_guest))
            for barrier in ready:  # the pages exist; then dom0 has introduced them
                barrier.wait()
            for g in guests:
                prepare_key(g, key, value)
                g.stats = GuestStats()
            yield RingLoad(guests, args.poll)
        finally:
            for g in guests:
                g.close()
