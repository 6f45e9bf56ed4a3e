"""End to end through simulated rings with real processes: the daemon (``python -m
pyxenstored --sim-xen``) and several guest processes; and stub-domain mode, where the
daemon serves no socket and dom0 and two guests talk to it through rings only."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyxenstored import errors
from pyxenstored.client.aio import Client
from pyxenstored.client.ring import RingChannel, SimGuest
from pyxenstored.client.sync import Client as SyncClient
from pyxenstored.transports.ring import GuestRing

from .simharness import PYTHON, kill_domain, run, short_dir, subprocess_env

GUEST = str(Path(__file__).with_name("guest_proc.py"))
KEYS = 40


class Procs:
    """Processes started by one test; all killed at teardown."""

    def __init__(self) -> None:
        self.dir = short_dir()
        self.fakexen = self.dir / "fakexen"
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        with open(self.dir / f"proc{len(self.procs)}.err", "w") as err:
            proc = subprocess.Popen(
                [PYTHON, *args],
                env=env or subprocess_env(),
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.procs.append(proc)
        return proc

    def daemon(self, *args: str) -> subprocess.Popen[str]:
        return self.spawn("-m", "pyxenstored", "-N", "--sim-xen", str(self.fakexen), *args)

    def guest(self, domid: int) -> subprocess.Popen[str]:
        proc = self.spawn(GUEST, str(self.fakexen), str(domid), str(KEYS))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "page", self.errors()
        return proc

    def errors(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.dir.glob("*.err")))

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    f.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.cleanup()


def wait_for(cond: object, what: str, procs: Procs, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}\n{procs.errors()}")
        time.sleep(0.01)


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def ready(proc: subprocess.Popen[str], procs: Procs) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", procs.errors()


def introduce(dom0: SyncClient, domid: int) -> None:
    """What the toolstack does before a guest's first request: its home, a control
    directory dom0 writes, and INTRODUCE."""
    home = f"/local/domain/{domid}"
    dom0.mkdir(home)
    dom0.set_perms(home, [f"n{domid}"])
    dom0.mkdir(f"{home}/control")
    dom0.set_perms(f"{home}/control", ["n0", f"r{domid}"])
    dom0.introduce(domid, 0, 100 + domid)


def start_guests(
    procs: Procs, dom0: SyncClient, domids: list[int]
) -> dict[int, subprocess.Popen[str]]:
    """Guest processes for ``domids``, introduced and each waiting on its watch."""
    guests = {}
    for domid in domids:
        guests[domid] = procs.guest(domid)
        introduce(dom0, domid)
    for proc in guests.values():
        go(proc)
    for proc in guests.values():
        ready(proc, procs)
    return guests


def test_several_guest_processes(procs: Procs) -> None:
    sock = str(procs.dir / "socket")
    daemon = procs.daemon("--socket", sock)
    wait_for(lambda: os.path.exists(sock), "daemon socket", procs)
    domids = [1, 2, 3, 4]
    with SyncClient(sock, timeout=10) as dom0:
        dom0.watch("@releaseDomain", "rel")
        assert dom0.read_watch(timeout=5) is not None
        guests = start_guests(procs, dom0, domids)
        for domid in domids:
            dom0.write(f"/local/domain/{domid}/control/cmd", f"stop-{domid}")
        for domid, proc in guests.items():
            assert proc.wait(20) == 0, procs.errors()
            assert dom0.read(f"/local/domain/{domid}/data/done") == f"stop-{domid}".encode()
            assert len(dom0.directory(f"/local/domain/{domid}/data")) == KEYS + 1
        # a guest cannot touch another's home
        assert dom0.get_perms("/local/domain/1/data/k0") == ["n1"]
        # death of domain 3: nodes gone, watchers told
        kill_domain(procs.fakexen, 3)
        event = dom0.read_watch(timeout=5)
        assert event is not None and event.path == "@releaseDomain"
        assert not dom0.is_domain_introduced(3)
        with pytest.raises(errors.NoEntry):
            dom0.read("/local/domain/3/data/k0")
        dom0.release(4)
        assert not dom0.is_domain_introduced(4)
        assert dom0.is_domain_introduced(1)
    assert daemon.poll() is None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert not os.path.exists(procs.fakexen / "evtchn")


def test_stub_domain_mode_rings_only(procs: Procs) -> None:
    """dom0 and two guests, entirely through rings; the daemon serves no socket."""
    fakexen = procs.fakexen
    fakexen.mkdir()
    (fakexen / "ring.0").write_bytes(bytes(4096))  # the environment: dom0's page and port
    (fakexen / "xsd_port").write_text("5\n")
    env_socket = procs.dir / "socket"
    daemon = procs.spawn(
        "-m",
        "pyxenstored",
        "-N",
        "--stub-domain",
        "--sim-xen",
        str(fakexen),
        env=dict(subprocess_env(), XENSTORED_PATH=str(env_socket)),
    )
    page = bytearray(0)

    def dom0_served() -> bool:
        nonlocal page
        page = bytearray((fakexen / "ring.0").read_bytes())
        return os.path.exists(fakexen / "evtchn") and GuestRing(page).server_features != 0

    wait_for(dom0_served, "dom0's ring served", procs)
    assert GuestRing(page).server_features == 15

    async def body() -> None:
        dom0 = Client(RingChannel(SimGuest(str(fakexen), 0, create=False), poll=0.2))
        try:
            assert await dom0.is_domain_introduced(0)
            await dom0.write("/tool/test", b"from dom0's ring")  # privileged
            await dom0.watch("@releaseDomain", "rel")
            await dom0.next_event(5)
            guests = {}
            for domid in (1, 2):
                guests[domid] = procs.guest(domid)
                home = f"/local/domain/{domid}"
                await dom0.mkdir(home)
                await dom0.set_perms(home, [f"n{domid}"])
                await dom0.mkdir(f"{home}/control")
                await dom0.set_perms(f"{home}/control", ["n0", f"r{domid}"])
                await dom0.introduce(domid, 0, 100 + domid)
            loop = asyncio.get_running_loop()
            for proc in guests.values():
                go(proc)
            for proc in guests.values():
                await loop.run_in_executor(None, ready, proc, procs)
            for domid in guests:
                await dom0.write(f"/local/domain/{domid}/control/cmd", f"stop-{domid}")
            for domid, proc in guests.items():
                assert await loop.run_in_executor(None, proc.wait, 20) == 0, procs.errors()
                done = await dom0.read(f"/local/domain/{domid}/data/done")
                assert done == f"stop-{domid}".encode()
            await dom0.release(1)
            assert tuple(await dom0.next_event(5)) == ("@releaseDomain", "rel")
            kill_domain(fakexen, 2)
            assert tuple(await dom0.next_event(5)) == ("@releaseDomain", "rel")
            assert not await dom0.is_domain_introduced(2)
            with pytest.raises(errors.NoEntry):
                await dom0.read("/local/domain/2/data/done")
        finally:
            await dom0.close()

    run(body, timeout=60)
    assert not env_socket.exists()  # no Unix socket, not even the default one
    assert {p.name for p in procs.dir.iterdir()} <= {"fakexen"} | {
        p.name for p in procs.dir.glob("*.err")
    }
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0


def test_stub_domain_refuses_a_socket(procs: Procs) -> None:
    proc = procs.daemon("--stub-domain", "--socket", str(procs.dir / "s"))
    assert proc.wait(10) != 0
    assert "no Unix socket" in procs.errors()
    proc = procs.spawn("-m", "pyxenstored", "-N", "--stub-domain", "--xen", "none")
    assert proc.wait(10) != 0
    assert "hypervisor" in procs.errors()
