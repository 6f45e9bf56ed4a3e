"""The Linux backend without Xen: ioctl numbers and struct layouts against the kernel's
definitions, and every method driven through fake devices and a fake ioctl."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from pyxenstored.transports import xen_linux as xl
from pyxenstored.transports.base import ANY_PORT, DomainState
from pyxenstored.transports.ring import ServerRing


def ioc_rule(direction: int, kind: int, nr: int, size: int) -> int:
    """asm-generic/ioctl.h's _IOC, written out independently of the module under test."""
    nrbits, typebits, sizebits = 8, 8, 14
    nrshift = 0
    typeshift = nrshift + nrbits
    sizeshift = typeshift + typebits
    dirshift = sizeshift + sizebits
    assert size < (1 << sizebits)
    return (direction << dirshift) | (kind << typeshift) | (nr << nrshift) | (size << sizeshift)


IOC_NONE = 0

# Sizes of the kernel structs, from include/uapi/xen/{evtchn,gntdev}.h field by field.
KERNEL_SIZES = {
    "ioctl_evtchn_bind_virq": 4,  # unsigned int virq
    "ioctl_evtchn_bind_interdomain": 8,  # unsigned int remote_domain, remote_port
    "ioctl_evtchn_unbind": 4,  # unsigned int port
    "ioctl_evtchn_notify": 4,  # unsigned int port
    "ioctl_gntdev_map_grant_ref": 24,  # u32 count, u32 pad, u64 index, {u32 domid, u32 ref}[1]
    "ioctl_gntdev_unmap_grant_ref": 16,  # u64 index, u32 count, u32 pad
    "ioctl_gntdev_set_max_grants": 4,  # u32 count
}


def test_ioctl_numbers_follow_the_ioc_rule() -> None:
    e, g = ord("E"), ord("G")
    s = KERNEL_SIZES
    expected = {
        "IOCTL_EVTCHN_BIND_VIRQ": ioc_rule(IOC_NONE, e, 0, s["ioctl_evtchn_bind_virq"]),
        "IOCTL_EVTCHN_BIND_INTERDOMAIN": ioc_rule(
            IOC_NONE, e, 1, s["ioctl_evtchn_bind_interdomain"]
        ),
        "IOCTL_EVTCHN_UNBIND": ioc_rule(IOC_NONE, e, 3, s["ioctl_evtchn_unbind"]),
        "IOCTL_EVTCHN_NOTIFY": ioc_rule(IOC_NONE, e, 4, s["ioctl_evtchn_notify"]),
        "IOCTL_EVTCHN_RESET": ioc_rule(IOC_NONE, e, 5, 0),
        "IOCTL_GNTDEV_MAP_GRANT_REF": ioc_rule(IOC_NONE, g, 0, s["ioctl_gntdev_map_grant_ref"]),
        "IOCTL_GNTDEV_UNMAP_GRANT_REF": ioc_rule(IOC_NONE, g, 1, s["ioctl_gntdev_unmap_grant_ref"]),
        "IOCTL_GNTDEV_SET_MAX_GRANTS": ioc_rule(IOC_NONE, g, 3, s["ioctl_gntdev_set_max_grants"]),
    }
    actual = {name: getattr(xl, name) for name in expected}
    assert actual == expected


def test_ioctl_numbers_match_the_protocol_reference() -> None:
    """The (derived) values listed in xenstore-protocol.md §7.4."""
    assert xl.IOCTL_GNTDEV_MAP_GRANT_REF == 0x00184700
    assert xl.IOCTL_GNTDEV_UNMAP_GRANT_REF == 0x00104701
    assert xl.IOCTL_GNTDEV_SET_MAX_GRANTS == 0x00044703
    assert xl.IOCTL_EVTCHN_BIND_VIRQ == 0x00044500
    assert xl.IOCTL_EVTCHN_BIND_INTERDOMAIN == 0x00084501
    assert xl.IOCTL_EVTCHN_UNBIND == 0x00044503
    assert xl.IOCTL_EVTCHN_NOTIFY == 0x00044504


