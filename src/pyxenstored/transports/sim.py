"""The simulated Xen backend: ring pages in files, event channels as datagrams.

This implements the daemon side of ``simulated-xen.md`` (the contract shared with the
guest-side client ``client/ring.py`` and with the reference C daemon's shim). In the
directory ``DIR``:

* ``ring.<domid>``: the guest's page; mapping it (``mmap(MAP_SHARED)``) stands for
  mapping grant reference 1. A file shorter than a page is refused. (A file truncated
  after it was mapped would make the daemon fault: the simulation trusts its harness
  there, as real grant mappings cannot shrink.)
* ``evtchn``: the datagram socket this backend binds. A datagram is a kick; its sender
  address ``.../notify.<domid>`` names the domain. A kick from any other sender carrying
  port 1 is VIRQ_DOM_EXC; any other kick means "look at every ring".
* ``notify.<domid>``: the guest's socket; :meth:`SimXen.notify` sends it the 4-byte
  local port, without waiting (a missing or full socket is not an error: a full queue
  already wakes the guest).
* ``dying.<domid>``: while it exists the domain is dying, i.e. it does not exist and
  ``domain_changes`` reports it dead.
* ``ring.0`` and ``xsd_port``: dom0's own page and port (created here if missing, never
  truncated), standing for ``/proc/xen/xsd_kva`` and ``/proc/xen/xsd_port``.

A domid below ``ndoms`` (``$FAKEXEN_NDOMS``, default 100) exists unless it is dying.

Lost kicks: a Unix datagram socket queues at most ``net.unix.max_dgram_qlen`` datagrams
(10 by default) and a non-blocking guest's kick is then dropped, which real event
channels never do. So when the socket yields that many datagrams between two moments it
is seen empty, a kick may have been lost and :meth:`SimXen.pending` adds ANY_PORT. This
is the only place where the simulated daemon may look at rings nobody signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import socket
import stat
import termios

from .base import ANY_PORT, DomainState

__all__ = ["VIRQ_PORT", "SimMapping", "SimXen"]

#: the port number standing for VIRQ_DOM_EXC in kicks and in ``pending()``
VIRQ_PORT = 1
_FIRST_PORT = 10
_DRAIN_MAX = 4096
_PAGE = 4096
_DEFAULT_XSD_PORT = b"5"


def _dgram_qlen() -> int:
    try:
        with open("/proc/sys/net/unix/max_dgram_qlen") as f:
            return max(1, int(f.read().strip()))
    except (OSError, ValueError):
        return 10


class SimMapping:
    """A ring file mapped shared, standing for a grant mapping."""

    __slots__ = ("_mm", "_page")

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < _PAGE:
                raise OSError(f"{path}: not a {_PAGE}-byte ring page")
            self._mm = mmap.mmap(fd, _PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._page: memoryview | None = memoryview(self._mm)

    @property
    def page(self) -> memoryview:
        if self._page is None:
            raise ValueError("mapping closed")
        return self._page

    def close(self) -> None:
        if self._page is not None:
            self._page.release()
            self._page = None
            self._mm.close()


class SimXen:
    """The daemon side of the simulated Xen (see the module docstring)."""

    virq_port = VIRQ_PORT

    def __init__(self, directory: str, ndoms: int | None = None, *, evtchn_fd: int = -1) -> None:
        self.dir = os.path.abspath(directory)
        if ndoms is None:
            ndoms = int(os.environ.get("FAKEXEN_NDOMS", "100"))
        self.ndoms = ndoms
        os.makedirs(self.dir, exist_ok=True)
        self._evtchn_path = os.path.join(self.dir, "evtchn")
        if evtchn_fd >= 0:
            # Live update: the bound socket was inherited across exec, with every kick
            # sent meanwhile still queued in it.
            sock = socket.socket(fileno=evtchn_fd)
            sock.setblocking(False)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._evtchn_path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(self._evtchn_path)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        #: port -> a datagram socket connected to that guest's notify socket
        self._peers: dict[int, socket.socket] = {}
        self._next_port = _FIRST_PORT
        self._free_ports: list[int] = []
        #: local port -> (domid, notify socket path)
        self._ports: dict[int, tuple[int, str]] = {}
        #: domid -> its bound local port
        self._domain_port: dict[int, int] = {}
        #: sender address -> domid (None: not a guest's notify socket)
        self._senders: dict[str, int | None] = {}
        self._qlen = _dgram_qlen()
        self._burst = 0
        #: FIONREAD's answer (the next datagram's length)
        self._probe = bytearray(4)

    # -- event channels ---------------------------------------------------------------
    def fileno(self) -> int:
        return self._sock.fileno()

    def _sender(self, addr: object) -> int | None:
        if not isinstance(addr, str) or not addr:
            return None
        cached = self._senders.get(addr, -1)
        if cached != -1:
            return cached
        name = os.path.basename(addr)
        domid: int | None = None
        if name.startswith("notify.") and name[7:].isdigit() and len(name) <= 12:
            domid = int(name[7:])
        if len(self._senders) > 65536:
            self._senders.clear()
        self._senders[addr] = domid
        return domid

    def pending(self) -> list[int]:
        """Ports kicked since the last call: at least the first queued kick, and all of
        them once a full queue's worth was read since the socket was last seen empty.

        Why not always drain to empty: seeing the socket empty costs a syscall (the
        FIONREAD probe, or a failing ``recvfrom``), which one kick per request (the
        common case) would pay every time. A kick can only have been refused if the
        queue held ``qlen`` datagrams at once, all of them sent after the socket was
        last seen empty, so they are all read before it is seen empty again: fewer than
        ``qlen`` reads since then prove that none was lost, whatever is still queued.
        So the socket is probed only from the ``qlen - 1``-th datagram on; until then
        one datagram is taken per call and the event loop, the socket being still
        readable, calls again for the next.
        """
        ports: list[int] = []
        recvfrom = self._sock.recvfrom
        domain_port = self._domain_port
        look_everywhere = False
        fd = self._sock.fileno()
        probe = self._probe
        trusted = self._qlen - 1
        for _ in range(_DRAIN_MAX):
            try:
                data, addr = recvfrom(16)
            except BlockingIOError:
                look_everywhere |= self._drained()
                break
            except InterruptedError:
                continue
            self._burst += 1
            domid = self._sender(addr)
            if domid is not None:
                port = domain_port.get(domid)
                if port is not None:
                    ports.append(port)
            elif int.from_bytes(data[:4], "little") == VIRQ_PORT and len(data) >= 4:
                ports.append(VIRQ_PORT)
            else:
                look_everywhere = True
            if self._burst < trusted:
                break  # none can have been lost yet (see above): the rest come next call
            # Empty now? (A zero-length datagram also reads 0 here: it is read on the
            # next wake-up, the socket being still readable.)
            fcntl.ioctl(fd, termios.FIONREAD, probe)
            if not any(probe):
                look_everywhere |= self._drained()
                break
        if look_everywhere:
            ports.append(ANY_PORT)
        return ports

    def _drained(self) -> bool:
        """The socket is empty: True if the drain took a full queue's worth of kicks, so
        that a guest's kick may have been refused (lost)."""
        full = self._burst >= self._qlen
        self._burst = 0
        return full

    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        if self._free_ports:
            port = self._free_ports.pop()
        else:
            port = self._next_port
            self._next_port += 1
        self._ports[port] = (domid, os.path.join(self.dir, f"notify.{domid}"))
        self._domain_port[domid] = port
        return port

    def adopt_port(self, domid: int, port: int) -> None:
        """Live update: ``port`` was bound to ``domid`` by the process we replaced."""
        self._ports[port] = (domid, os.path.join(self.dir, f"notify.{domid}"))
        self._domain_port[domid] = port
        if port in self._free_ports:
            self._free_ports.remove(port)
        self._next_port = max(self._next_port, port + 1)

    def inheritable(self) -> list[int]:
        """Descriptors a live update keeps across exec (the evtchn socket)."""
        return [self._sock.fileno()]

    def prepare_exec(self) -> None:
        """Nothing to release: the simulated VIRQ needs no binding."""

    def undo_exec(self) -> None:
        """Nothing was released."""

    def unbind(self, port: int) -> None:
        self._disconnect(port)
        entry = self._ports.pop(port, None)
        if entry is None:
            return
        if self._domain_port.get(entry[0]) == port:
            del self._domain_port[entry[0]]
        self._free_ports.append(port)

    def notify(self, port: int) -> None:
        # A socket connected to the guest's notify socket saves the kernel a path lookup
        # per notification (they are as frequent as requests). Guests read the port
        # number, not the sender. A missing or replaced guest socket is not an error.
        peer = self._peers.get(port)
        if peer is None:
            peer = self._connect(port)
            if peer is None:
                return
        try:
            peer.send(port.to_bytes(4, "little"), socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass  # the guest has notifications queued already
        except OSError:
            self._disconnect(port)
            peer = self._connect(port)
            if peer is not None:
                with contextlib.suppress(OSError):
                    peer.send(port.to_bytes(4, "little"), socket.MSG_DONTWAIT)

    def _connect(self, port: int) -> socket.socket | None:
        entry = self._ports.get(port)
        if entry is None:
            return None
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            peer.connect(entry[1])
        except OSError:
            peer.close()
            return None
        self._peers[port] = peer
        return peer

    def _disconnect(self, port: int) -> None:
        peer = self._peers.pop(port, None)
        if peer is not None:
            peer.close()

    # -- pages ------------------------------------------------------------------------
    def map_ring(self, domid: int) -> SimMapping:
        return SimMapping(os.path.join(self.dir, f"ring.{domid}"))

    def _ensure_dom0_files(self) -> None:
        ring0 = os.path.join(self.dir, "ring.0")
        if not os.path.exists(ring0):
            fd = os.open(ring0, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, _PAGE)
            finally:
                os.close(fd)
        port_file = os.path.join(self.dir, "xsd_port")
        if not os.path.exists(port_file):
            with open(port_file, "wb") as f:
                f.write(_DEFAULT_XSD_PORT)

    def own_port(self) -> int | None:
        self._ensure_dom0_files()
        with open(os.path.join(self.dir, "xsd_port"), "rb") as f:
            return int(f.read().strip() or b"0")

    def map_own_ring(self) -> tuple[SimMapping, int] | None:
        port = self.own_port()
        if not port:
            return None
        return self.map_ring(0), port

    # -- domains ----------------------------------------------------------------------
    def domain_exists(self, domid: int) -> bool:
        if not 0 <= domid < self.ndoms:
            return False
        return not os.path.exists(os.path.join(self.dir, f"dying.{domid}"))

    def domain_changes(self, known: set[int]) -> list[tuple[int, DomainState]]:
        out: list[tuple[int, DomainState]] = []
        with os.scandir(self.dir) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("dying.") and name[6:].isdigit():
                    out.append((int(name[6:]), DomainState.DEAD))
        return out

    def close(self) -> None:
        for port in list(self._peers):
            self._disconnect(port)
        if self._sock.fileno() >= 0:
            self._sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self._evtchn_path)
