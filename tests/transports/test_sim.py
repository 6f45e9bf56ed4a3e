"""The simulated Xen backend (transports/sim.py) on its own."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyxenstored.transports.base import ANY_PORT, DomainState
from pyxenstored.transports.ring import GuestRing, ServerRing
from pyxenstored.transports.sim import VIRQ_PORT, SimXen


@pytest.fixture
def simdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sim-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def xen(simdir: Path) -> Iterator[SimXen]:
    x = SimXen(str(simdir), ndoms=20)
    yield x
    x.close()


def guest_socket(simdir: Path, domid: int) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(simdir / f"notify.{domid}"))
    s.setblocking(False)
    return s


def kick(sock: socket.socket, simdir: Path, port: int = 0) -> None:
    sock.sendto(port.to_bytes(4, "little"), str(simdir / "evtchn"))


def drain(xen: SimXen) -> list[int]:
    """Every kick queued: ``pending()`` until it reports the socket empty (the event loop
    calls it again while the socket is readable)."""
    ports: list[int] = []
    while True:
        got = xen.pending()
        if not got:
            return ports
        ports += got


def test_kicks_are_attributed_to_the_sender(xen: SimXen, simdir: Path) -> None:
    p3 = xen.bind_interdomain(3, 9)
    p4 = xen.bind_interdomain(4, 9)
    assert p3 != p4 and VIRQ_PORT not in (p3, p4)
    g3, g4 = guest_socket(simdir, 3), guest_socket(simdir, 4)
    kick(g4, simdir)
    kick(g3, simdir, port=1)  # a guest cannot fake VIRQ_DOM_EXC: its sender names it
    kick(g4, simdir)
    assert drain(xen) == [p4, p3, p4]
    assert xen.pending() == []
    g3.close()
    g4.close()


def test_unknown_senders(xen: SimXen, simdir: Path) -> None:
    anon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    kick(anon, simdir, port=1)
    assert xen.pending() == [VIRQ_PORT]
    kick(anon, simdir, port=0)
    assert xen.pending() == [ANY_PORT]
    stranger = guest_socket(simdir, 7)  # a guest that is not bound yet
    kick(stranger, simdir)
    assert xen.pending() == []
    anon.close()
    stranger.close()


def test_a_full_queue_means_look_everywhere(xen: SimXen, simdir: Path) -> None:
    port = xen.bind_interdomain(2, 9)
    g = guest_socket(simdir, 2)
    sent = 0
    while True:  # fill the daemon's queue until the kernel refuses (a lost kick)
        try:
            kick(g, simdir)
        except BlockingIOError:
            break
        sent += 1
        assert sent < 100000
    ports = drain(xen)
    assert ports.count(port) == sent
    assert ANY_PORT in ports
    kick(g, simdir)
    assert drain(xen) == [port]  # a short burst is trusted again
    g.close()


def test_one_kick_per_call_until_a_full_queue_could_have_been_refused(
    xen: SimXen, simdir: Path
) -> None:
    """Below a full queue's worth since the socket was last seen empty no kick can have
    been lost: one datagram per call, no probe; from qlen - 1 on, drained to empty."""
    port = xen.bind_interdomain(2, 9)
    qlen = xen._qlen
    g = guest_socket(simdir, 2)
    for _ in range(qlen - 2):
        kick(g, simdir)
    kick(g, simdir)
    for _ in range(qlen - 2):
        assert xen.pending() == [port]
    # the (qlen - 1)-th read probes, finds the socket empty: nothing lost, count reset
    assert xen.pending() == [port]
    assert xen._burst == 0
    assert xen.pending() == []
    # qlen kicks queued at once: read up to qlen - 1 one at a time, then drained; a
    # queue that held qlen may have refused one, so every ring is looked at.
    for _ in range(qlen):
        kick(g, simdir)
    ports = drain(xen)
    assert ports.count(port) == qlen
    assert ANY_PORT in ports
    g.close()


def test_notify_sends_the_port_and_ignores_missing_guests(xen: SimXen, simdir: Path) -> None:
    port = xen.bind_interdomain(6, 9)
    xen.notify(port)  # no notify.6 yet: not an error
    g = guest_socket(simdir, 6)
    xen.notify(port)
    assert g.recv(16) == port.to_bytes(4, "little")
    xen.unbind(port)
    xen.notify(port)
    with pytest.raises(BlockingIOError):
        g.recv(16)
    g.close()


def test_map_ring_is_shared_with_the_guest_file(xen: SimXen, simdir: Path) -> None:
    (simdir / "ring.5").write_bytes(bytes(4096))
    mapping = xen.map_ring(5)
    server = ServerRing(mapping.page)
    server.write(b"hello")
    server.release()
    mapping.close()
    mapping.close()
    data = bytearray((simdir / "ring.5").read_bytes())
    assert GuestRing(data).read() == b"hello"


def test_map_ring_refuses_missing_or_short_pages(xen: SimXen, simdir: Path) -> None:
    with pytest.raises(OSError):
        xen.map_ring(8)
    (simdir / "ring.8").write_bytes(bytes(100))
    with pytest.raises(OSError):
        xen.map_ring(8)


def test_domain_existence_and_death(xen: SimXen, simdir: Path) -> None:
    assert xen.domain_exists(0) and xen.domain_exists(19)
    assert not xen.domain_exists(20)
    (simdir / "dying.4").touch()
    assert not xen.domain_exists(4)
    assert xen.domain_changes({4, 5}) == [(4, DomainState.DEAD)]


def test_dom0_files_created_once_never_truncated(xen: SimXen, simdir: Path) -> None:
    own = xen.map_own_ring()
    assert own is not None
    mapping, port = own
    assert port == 5
    ServerRing(mapping.page).advertise(9)
    mapping.close()
    (simdir / "xsd_port").write_text("12")
    own = xen.map_own_ring()
    assert own is not None and own[1] == 12
    assert ServerRing(own[0].page).server_features == 9
    own[0].close()


def test_close_removes_the_event_socket(simdir: Path) -> None:
    x = SimXen(str(simdir))
    assert os.path.exists(simdir / "evtchn")
    x.close()
    x.close()
    assert not os.path.exists(simdir / "evtchn")