def test_struct_layouts_match_the_kernel() -> None:
    assert ctypes.sizeof(xl.EvtchnBindVirq) == KERNEL_SIZES["ioctl_evtchn_bind_virq"]
    assert ctypes.sizeof(xl.EvtchnBindInterdomain) == 8
    assert xl.EvtchnBindInterdomain.remote_port.offset == 4
    assert ctypes.sizeof(xl.GntdevMapGrantRef) == 24
    assert xl.GntdevMapGrantRef.count.offset == 0
    assert xl.GntdevMapGrantRef.index.offset == 8
    assert xl.GntdevMapGrantRef.refs.offset == 16
    assert ctypes.sizeof(xl.GntdevGrantRef) == 8 and xl.GntdevGrantRef.ref.offset == 4
    assert ctypes.sizeof(xl.GntdevUnmapGrantRef) == 16
    assert xl.GntdevUnmapGrantRef.count.offset == 8
    assert ctypes.sizeof(xl.GntdevSetMaxGrants) == 4
    # xen_domctl_getdomaininfo: domid_t domain; uint16_t pad1; uint32_t flags; ...
    assert xl.DomainInfo.domain.offset == 0 and xl.DomainInfo.flags.offset == 4


def test_constants() -> None:
    assert xl.VIRQ_DOM_EXC == 3  # xen.h
    assert xl.GNTTAB_RESERVED_XENSTORE == 1  # grant_table.h
    assert xl.XEN_DOMINF_DYING == 1 and xl.XEN_DOMINF_SHUTDOWN == 4


def test_domain_state_decoding() -> None:
    assert xl.state_from_xenmanage(0x1) is None
    assert xl.state_from_xenmanage(0x1 | 0x2) is DomainState.SHUTDOWN
    assert xl.state_from_xenmanage(0x1 | 0x2 | 0x4) is DomainState.DEAD
    assert xl.state_from_xenmanage(0x8) is DomainState.DEAD
    assert xl.state_from_xenmanage(0) is DomainState.DEAD
    info = xl.DomainInfo(domain=5, flags=0)
    assert xl.state_from_dominf(5, 1, info) is None
    assert xl.state_from_dominf(5, 0, info) is DomainState.DEAD  # not found
    assert xl.state_from_dominf(4, 1, info) is DomainState.DEAD  # the next domain answered
    info.flags = xl.XEN_DOMINF_SHUTDOWN
    assert xl.state_from_dominf(5, 1, info) is DomainState.SHUTDOWN
    info.flags = xl.XEN_DOMINF_DYING | xl.XEN_DOMINF_SHUTDOWN
    assert xl.state_from_dominf(5, 1, info) is DomainState.DEAD


def test_xenctrl_query_walks_known_domains() -> None:
    class FakeCtrl:
        def xc_domain_getinfolist(self, handle: Any, first: Any, count: int, buf: Any) -> int:
            domid = first.value
            if domid == 9:
                return 0
            info = xl.DomainInfo.from_buffer(buf)
            info.domain = domid
            info.flags = xl.XEN_DOMINF_SHUTDOWN if domid == 3 else 0
            return 1

    query = xl.DomainStateQuery.__new__(xl.DomainStateQuery)
    query._manage, query._ctrl, query._handle = None, FakeCtrl(), None
    assert query.changes({1, 3, 9}) == [(3, DomainState.SHUTDOWN), (9, DomainState.DEAD)]
    assert query.exists(1) and not query.exists(9)


