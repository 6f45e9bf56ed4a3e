"""The Linux Xen backend: /dev/xen/evtchn, /dev/xen/gntdev, /proc/xen/xsd_{kva,port}.

Everything a real hypervisor is needed for is in :class:`LinuxXen` and is kept thin: each
method is one ioctl, read, write or mmap (xenstore-protocol.md §7.4; Linux
``include/uapi/xen/evtchn.h`` and ``gntdev.h``; libxenevtchn and libxengnttab
``linux.c``). The ioctl numbers are computed from the kernel's ``_IOC`` rule
(asm-generic: ``dir << 30 | size << 16 | type << 8 | nr``, ``_IOC_NONE = 0``) over the
``sizeof`` of the ctypes mirrors of the kernel structs below; the tests recompute both
independently. Device paths, ``ioctl`` and the domain-state library are injectable so
that everything but the kernel itself can be tested without Xen.

Domain state (VIRQ_DOM_EXC): libxenmanage's ``xenmanage_poll_changed_domain`` when the
library exists (Xen 4.21+: cost proportional to the domains that changed), else
libxenctrl's ``xc_domain_getinfolist`` for each domain the caller knows (what C
xenstored did before 4.21).

Grant mapping follows libxengnttab: SET_MAX_GRANTS once (Linux's gntdev never implemented
it and answers ``ENOTTY``, which libxengnttab ignores, and so do we), MAP_GRANT_REF with
``{count=1, refs[0]={domid, ref=1}}`` returning an offset, ``mmap`` of that offset;
unmapping is ``munmap`` then UNMAP_GRANT_REF. Event ports are read from the evtchn
device as native u32 values and each one is written back to unmask it.

Dom0's own page, ``/proc/xen/xsd_kva``, is a file that reports size 0 but maps one page
(xenfs). Python's ``mmap.mmap`` refuses a mapping longer than a regular file, so the page is
mapped by mmap(2) itself, in place over an anonymous ``mmap.mmap`` page of ours
(``MAP_FIXED``): the ``mmap`` object then owns the mapping, counts its exported views and
unmaps it on close, exactly as for a gntdev page.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import mmap
import os
from collections.abc import Callable
from typing import Any

from .base import ANY_PORT, DomainState

__all__ = [
    "EVTCHN_PATH",
    "GNTDEV_PATH",
    "GNTTAB_RESERVED_XENSTORE",
    "IOCTL_EVTCHN_BIND_INTERDOMAIN",
    "IOCTL_EVTCHN_BIND_VIRQ",
    "IOCTL_EVTCHN_NOTIFY",
    "IOCTL_EVTCHN_RESET",
    "IOCTL_EVTCHN_UNBIND",
    "IOCTL_GNTDEV_MAP_GRANT_REF",
    "IOCTL_GNTDEV_SET_MAX_GRANTS",
    "IOCTL_GNTDEV_UNMAP_GRANT_REF",
    "VIRQ_DOM_EXC",
    "DomainInfo",
    "GntdevMapping",
    "LinuxXen",
    "ioc",
]

log = logging.getLogger("pyxenstored.xen")

EVTCHN_PATH = "/dev/xen/evtchn"
GNTDEV_PATH = "/dev/xen/gntdev"
XSD_KVA_PATH = "/proc/xen/xsd_kva"
XSD_PORT_PATH = "/proc/xen/xsd_port"

VIRQ_DOM_EXC = 3
GNTTAB_RESERVED_XENSTORE = 1
DOMID_FIRST_RESERVED = 0x7FF0
_PAGE = 4096
#: MAP_FIXED (asm-generic/mman-common.h; Python's mmap module does not export it)
_MAP_FIXED = 0x10

_IOC_NONE = 0
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30


def ioc(direction: int, kind: str, nr: int, size: int) -> int:
    """The kernel's ``_IOC(dir, type, nr, size)`` (asm-generic/ioctl.h)."""
    return (
        (direction << _IOC_DIRSHIFT)
        | (ord(kind) << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


# -- include/uapi/xen/evtchn.h --------------------------------------------------------------
class EvtchnBindVirq(ctypes.Structure):
    _fields_ = [("virq", ctypes.c_uint)]


class EvtchnBindInterdomain(ctypes.Structure):
    _fields_ = [("remote_domain", ctypes.c_uint), ("remote_port", ctypes.c_uint)]


class EvtchnUnbind(ctypes.Structure):
    _fields_ = [("port", ctypes.c_uint)]


class EvtchnNotify(ctypes.Structure):
    _fields_ = [("port", ctypes.c_uint)]


# -- include/uapi/xen/gntdev.h --------------------------------------------------------------
class GntdevGrantRef(ctypes.Structure):
    _fields_ = [("domid", ctypes.c_uint32), ("ref", ctypes.c_uint32)]


class GntdevMapGrantRef(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("index", ctypes.c_uint64),
        ("refs", GntdevGrantRef * 1),
    ]


class GntdevUnmapGrantRef(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint64), ("count", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class GntdevSetMaxGrants(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint32)]


IOCTL_EVTCHN_BIND_VIRQ = ioc(_IOC_NONE, "E", 0, ctypes.sizeof(EvtchnBindVirq))
IOCTL_EVTCHN_BIND_INTERDOMAIN = ioc(_IOC_NONE, "E", 1, ctypes.sizeof(EvtchnBindInterdomain))
IOCTL_EVTCHN_UNBIND = ioc(_IOC_NONE, "E", 3, ctypes.sizeof(EvtchnUnbind))
IOCTL_EVTCHN_NOTIFY = ioc(_IOC_NONE, "E", 4, ctypes.sizeof(EvtchnNotify))
IOCTL_EVTCHN_RESET = ioc(_IOC_NONE, "E", 5, 0)
IOCTL_GNTDEV_MAP_GRANT_REF = ioc(_IOC_NONE, "G", 0, ctypes.sizeof(GntdevMapGrantRef))
IOCTL_GNTDEV_UNMAP_GRANT_REF = ioc(_IOC_NONE, "G", 1, ctypes.sizeof(GntdevUnmapGrantRef))
IOCTL_GNTDEV_SET_MAX_GRANTS = ioc(_IOC_NONE, "G", 3, ctypes.sizeof(GntdevSetMaxGrants))


# -- domain state -----------------------------------------------------------------------------
class DomainInfo(ctypes.Structure):
    """The leading, stable part of ``struct xen_domctl_getdomaininfo`` (xc_domaininfo_t)."""

    _fields_ = [("domain", ctypes.c_uint16), ("pad1", ctypes.c_uint16), ("flags", ctypes.c_uint32)]


XEN_DOMINF_DYING = 1 << 0
XEN_DOMINF_SHUTDOWN = 1 << 2
#: bytes reserved per xc_domaininfo_t (the full struct is < 200 bytes on every arch)
_DOMAININFO_ROOM = 512

XENMANAGE_STATE_EXIST = 0x1
XENMANAGE_STATE_SHUTDOWN = 0x2
XENMANAGE_STATE_DYING = 0x4
XENMANAGE_STATE_DEAD = 0x8


def state_from_xenmanage(state: int) -> DomainState | None:
    """A xenmanage state word as what xenstored cares about (C ``domain_handle_...``)."""
    if not state & XENMANAGE_STATE_EXIST or state & (XENMANAGE_STATE_DEAD | XENMANAGE_STATE_DYING):
        return DomainState.DEAD
    if state & XENMANAGE_STATE_SHUTDOWN:
        return DomainState.SHUTDOWN
    return None


def state_from_dominf(domid: int, count: int, info: DomainInfo) -> DomainState | None:
    """The result of ``xc_domain_getinfolist(domid, 1)`` as a state (None: running)."""
    if count < 1 or info.domain != domid or info.flags & XEN_DOMINF_DYING:
        return DomainState.DEAD
    if info.flags & XEN_DOMINF_SHUTDOWN:
        return DomainState.SHUTDOWN
    return None


class DomainStateQuery:
    """libxenmanage or libxenctrl through ctypes (loaded lazily, only on real Xen)."""

    def __init__(self) -> None:
        self._manage: Any = None
        self._ctrl: Any = None
        self._handle: Any = None
        name = ctypes.util.find_library("xenmanage")
        if name:
            lib = ctypes.CDLL(name, use_errno=True)
            lib.xenmanage_open.restype = ctypes.c_void_p
            handle = lib.xenmanage_open(None, 0)
            if handle:
                self._manage, self._handle = lib, ctypes.c_void_p(handle)
                return
        name = ctypes.util.find_library("xenctrl")
        if not name:
            raise OSError(errno.ENOSYS, "neither libxenmanage nor libxenctrl is available")
        lib = ctypes.CDLL(name, use_errno=True)
        lib.xc_interface_open.restype = ctypes.c_void_p
        handle = lib.xc_interface_open(None, None, 0)
        if not handle:
            raise OSError(ctypes.get_errno(), "xc_interface_open failed")
        self._ctrl, self._handle = lib, ctypes.c_void_p(handle)

    def exists(self, domid: int) -> bool:
        return self.state(domid) is not DomainState.DEAD

    def state(self, domid: int) -> DomainState | None:
        if self._manage is not None:
            st = ctypes.c_uint()
            if self._manage.xenmanage_get_domain_info(
                self._handle, ctypes.c_uint(domid), ctypes.byref(st), None, None
            ):
                return DomainState.DEAD
            return state_from_xenmanage(st.value)
        buf = ctypes.create_string_buffer(_DOMAININFO_ROOM)
        count = self._ctrl.xc_domain_getinfolist(self._handle, ctypes.c_uint32(domid), 1, buf)
        return state_from_dominf(domid, count, DomainInfo.from_buffer(buf))

    def changes(self, known: set[int]) -> list[tuple[int, DomainState]]:
        out: list[tuple[int, DomainState]] = []
        if self._manage is not None:
            domid, st = ctypes.c_uint(), ctypes.c_uint()
            while not self._manage.xenmanage_poll_changed_domain(
                self._handle, ctypes.byref(domid), ctypes.byref(st), None, None
            ):
                state = state_from_xenmanage(st.value)
                if state is not None:
                    out.append((domid.value, state))
            return out
        for domid_ in sorted(known):
            state = self.state(domid_)
            if state is not None:
                out.append((domid_, state))
        return out


# -- the backend ----------------------------------------------------------------------------
Ioctl = Callable[[int, int, bytearray], int]

_libc: Any = None


def _mmap_syscall() -> Any:
    """libc's mmap(2), typed (loaded once)."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        _libc = lib
    return _libc.mmap


def map_file_page(fd: int) -> mmap.mmap:
    """One shared, writable page of ``fd`` at offset 0, whatever size the file reports.

    xenfs's ``xsd_kva`` says it is 0 bytes long; mmap(2) maps it anyway, Python's
    ``mmap.mmap`` does not. So reserve a page with ``mmap.mmap`` and map the file over it
    with ``MAP_FIXED``: the returned object owns the file's page from then on.

    Raises:
        OSError: mmap(2) refused (errno kept).
    """
    mm = mmap.mmap(-1, _PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    anchor = ctypes.c_char.from_buffer(mm)
    address = ctypes.addressof(anchor)
    del anchor  # the export would keep mm from closing
    got = _mmap_syscall()(
        address,
        _PAGE,
        mmap.PROT_READ | mmap.PROT_WRITE,
        mmap.MAP_SHARED | _MAP_FIXED,
        fd,
        0,
    )
    if got is None or got == ctypes.c_void_p(-1).value or got != address:
        code = ctypes.get_errno() or errno.EINVAL
        mm.close()
        raise OSError(code, os.strerror(code))
    return mm


def _ioctl(fd: int, request: int, arg: bytearray) -> int:
    return int(fcntl.ioctl(fd, request, arg, True))


class GntdevMapping:
    """One page of a foreign domain mapped through gntdev (or the xsd_kva page)."""

    __slots__ = ("_gntdev", "_index", "_ioctl", "_mm", "_page")

    def __init__(self, mm: mmap.mmap, gntdev: int | None, index: int, ioctl: Ioctl) -> None:
        self._mm = mm
        self._gntdev = gntdev
        self._index = index
        self._ioctl = ioctl
        self._page: memoryview | None = memoryview(mm)

    @property
    def page(self) -> memoryview:
        if self._page is None:
            raise ValueError("mapping closed")
        return self._page

    def close(self) -> None:
        if self._page is None:
            return
        self._page.release()
        self._page = None
        self._mm.close()
        if self._gntdev is not None:
            req = GntdevUnmapGrantRef(index=self._index, count=1)
            buf = bytearray(req)
            try:
                self._ioctl(self._gntdev, IOCTL_GNTDEV_UNMAP_GRANT_REF, buf)
            except OSError as err:
                log.warning("gntdev unmap of offset %#x failed: %s", self._index, err)


class LinuxXen:
    """The daemon side of real Xen on Linux (see the module docstring)."""

    def __init__(
        self,
        *,
        evtchn_path: str = EVTCHN_PATH,
        gntdev_path: str = GNTDEV_PATH,
        xsd_kva_path: str = XSD_KVA_PATH,
        xsd_port_path: str = XSD_PORT_PATH,
        ioctl: Ioctl = _ioctl,
        domains: Any = None,
        evtchn_fd: int = -1,
    ) -> None:
        self._ioctl = ioctl
        self._xsd_kva_path = xsd_kva_path
        self._xsd_port_path = xsd_port_path
        if evtchn_fd >= 0:
            # Live update: the event-channel device was inherited across exec with every
            # domain's port still bound on it (VIRQ_DOM_EXC was unbound before exec).
            self._evtchn = evtchn_fd
            os.set_inheritable(evtchn_fd, False)
            os.set_blocking(evtchn_fd, False)
        else:
            self._evtchn = os.open(evtchn_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._gntdev = -1
        try:
            self._gntdev = os.open(gntdev_path, os.O_RDWR | os.O_CLOEXEC)
            self._set_max_grants()
            self._domains = domains if domains is not None else DomainStateQuery()
            self.virq_port = self._call(
                self._evtchn, IOCTL_EVTCHN_BIND_VIRQ, EvtchnBindVirq(virq=VIRQ_DOM_EXC)
            )[0]
        except BaseException:
            self.close()
            raise

    def _set_max_grants(self) -> None:
        """SET_MAX_GRANTS, where the driver has it (Linux answers ENOTTY: no limit to set)."""
        try:
            self._call(
                self._gntdev,
                IOCTL_GNTDEV_SET_MAX_GRANTS,
                GntdevSetMaxGrants(count=DOMID_FIRST_RESERVED),
            )
        except OSError as err:
            if err.errno != errno.ENOTTY:
                raise

    def _call(self, fd: int, request: int, struct: ctypes.Structure) -> tuple[int, bytearray]:
        buf = bytearray(struct)
        return self._ioctl(fd, request, buf), buf

    # -- event channels ---------------------------------------------------------------
    def fileno(self) -> int:
        return self._evtchn

    def pending(self) -> list[int]:
        try:
            data = os.read(self._evtchn, 4 * 256)
        except BlockingIOError:
            return []
        except OSError as err:
            if err.errno != errno.EFBIG:
                raise
            # The kernel's event buffer overflowed: events were lost.
            self._ioctl(self._evtchn, IOCTL_EVTCHN_RESET, bytearray(0))
            return [ANY_PORT]
        n = len(data) // 4
        ports = list(memoryview(data)[: n * 4].cast("I"))
        if ports:
            os.write(self._evtchn, data[: n * 4])  # unmask every port we were told about
        return [int(p) for p in ports]

    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        req = EvtchnBindInterdomain(remote_domain=domid, remote_port=remote_port)
        return self._call(self._evtchn, IOCTL_EVTCHN_BIND_INTERDOMAIN, req)[0]

    def adopt_port(self, domid: int, port: int) -> None:
        """Live update: ``port`` is still bound on the inherited device; nothing to do."""

    def inheritable(self) -> list[int]:
        """Descriptors a live update keeps across exec (the event-channel device)."""
        return [self._evtchn]

    def prepare_exec(self) -> None:
        """Before a live update's exec: release VIRQ_DOM_EXC, which the new process binds
        again on the inherited device (as C xenstored does)."""
        self.unbind(self.virq_port)

    def undo_exec(self) -> None:
        """The exec failed: bind VIRQ_DOM_EXC again."""
        self.virq_port = self._call(
            self._evtchn, IOCTL_EVTCHN_BIND_VIRQ, EvtchnBindVirq(virq=VIRQ_DOM_EXC)
        )[0]

    def unbind(self, port: int) -> None:
        try:
            self._call(self._evtchn, IOCTL_EVTCHN_UNBIND, EvtchnUnbind(port=port))
        except OSError as err:
            log.warning("unbinding event channel %d failed: %s", port, err)

    def notify(self, port: int) -> None:
        try:
            self._call(self._evtchn, IOCTL_EVTCHN_NOTIFY, EvtchnNotify(port=port))
        except OSError as err:
            log.debug("notifying event channel %d failed: %s", port, err)

    # -- pages ------------------------------------------------------------------------
    def map_ring(self, domid: int) -> GntdevMapping:
        req = GntdevMapGrantRef(count=1)
        req.refs[0].domid = domid
        req.refs[0].ref = GNTTAB_RESERVED_XENSTORE
        _, buf = self._call(self._gntdev, IOCTL_GNTDEV_MAP_GRANT_REF, req)
        index = GntdevMapGrantRef.from_buffer(buf).index
        try:
            mm = mmap.mmap(
                self._gntdev,
                _PAGE,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
                offset=index,
            )
        except BaseException:
            self._call(
                self._gntdev,
                IOCTL_GNTDEV_UNMAP_GRANT_REF,
                GntdevUnmapGrantRef(index=index, count=1),
            )
            raise
        return GntdevMapping(mm, self._gntdev, index, self._ioctl)

    def own_port(self) -> int | None:
        try:
            with open(self._xsd_port_path, "rb") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def map_own_ring(self) -> tuple[GntdevMapping, int] | None:
        port = self.own_port()
        if port is None or not os.path.exists(self._xsd_kva_path):
            return None
        try:
            fd = os.open(self._xsd_kva_path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise OSError(err.errno, f"cannot open {self._xsd_kva_path}: {err.strerror}") from None
        try:
            mm = map_file_page(fd)
        except OSError as err:
            raise OSError(err.errno, f"cannot map {self._xsd_kva_path}: {err.strerror}") from None
        finally:
            os.close(fd)
        return GntdevMapping(mm, None, 0, self._ioctl), port

    # -- domains ----------------------------------------------------------------------
    def domain_exists(self, domid: int) -> bool:
        return bool(self._domains.exists(domid))

    def domain_changes(self, known: set[int]) -> list[tuple[int, DomainState]]:
        return list(self._domains.changes(known))

    def close(self) -> None:
        for attr in ("_gntdev", "_evtchn"):
            fd = getattr(self, attr, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
