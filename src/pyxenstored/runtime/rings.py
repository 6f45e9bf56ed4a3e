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
  lifecycle of ``core.lifecycle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Callable

from ..core.caller import Caller
from ..core.connection import Connection
from ..core.domains import Domain
from ..core.engine import Engine
from ..core.lifecycle import domain_died, domain_shut_down, introduce_domain
from ..errors import Invalid, NoEntry
from ..protocol.wire import RingFeature
from ..state.journal import RingRecord
from ..state.snapshot import Adopted, Handover
from ..transports.base import ANY_PORT, DomainState, Mapping, XenBackend
from ..transports.ring import ServerRing
from ..transports.xen_linux import EVTCHN_PATH
from .ringsink import RingSink

__all__ = ["XEN_MODES", "RingManager", "RingSink", "open_xen"]

log = logging.getLogger("pyxenstored.rings")

#: the domain whose ring the toolstack uses (dom0's kernel, or dom0 in stub-domain mode)
DOM0 = 0
_ERROR_FEATURE = int(RingFeature.ERROR)


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
        #: writes the crash journal (the server's ``persist``)
        self.persist: Callable[[], None] = lambda: None
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
        #: undelivered bytes past which a privileged domain's ring is cut off (the
        #: engine drops no privileged peer's events; the server keeps this equal to
        #: ``limits/socket-buffer-bytes``, the sockets' cap)
        self.privileged_cap = 16 << 20
        #: a crash journal is written: rings report where they stand (``dirty``)
        self.journaling = False
        #: rings whose place the next journal frame records (an ordered set)
        self.dirty: dict[RingSink, None] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("RingManager used before attach()")
        return self._engine

    def attach(
        self, engine: Engine, flush: Callable[[], None], persist: Callable[[], None] | None = None
    ) -> None:
        """Bind to the engine (whose backend this is), to the server's flush and to what
        writes the crash journal (called after each ring's requests, before replies)."""
        self._engine = engine
        self._flush = flush
        if persist is not None:
            self.persist = persist

    def journal_records(self, everything: bool = False) -> list[RingRecord]:
        """Where the rings stand that moved since the last call: the ring whose
        requests were just answered, rings with new output, rings reset (``everything``:
        every ring, after a snapshot). The journal calls this for every frame."""
        dirty = self.dirty
        if everything:
            dirty.update(dict.fromkeys(self.by_domid.values()))
        elif self._engine is not None and self._engine.woken:
            for conn in self._engine.woken:
                sink = conn.sink
                if sink.__class__ is RingSink:
                    dirty[sink] = None
        if not dirty:
            return []  # the common case, called after every request: kept cheap
        records = [s.journal_record() for s in dirty if not s.closed and not s.broken]
        dirty.clear()
        return records

    # -- lifecycle ------------------------------------------------------------------------
    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        adopted: list[Adopted] | None = None,
        rebind: bool = False,
        journaled: dict[int, RingRecord] | None = None,
    ) -> None:
        """Watch the event channel and attach dom0's ring (or, after a live update, every
        ring the replaced process served: ``adopted``; after a crash, ``rebind``: the
        event-channel device died with the process, so each port is bound again and a
        ring that cannot be mapped is a domain gone meanwhile; ``journaled``: where the
        crash journal says each ring stood).

        Raises:
            OSError, XenstoreError: dom0's ring cannot be set up in stub-domain mode, or
                an adopted ring cannot be mapped.
        """
        self._loop = loop
        loop.add_reader(self.xen.fileno(), self._on_event)
        if adopted is not None:
            for item in adopted:
                if not rebind:
                    self._adopt(item)
                    continue
                try:
                    self._adopt(item, rebind=True, journaled=journaled)
                except OSError as err:
                    log.warning("domain %s: its ring is gone (%s): released", item.domid, err)
                    if item.domid is not None:
                        domain_died(self.engine, item.domid)
            # A domain may have died while we were being replaced (C does the same).
            self.check_domains()
            self._sweep_soon()
            return
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

    def _adopt(
        self,
        item: Adopted,
        rebind: bool = False,
        journaled: dict[int, RingRecord] | None = None,
    ) -> None:
        """Serve a ring the replaced process served: map its page again, keep its port
        (``rebind``: bind the domain's port again, the old binding died with us, and
        take up the ring where the crash journal's ``journaled`` record says it was)."""
        domid, conn = item.domid, item.conn
        if item.kind != "ring" or domid is None or conn is None or item.ring != "serve":
            return
        if domid == DOM0 and not self.stub_domain:
            own = self.xen.map_own_ring()
            if own is None:
                raise OSError(errno.ENOENT, "dom0's own ring page is gone")
            mapping = own[0]
        else:
            mapping = self.xen.map_ring(domid)
        try:
            ring = ServerRing(mapping.page)
        except ValueError as err:
            mapping.close()
            raise OSError(errno.EINVAL, str(err)) from None
        port = item.port
        if rebind:
            # The remote end: the port the guest's page names, else the one INTRODUCE
            # gave (dom0's own ring: xsd_port). ``item.port`` was our side's, now gone.
            domain = self.engine.domains.get(domid)
            remote = ring.evtchn_port or (domain.port if domain is not None else 0)
            if domid == DOM0 and not self.stub_domain:
                remote = self.xen.own_port() or remote
            try:
                port = self.xen.bind_interdomain(domid, remote)
            except OSError:
                ring.release()
                mapping.close()
                raise
        else:
            self.xen.adopt_port(domid, port)
        sink = RingSink(self, domid, conn, mapping, ring, port)
        if rebind:
            # After a crash the domain record's copy of this connection's input and
            # output is stale; the ring record (written with every frame that moved the
            # ring) and the ring page are the truth together.
            self._resume(sink, (journaled or {}).get(domid))
            if self.journaling:
                self.dirty[sink] = None
        elif item.unsent:
            sink.queue.append(item.unsent)
            conn.out_bytes += len(item.unsent)
        conn.sink = sink
        self.by_port[port] = sink
        self.by_domid[domid] = sink
        if item.pending_input and not rebind:
            self.engine.feed(conn, b"")
        self.wake(sink)
        if rebind:
            self.xen.notify(port)
        log.info("domain %d adopted (local port %d)", domid, port)

    def _resume(self, sink: RingSink, record: RingRecord | None) -> None:
        """After a crash: requests the journal has answered are taken from the ring, a
        partial request comes back, and the replies and events not yet in the ring are
        queued (those already written are not repeated: a guest would take a repeated
        event for a new one)."""
        conn = sink.conn
        conn.out.clear()
        conn.out_bytes = 0
        conn.reader.reset()
        if record is None:
            return  # no record (a journal of an older daemon): input and output as found
        ring = sink.ring
        if not ring.settle(record.req_cons):
            log.warning(
                "domain %d: its request index moved unexpectedly; served as found", sink.domid
            )
            return
        conn.reader.preload(record.partial)
        unsent = record.unwritten(ring.rsp_prod)
        if unsent:
            sink.queue.append(unsent)
            conn.out_bytes += len(unsent)

    def hold(self, held: bool) -> None:
        """Live update: stop (or resume) looking at rings; kicks wait in the device."""
        if self._loop is None:
            return
        if held:
            self._loop.remove_reader(self.xen.fileno())
        else:
            self._loop.add_reader(self.xen.fileno(), self._on_event)
            self._sweep_soon()

    def handover(self, conn: Connection) -> Handover | None:
        """What the state dump needs of a ring connection: its port, unwritten output."""
        sink = conn.sink
        if not isinstance(sink, RingSink):
            return None
        unsent = b"".join(sink.queue)[sink.offset :]
        partial = len(sink.queue[0]) - sink.offset if sink.queue and sink.offset else 0
        return Handover(port=sink.port, unsent=unsent, partial=partial)

    def _attach_dom0(self, port: int) -> None:
        """Serve dom0's ring and kick it once.

        The kick is not optional: Linux's xenbus in dom0 waits for a first event from
        xenstored before it trusts the ring (and registers its backend watches), as C
        xenstored's dom0 initialisation sends one.
        """
        try:
            introduce_domain(self.engine, DOM0, port, reset=False)
        finally:
            mapping = self._premapped.pop(DOM0, None)
            if mapping is not None:
                mapping.close()
        sink = self.by_domid.get(DOM0)
        if sink is not None:
            self.xen.notify(sink.port)
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
        if self.journaling:
            self.dirty[sink] = None
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
        if self.journaling:
            self.dirty[sink] = None
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
        if len(ports) == 1 and not ready and not self._scheduled:
            # The common case, one ring kicked and no other waiting: its turn now, with
            # no queueing (what _service would do for a queue of one).
            sink = by_port.get(ports[0])
            if sink is not None:
                if not sink.broken and self._turn(sink):
                    ready[sink] = None
                    self._schedule()
                return
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
        turn = self._turn
        try:
            for _ in range(min(len(ready), self.batch)):
                if not ready:
                    break
                sink = next(iter(ready))
                del ready[sink]
                if turn(sink):
                    ready[sink] = None
        finally:
            self._schedule()

    def _turn(self, sink: RingSink) -> bool:
        """One turn of ``sink``, then what it woke elsewhere is delivered; True if it
        deserves another (the one place a turn is taken, queued or not)."""
        self.stats["turns"] += 1
        try:
            again = sink.turn()
        except Exception:  # a daemon bug: keep serving the other rings
            log.exception("internal error serving domain %d", sink.domid)
            again = False
        if self.engine.woken:
            self._flush()
        return again

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
        self._flush()


