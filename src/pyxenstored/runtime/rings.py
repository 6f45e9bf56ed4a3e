"""Guest domains over shared-memory rings: the asyncio side (xenstore-protocol.md §5.6, §7).

:class:`RingManager` is the engine's :class:`~pyxenstored.core.domains.DomainBackend`
when the daemon runs with a hypervisor (real, ``transports.xen_linux``; or simulated,
``transports.sim``): INTRODUCE maps a page and binds a port through it, and it serves
every ring. Each ring is a :class:`RingSink`, the ``sink`` of its engine
:class:`~pyxenstored.core.connection.Connection`, fed exactly like a socket:
``engine.feed(conn, data)``, then the replies in ``conn.out`` go back out and
``Server.flush`` delivers what other connections were woken with.

Scheduling contract:

* Only rings whose port fired (or that the backend says may have lost a kick) are looked
  at: the cost of serving one domain does not depend on how many domains there are.
* Ready rings wait in one FIFO. A *turn* serves one ring once: finish a pending
  reconnection, push queued output, read at most one ring's worth (1024 bytes) of
  requests and answer them. A ring that still has input goes to the back of the queue,
  so one busy ring cannot starve the others; at most ``batch`` turns run before the
  event loop gets control back (sockets and other callbacks interleave).
* Every index move is followed by a notification (one per turn, after the last move).
* Reading stops while the connection has more than ``read_stall`` bytes of undelivered
  output (a guest that never consumes its responses cannot make us queue without bound;
  watch events beyond the engine's cap are dropped). :meth:`RingSink.may_read` is the
  single place to add further stall rules (outstanding requests, memory quota).
* A ring whose indexes are out of range or whose framing is broken is *failed*: the
  ``error`` field is set (when the guest has the ERROR feature), its connection is
  dropped (watches, transactions, output) and it is never read again, but the domain
  stays introduced until it dies or is released (XSA-38, XSA-325).
* ``connection = RECONNECT`` (when RECONNECTION is advertised to the guest) resets the
  connection and the ring, sets CONNECTED and notifies (xenstore-ring.txt).
* VIRQ_DOM_EXC asks the backend which domains died or shut down and applies the domain
  lifecycle of ``core.handlers_domain``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections import deque
from collections.abc import Callable

from ..core.caller import Caller
from ..core.connection import Connection
from ..core.domains import Domain
from ..core.engine import Engine
from ..core.handlers_domain import domain_died, domain_shut_down, introduce_domain
from ..errors import Invalid, NoEntry
from ..protocol.framing import FramingError
from ..protocol.wire import RingFeature
from ..transports.base import ANY_PORT, DomainState, Mapping, XenBackend
from ..transports.ring import ERROR_PROTO, RING_SIZE, RingBroken, ServerRing
from ..transports.xen_linux import EVTCHN_PATH

__all__ = ["XEN_MODES", "RingManager", "RingSink", "open_xen"]

log = logging.getLogger("pyxenstored.rings")

#: the domain whose ring the toolstack uses (dom0's kernel, or dom0 in stub-domain mode)
DOM0 = 0
_RECONNECTION = int(RingFeature.RECONNECTION)
_ERROR_FEATURE = int(RingFeature.ERROR)


class RingSink:
    """One domain's ring: the delivery object of its connection and its turn."""

    __slots__ = (
        "broken",
        "closed",
        "conn",
        "domid",
        "manager",
        "mapping",
        "offset",
        "port",
        "queue",
        "ring",
    )

    def __init__(
        self,
        manager: RingManager,
        domid: int,
        conn: Connection,
        mapping: Mapping,
        ring: ServerRing,
        port: int,
    ) -> None:
        self.manager = manager
        self.domid = domid
        self.conn = conn
        self.mapping = mapping
        self.ring = ring
        #: the local event-channel port
        self.port = port
        #: messages taken from ``conn.out`` but not yet fully in the ring (still counted
        #: in ``conn.out_bytes``, so the engine's event cap sees them)
        self.queue: deque[bytes] = deque()
        #: bytes of ``queue[0]`` already written
        self.offset = 0
        #: the ring broke the protocol and is no longer served
        self.broken = False
        #: released: unmapped and unbound
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "broken" if self.broken else "ok"
        return f"RingSink(dom{self.domid}, port={self.port}, {state})"

    # -- output ---------------------------------------------------------------------------
    def deliver(self, conn: Connection) -> None:
        """Push queued output into the ring (``Server.flush`` calls this)."""
        if self.broken or self.closed:
            return
        manager = self.manager
        try:
            moved = self._push()
            # Room freed below the stall mark: requests left waiting can be read again.
            if moved and self.ring.has_input() and self.may_read():
                manager.wake(self)
        except RingBroken as err:
            manager.fail(self, err.code, str(err))
            return
        if moved:
            manager.xen.notify(self.port)

    def _push(self) -> bool:
        """Write as much queued output as fits; True if ``rsp_prod`` moved."""
        conn = self.conn
        queue = self.queue
        out = conn.out
        if out:
            queue.extend(out)
            out.clear()
        if not queue:
            return False
        offset = self.offset
        if len(queue) == 1 or len(queue[0]) - offset >= RING_SIZE:
            data = queue[0][offset:] if offset else queue[0]
        else:
            chunks = []
            size = 0
            for msg in queue:
                piece = msg[offset:] if offset else msg
                offset = 0
                chunks.append(piece)
                size += len(piece)
                if size >= RING_SIZE:
                    break
            data = b"".join(chunks)
        n = self.ring.write(data)
        if not n:
            return False
        conn.out_bytes -= n
        offset = self.offset
        while n:
            left = len(queue[0]) - offset
            if left <= n:
                n -= left
                queue.popleft()
                offset = 0
            else:
                offset += n
                n = 0
        self.offset = offset
        return True

    def drop_output(self) -> None:
        self.queue.clear()
        self.offset = 0

    # -- input ----------------------------------------------------------------------------
    def may_read(self) -> bool:
        """Whether requests may be read now (the stall rules live here): not while the
        guest leaves too much output unread, nor while the engine holds the domain back
        (outstanding-request or memory quota, conflict credit). Requests wait in the
        ring; none is failed."""
        conn = self.conn
        if conn.out_bytes > self.manager.read_stall:
            return False
        return not self.manager.engine.paused(conn, len(self.queue))

    def wants_turn(self) -> bool:
        """Whether a turn could do anything: input waits, output waits, or the guest
        asked to reconnect (a sweep after lost kicks skips idle rings cheaply)."""
        ring = self.ring
        return bool(
            ring.has_input() or self.queue or self.conn.out or ring.reconnect_requested()
        )

    def turn(self) -> bool:
        """Serve the ring once; True if it has more input and deserves another turn."""
        if self.broken or self.closed:
            return False
        manager = self.manager
        ring = self.ring
        conn = self.conn
        try:
            if ring.reconnect_requested() and conn.features & _RECONNECTION:
                self._reconnect()
                return False
            moved = self._push()
            more = False
            if not ring.has_input():
                pass
            elif not self.may_read():
                manager.stall(self)
            else:
                data = ring.read(RING_SIZE)
                if data:
                    moved = True
                    manager.engine.feed(conn, data)
                    if self.closed or self.broken:
                        return False
                    self._push()
                    more = ring.has_input()
        except RingBroken as err:
            manager.fail(self, err.code, str(err))
            return False
        except FramingError as err:
            manager.fail(self, ERROR_PROTO, str(err))
            return False
        if moved:
            manager.xen.notify(self.port)
        return more

    def _reconnect(self) -> None:
        """The guest asked to reconnect: start afresh on both sides (xenstore-ring.txt)."""
        manager = self.manager
        manager.engine.reset_connection(self.conn)
        self.drop_output()
        self.ring.reset()
        self.ring.set_connected()
        manager.xen.notify(self.port)
        log.info("domain %d reconnected its ring", self.domid)