class FakeKernel:
    """Answers the ioctls like the Linux drivers would.

    Linux's gntdev has no SET_MAX_GRANTS (it answers ENOTTY, as every unknown ioctl);
    ``max_grants_errno=0`` plays a driver that has one.
    """

    def __init__(self, max_grants_errno: int = errno.ENOTTY) -> None:
        self.calls: list[tuple[int, int, bytes]] = []
        self.next_port = 40
        self.max_grants_errno = max_grants_errno

    def __call__(self, fd: int, request: int, arg: bytearray) -> int:
        self.calls.append((fd, request, bytes(arg)))
        if request == xl.IOCTL_GNTDEV_SET_MAX_GRANTS and self.max_grants_errno:
            raise OSError(self.max_grants_errno, os.strerror(self.max_grants_errno))
        if request in (xl.IOCTL_EVTCHN_BIND_VIRQ, xl.IOCTL_EVTCHN_BIND_INTERDOMAIN):
            self.next_port += 1
            return self.next_port
        if request == xl.IOCTL_GNTDEV_MAP_GRANT_REF:
            struct.pack_into("<Q", arg, 8, 0)  # index: offset 0 of the fake device file
            return 0
        return 0

    def requests(self) -> list[int]:
        return [req for _, req, _ in self.calls]


class FakeDomains:
    def exists(self, domid: int) -> bool:
        return domid < 10

    def changes(self, known: set[int]) -> list[tuple[int, DomainState]]:
        return [(d, DomainState.DEAD) for d in sorted(known) if d >= 5]