#: ``--xen`` choices: ``auto`` is ``linux`` when /dev/xen/evtchn exists, else ``none``.
XEN_MODES = ("auto", "linux", "none")


def open_xen(mode: str, sim_dir: str | None = None, evtchn_fd: int = -1) -> XenBackend | None:
    """The hypervisor backend for a ``--xen`` mode (``--sim-xen DIR`` wins); None: none.

    ``auto`` uses Linux Xen when ``/dev/xen/evtchn`` exists and can be opened (a warning
    otherwise, e.g. without privileges); ``linux`` insists.

    Raises:
        OSError: the Linux devices (``linux``) or the simulated directory cannot be opened.
    """
    if sim_dir is not None:
        from ..transports.sim import SimXen

        return SimXen(sim_dir, evtchn_fd=evtchn_fd)
    if mode in ("auto", "linux"):
        from ..transports.xen_linux import LinuxXen

        if mode == "linux" or evtchn_fd >= 0:
            return LinuxXen(evtchn_fd=evtchn_fd)
        if os.path.exists(EVTCHN_PATH):
            try:
                return LinuxXen()
            except OSError as err:
                log.warning("Xen devices present but unusable (%s): serving sockets only", err)
        return None
    if mode != "none":
        raise ValueError(f"unknown Xen mode {mode!r}")
    return None