class RingManager:
    """Every domain ring of one daemon, over one :class:`XenBackend`.

    Args:
        xen: the hypervisor backend.
        stub_domain: dom0 talks to us over its ring only (map dom0's page as any
            guest's, port from ``event_port`` or the backend's ``own_port()``);
            otherwise dom0's own page (``xsd_kva``) is served when the backend has one.
        event_port: dom0's port in stub-domain mode (``--event``, as
            init-xenstore-domain passes it).
        read_stall: undelivered output bytes beyond which a ring is not read.
        batch: turns per event-loop iteration.
        rescan_interval: the minimum time between two "look at every ring" sweeps
            caused by possibly lost kicks (the first one is immediate).
    """

    def __init__(
        self,
        xen: XenBackend,
        *,
        stub_domain: bool = False,
        event_port: int | None = None,
        read_stall: int = 64 * 1024,
        batch: int = 64,
        rescan_interval: float = 0.005,
    ) -> None:
        self.xen = xen
        self.stub_domain = stub_domain
        self.event_port = event_port
        self.read_stall = read_stall
        self.batch = batch
        self.rescan_interval = rescan_interval
        self._engine: Engine | None = None
        self._flush: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.by_port: dict[int, RingSink] = {}
        self.by_domid: dict[int, RingSink] = {}
        #: rings waiting for a turn, in order (a dict used as an ordered set)
        self.ready: dict[RingSink, None] = {}
        self._scheduled = False
        self._premapped: dict[int, Mapping] = {}
        self._last_sweep = -1e9
        self._sweep_timer: asyncio.TimerHandle | None = None
        #: rings with input that the stall rules hold back, rechecked every ``tick``
        self.stalled: set[RingSink] = set()
        #: seconds between rechecks of stalled rings (and conflict credit returning)
        self.tick = 0.05
        self._tick_timer: asyncio.TimerHandle | None = None
        self.stats = {"turns": 0, "sweeps": 0, "failed": 0, "stalls": 0}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("RingManager used before attach()")
        return self._engine

    def attach(self, engine: Engine, flush: Callable[[], None]) -> None:
        """Bind to the engine (whose backend this is) and to the server's flush."""
        self._engine = engine
        self._flush = flush

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the event channel and attach dom0's ring.

        Raises:
            OSError, XenstoreError: dom0's ring cannot be set up in stub-domain mode.
        """
        self._loop = loop
        loop.add_reader(self.xen.fileno(), self._on_event)
        if self.stub_domain:
            port = self.event_port if self.event_port is not None else self.xen.own_port()
            if not port:
                raise Invalid("stub-domain mode needs dom0's event channel port (--event)")
            self._attach_dom0(port)
        else:
            own = self.xen.map_own_ring()
            if own is not None:
                mapping, port = own
                self._premapped[DOM0] = mapping
                try:
                    self._attach_dom0(port)
                except Exception as err:  # a broken dom0 page must not stop the daemon
                    log.error("cannot serve dom0's own ring: %s", err)
        # Anything already waiting (requests written before we started) is served.
        self._schedule()

    def _attach_dom0(self, port: int) -> None:
        try:
            introduce_domain(self.engine, DOM0, port, reset=False)
        finally:
            mapping = self._premapped.pop(DOM0, None)
            if mapping is not None:
                mapping.close()
        log.info("serving dom0's ring (port %d)", port)

    def close(self) -> None:
        """Stop serving: unbind and unmap every ring, release the backend."""
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        self.stalled.clear()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.xen.fileno())
        for sink in list(self.by_domid.values()):
            self._unmap(sink)
        self.ready.clear()
        self.xen.close()
        log.info(
            "rings closed: %(turns)d turns, %(sweeps)d sweeps, %(failed)d broken rings",
            self.stats,
        )

    # -- DomainBackend (called by the engine's domain handlers) ---------------------------
    def exists(self, domid: int) -> bool:
        return self.xen.domain_exists(domid)

    def introduce(self, domid: int, port: int, features: int) -> Connection | None:
        engine = self.engine
        mapping = self._premapped.pop(domid, None)
        try:
            if mapping is None:
                mapping = self.xen.map_ring(domid)
        except OSError as err:
            # C answers with the errno of the failed mapping (ENOENT for a missing page).
            why = f"cannot map the ring of domain {domid}: {err}"
            if err.errno == errno.ENOENT:
                raise NoEntry(why) from None
            raise Invalid(why) from None
        try:
            ring = ServerRing(mapping.page)
        except ValueError as err:
            mapping.close()
            raise Invalid(str(err)) from None
        try:
            local = self.xen.bind_interdomain(domid, ring.evtchn_port or port)
        except OSError as err:
            ring.release()
            mapping.close()
            raise Invalid(f"cannot bind the event channel of domain {domid}: {err}") from None
        ring.advertise(features)
        conn = engine.connect(Caller(domid, domid == engine.priv_domid), "ring", features)
        sink = RingSink(self, domid, conn, mapping, ring, local)
        conn.sink = sink
        self.by_port[local] = sink
        self.by_domid[domid] = sink
        self.wake(sink)
        log.info("domain %d introduced (local port %d)", domid, local)
        return conn

    def reintroduce(self, domain: Domain, port: int) -> None:
        sink = self.by_domid.get(domain.domid)
        if sink is None:
            return
        try:
            local = self.xen.bind_interdomain(domain.domid, sink.ring.evtchn_port or port)
        except OSError as err:
            raise Invalid(
                f"cannot bind the event channel of domain {domain.domid}: {err}"
            ) from None
        del self.by_port[sink.port]
        self.xen.unbind(sink.port)
        sink.port = local
        self.by_port[local] = sink

    def reset(self, domain: Domain) -> None:
        sink = self.by_domid.get(domain.domid)
        if sink is None:
            return
        sink.drop_output()
        ring = sink.ring
        ring.reset()
        if ring.reconnect_requested():
            ring.set_connected()
            self.xen.notify(sink.port)
        self.wake(sink)

    def release(self, domain: Domain) -> None:
        sink = self.by_domid.get(domain.domid)
        if sink is not None:
            self._unmap(sink)
            log.info("domain %d released", domain.domid)

    def _unmap(self, sink: RingSink) -> None:
        sink.closed = True
        self.by_domid.pop(sink.domid, None)
        if self.by_port.get(sink.port) is sink:
            del self.by_port[sink.port]
        self.ready.pop(sink, None)
        sink.drop_output()
        self.xen.unbind(sink.port)
        sink.ring.release()
        sink.mapping.close()

    def fail(self, sink: RingSink, code: int, why: str) -> None:
        """Cut off a ring that broke the protocol; its domain stays (XSA-325)."""
        if sink.broken:
            return
        log.warning("domain %d broke its ring (%s): no longer served", sink.domid, why)
        sink.broken = True
        self.stats["failed"] += 1
        self.ready.pop(sink, None)
        sink.drop_output()
        if sink.conn.features & _ERROR_FEATURE:
            sink.ring.set_error(code)
        self.engine.disconnect(sink.conn)
        self.xen.notify(sink.port)

    # -- events ---------------------------------------------------------------------------
    def wake(self, sink: RingSink) -> None:
        """Give ``sink`` a turn soon."""
        if not sink.broken and not sink.closed:
            self.ready[sink] = None
            self._schedule()

    def stall(self, sink: RingSink) -> None:
        """``sink`` has input it may not read yet: recheck it every tick."""
        if sink not in self.stalled:
            self.stalled.add(sink)
            self.stats["stalls"] += 1
        self._ensure_tick()

    def _ensure_tick(self) -> None:
        if self._tick_timer is None and self._loop is not None:
            self._tick_timer = self._loop.call_later(self.tick, self._on_tick)

    def _on_tick(self) -> None:
        """Conflict credit returns; stalled rings that may read again get a turn."""
        self._tick_timer = None
        guard = self.engine.conflict_guard
        if not guard.idle:
            guard.replenish()
        for sink in list(self.stalled):
            if sink.closed or sink.broken:
                self.stalled.discard(sink)
            elif sink.may_read():
                self.stalled.discard(sink)
                self.wake(sink)
        if self.stalled or not guard.idle:
            self._ensure_tick()

    def _schedule(self) -> None:
        if self.ready and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._service)

    def _on_event(self) -> None:
        try:
            ports = self.xen.pending()
        except OSError as err:
            log.error("reading the event channel failed: %s", err)
            return
        by_port = self.by_port
        ready = self.ready
        dom_exc = False
        for port in ports:
            sink = by_port.get(port)
            if sink is not None:
                if not sink.broken:
                    ready[sink] = None
            elif port == ANY_PORT:
                self._sweep_soon()
            elif port == self.xen.virq_port:
                dom_exc = True
        if dom_exc:
            self.check_domains()
        if ready and not self._scheduled:
            # Serve now rather than in another loop iteration: one epoll per kick.
            self._service()

    def _sweep_soon(self) -> None:
        """A kick may have been lost: look at every ring, at most once per interval."""
        loop = self._loop
        if loop is None or self._sweep_timer is not None:
            return  # one is already due
        now = loop.time()
        if now - self._last_sweep >= self.rescan_interval:
            self._sweep()
        else:
            self._sweep_timer = loop.call_at(self._last_sweep + self.rescan_interval, self._sweep)

    def _sweep(self) -> None:
        self._sweep_timer = None
        if self._loop is not None:
            self._last_sweep = self._loop.time()
        self.stats["sweeps"] += 1
        ready = self.ready
        for sink in self.by_domid.values():
            if not sink.broken and sink.wants_turn():
                ready[sink] = None
        self._schedule()

    def _service(self) -> None:
        self._scheduled = False
        ready = self.ready
        flush = self._flush
        woken = self.engine.woken
        turns = min(len(ready), self.batch)
        try:
            for _ in range(turns):
                if not ready:
                    break
                sink = next(iter(ready))
                del ready[sink]
                try:
                    again = sink.turn()
                except Exception:  # a daemon bug: keep serving the other rings
                    log.exception("internal error serving domain %d", sink.domid)
                    again = False
                if again:
                    ready[sink] = None
                if woken:
                    flush()
        finally:
            self.stats["turns"] += turns
            self._schedule()

    def check_domains(self) -> None:
        """VIRQ_DOM_EXC: apply deaths and shutdowns the backend reports."""
        engine = self.engine
        known = set(engine.domains)
        known.update(engine.births)
        try:
            changes = self.xen.domain_changes(known)
        except OSError as err:
            log.error("querying domain states failed: %s", err)
            return
        for domid, state in changes:
            if domid not in known:
                continue
            if state is DomainState.DEAD:
                log.info("domain %d is gone", domid)
                domain_died(engine, domid)
            else:
                domain_shut_down(engine, domid)
        if engine.woken:
            self._flush()


#: ``--xen`` choices: ``auto`` is ``linux`` when /dev/xen/evtchn exists, else ``none``.
XEN_MODES = ("auto", "linux", "none")


def open_xen(mode: str, sim_dir: str | None = None) -> XenBackend | None:
    """The hypervisor backend for a ``--xen`` mode (``--sim-xen DIR`` wins); None: none.

    ``auto`` uses Linux Xen when ``/dev/xen/evtchn`` exists and can be opened (a warning
    otherwise, e.g. without privileges); ``linux`` insists.

    Raises:
        OSError: the Linux devices (``linux``) or the simulated directory cannot be opened.
    """
    if sim_dir is not None:
        from ..transports.sim import SimXen

        return SimXen(sim_dir)
    if mode in ("auto", "linux"):
        from ..transports.xen_linux import LinuxXen

        if mode == "linux":
            return LinuxXen()
        if os.path.exists(EVTCHN_PATH):
            try:
                return LinuxXen()
            except OSError as err:
                log.warning("Xen devices present but unusable (%s): serving sockets only", err)
        return None
    if mode != "none":
        raise ValueError(f"unknown Xen mode {mode!r}")
    return None