@pytest.fixture
def linux(tmp_path: Path) -> Any:
    evtchn = tmp_path / "evtchn"
    os.mkfifo(evtchn)
    gntdev = tmp_path / "gntdev"
    gntdev.write_bytes(bytes(4096))
    kva = tmp_path / "xsd_kva"
    kva.write_bytes(b"")  # xenfs reports size 0 for the page it maps
    (tmp_path / "xsd_port").write_text("7\n")
    kernel = FakeKernel()
    xen = xl.LinuxXen(
        evtchn_path=str(evtchn),
        gntdev_path=str(gntdev),
        xsd_kva_path=str(kva),
        xsd_port_path=str(tmp_path / "xsd_port"),
        ioctl=kernel,
        domains=FakeDomains(),
    )
    reader = os.open(evtchn, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(evtchn, os.O_WRONLY | os.O_NONBLOCK)
    yield xen, kernel, reader, writer, tmp_path
    xen.close()
    os.close(reader)
    os.close(writer)


def test_open_sets_max_grants_and_binds_virq(linux: Any) -> None:
    xen, kernel, *_ = linux
    assert kernel.requests() == [xl.IOCTL_GNTDEV_SET_MAX_GRANTS, xl.IOCTL_EVTCHN_BIND_VIRQ]
    assert kernel.calls[0][2] == struct.pack("<I", 0x7FF0)
    assert kernel.calls[1][2] == struct.pack("<I", 3)
    assert xen.virq_port == 41


def test_bind_notify_unbind(linux: Any) -> None:
    xen, kernel, *_ = linux
    port = xen.bind_interdomain(5, 17)
    assert port == 42
    assert kernel.calls[-1][1:] == (xl.IOCTL_EVTCHN_BIND_INTERDOMAIN, struct.pack("<II", 5, 17))
    xen.notify(port)
    assert kernel.calls[-1][1:] == (xl.IOCTL_EVTCHN_NOTIFY, struct.pack("<I", 42))
    xen.unbind(port)
    assert kernel.calls[-1][1:] == (xl.IOCTL_EVTCHN_UNBIND, struct.pack("<I", 42))


def test_pending_reads_ports_and_unmasks_them(linux: Any) -> None:
    xen, _, reader, writer, _ = linux
    assert xen.pending() == []
    os.write(writer, struct.pack("<3I", 42, 41, 42))
    assert xen.pending() == [42, 41, 42]
    # every port read is written back (the unmask)
    assert os.read(reader, 64) == struct.pack("<3I", 42, 41, 42)


def test_event_buffer_overflow_resets_and_looks_everywhere(
    linux: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    xen, kernel, *_ = linux

    def overflow(fd: int, n: int) -> bytes:
        raise OSError(errno.EFBIG, "overflow")

    monkeypatch.setattr(os, "read", overflow)  # the module's os.read
    assert xen.pending() == [ANY_PORT]
    assert kernel.requests()[-1] == xl.IOCTL_EVTCHN_RESET


def test_map_grant_ref_one_then_unmap(linux: Any) -> None:
    xen, kernel, *_ = linux
    mapping = xen.map_ring(5)
    _, req, arg = kernel.calls[-1]
    assert req == xl.IOCTL_GNTDEV_MAP_GRANT_REF
    assert arg == struct.pack("<IIQII", 1, 0, 0, 5, 1)  # count=1, refs[0] = {domid 5, ref 1}
    ring = ServerRing(mapping.page)
    ring.advertise(14)
    ring.release()
    mapping.close()
    assert kernel.calls[-1][1:] == (xl.IOCTL_GNTDEV_UNMAP_GRANT_REF, struct.pack("<QII", 0, 1, 0))
    mapping.close()  # idempotent
    assert kernel.requests().count(xl.IOCTL_GNTDEV_UNMAP_GRANT_REF) == 1


def test_set_max_grants_enotty_is_ignored_other_errors_are_not(tmp_path: Path) -> None:
    """Regression (issue 8): Linux's gntdev answers ENOTTY; the daemon exited on it."""
    evtchn = tmp_path / "evtchn"
    evtchn.write_bytes(b"")
    gntdev = tmp_path / "gntdev"
    gntdev.write_bytes(bytes(4096))
    for code in (errno.ENOTTY, 0):
        kernel = FakeKernel(max_grants_errno=code)
        xen = xl.LinuxXen(
            evtchn_path=str(evtchn), gntdev_path=str(gntdev), ioctl=kernel, domains=FakeDomains()
        )
        assert kernel.requests() == [xl.IOCTL_GNTDEV_SET_MAX_GRANTS, xl.IOCTL_EVTCHN_BIND_VIRQ]
        xen.close()
    with pytest.raises(OSError) as info:
        xl.LinuxXen(
            evtchn_path=str(evtchn),
            gntdev_path=str(gntdev),
            ioctl=FakeKernel(max_grants_errno=errno.EPERM),
            domains=FakeDomains(),
        )
    assert info.value.errno == errno.EPERM


def test_map_file_page_maps_a_file_that_reports_size_zero(tmp_path: Path) -> None:
    """Regression (issue 8): /proc/xen/xsd_kva is 0 bytes long; mmap.mmap refused it."""
    path = tmp_path / "kva"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        mm = xl.map_file_page(fd)
    finally:
        os.close(fd)
    os.truncate(path, 4096)  # give the fake page backing store (xenfs has a real page)
    mm[100:105] = b"hello"
    assert path.read_bytes()[100:105] == b"hello"  # MAP_SHARED, at offset 0 of the file
    with path.open("r+b") as f:
        f.seek(200)
        f.write(b"world")
    assert mm[200:205] == b"world"
    view = memoryview(mm)
    with pytest.raises(BufferError):
        mm.close()  # the mmap object still counts exported views
    view.release()
    mm.close()


def test_map_file_page_reports_errno(tmp_path: Path) -> None:
    path = tmp_path / "ro"
    path.write_bytes(bytes(4096))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            xl.map_file_page(fd)  # a writable shared map of a read-only descriptor
    finally:
        os.close(fd)
    assert info.value.errno == errno.EACCES


def test_own_ring_is_xsd_kva_and_xsd_port(linux: Any) -> None:
    xen, _, _, _, tmp_path = linux
    own = xen.map_own_ring()
    assert own is not None
    os.truncate(tmp_path / "xsd_kva", 4096)  # the fake page's backing store
    mapping, port = own
    assert port == 7
    ring = ServerRing(mapping.page)
    ring.advertise(14)
    ring.release()
    mapping.close()
    assert (tmp_path / "xsd_kva").read_bytes()[2064:2068] == struct.pack("<I", 14)


def test_domain_questions_go_to_the_state_query(linux: Any) -> None:
    xen, *_ = linux
    assert xen.domain_exists(3) and not xen.domain_exists(12)
    assert xen.domain_changes({1, 6}) == [(6, DomainState.DEAD)]


def test_missing_devices_fail_cleanly(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        xl.LinuxXen(evtchn_path=str(tmp_path / "nope"), ioctl=FakeKernel(), domains=FakeDomains())
