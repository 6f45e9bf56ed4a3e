#!/usr/bin/env python3
"""Bootstorm: N concurrent libxl-style VM starts against any xenstore daemon.

Each VM start replays, request by request, what ``xl create`` of a PV guest sends to
xenstored (spec/xenstore-protocol.md §11.2, checked against libxl 4.22):

1. **T1** (``libxl__domain_make``): one transaction that removes and recreates
   ``/local/domain/D``, ``/vm/<uuid>`` and ``/libxl/D``, creates 19 directories as
   WRITE ``""`` + SET_PERMS, and writes ``vm``, ``name``, ``/vm/<uuid>/{uuid,name}``,
   two ``control/platform-feature-*`` keys and ``/libxl/D/type``.  Inside it,
   ``libxl__domain_rename`` reads ``image/device-model-domid`` and runs the
   **name-uniqueness scan** (DIRECTORY ``/local/domain`` + READ of every domain's
   ``name``), both outside the transaction (tx_id 0) while T1 is open, so every retry
   repeats the scan (``--scan before-t1`` runs it once, before T1, instead).
2. WRITE ``/libxl/D/dm-version`` outside any transaction.
3. READs of ``/tool/xenstored/domid``, ``/tool/xenconsoled/domid`` and ``~/vm``, then
   **T2** (``libxl__build_post``): ``memory/{static-max,target,videoram}``, ``domid``,
   ``store/{port,ring-ref}``, ``cpu/<i>/availability``, ``/vm/<uuid>/image/*`` and
   ``start_time``; then **INTRODUCE** (an error reply is tolerated and counted: a daemon
   without a hypervisor may refuse it).
4. **One transaction per device** (console, vbd, vif; ``libxl__device_generic_add``):
   the existence READ, RM of the libxl copy, RM/MKDIR/SET_PERMS of the frontend and
   backend directories, a WRITE (+ SET_PERMS for frontend keys) per key, and the
   backend keys written again under ``/libxl/D/device/...``.  38, 54 and 44 requests.
5. A new connection with a WATCH on ``@releaseDomain`` (xl's daemonised child), kept
   open until the end of the run.  The toolstack connection is closed.

Every transaction retries on EAGAIN at once, as libxl's ``retry_transaction`` loop
does, and every EAGAIN is counted.  Requests are sent one at a time per connection,
as libxenstore does.  One **backend watcher** connection (its own process) watches
``/local/domain/0/backend`` and READs the node named by every event, one at a time,
like a dom0 backend driver; after the storm a marker write measures how far behind it
is (``drain``).

The VM starts run concurrently: ``--workers`` processes, each running its share of
the VMs as asyncio tasks, each VM with its own connections.  With
``--transport ring`` every VM is also a simulated guest (spec/simulated-xen.md; the
daemon must serve the simulated Xen in ``--fakexen-dir``): its page is created before
INTRODUCE, which must then succeed, and after libxl's device transactions the guest's
vbd and vif frontends talk to the daemon through the guest's ring (READ of
``backend``, ``backend-id`` and the backend ``state``, a transaction writing the ring
references and event channel, then ``state`` = 3).  Ring mode imports
``pyxenstored.client.ring``; socket mode uses the standard library only.

    python benchmarks/bootstorm.py --socket /tmp/cxs/socket --vms 200
    python benchmarks/bootstorm.py --socket /tmp/pyx/socket --vms 200 --workers 4 --json out.json
    python benchmarks/compare.py --workloads bootstorm --daemon cxenstored \\
        --daemon pyxenstored --bootstorm-args "--vms 200"

Report: wall time, EAGAIN count, requests, requests/s, per-VM start latency median
and p95, errors, and with ``--daemon-pid`` the daemon's CPU time.  See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from xsbench import cli
from xsbench.aio import CONNECT_TIMEOUT, Conn, GuestConn, SocketConn, request
from xsbench.guests import import_client
from xsbench.measure import (
    DaemonCpu,
    JsonDict,
    cpu_per_request_us,
    load_cores,
    percentile,
    raise_nofile_limit,
)
from xsbench.procs import collect, die_with_parent, reap
from xsbench.report import fmt, fmt_pct, metric, print_table, run_and_report
from xsbench.wire import (
    XS_DIRECTORY,
    XS_ERROR,
    XS_INTRODUCE,
    XS_MKDIR,
    XS_READ,
    XS_RM,
    XS_SET_PERMS,
    XS_TRANSACTION_END,
    XS_TRANSACTION_START,
    XS_WATCH,
    XS_WRITE,
    Connection,
    XsError,
    error_name,
    path_arg,
    perms_arg,
    watch_arg,
    write_arg,
)

BACKEND_ROOT = "/local/domain/0/backend"
MARKER = f"{BACKEND_ROOT}/bootstorm-drain"
ENOENT = ("ENOENT",)
MAX_ERROR_SAMPLES = 20
# Transaction kinds, as counted in the report.
TXN_KINDS = ("T1", "T2", "device", "guest")


# --------------------------------------------------------------------------
# What libxl sends
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VmSpec:
    domid: int
    uuid: str
    name: str


@dataclass(frozen=True)
class Device:
    """One PV device as libxl__device_generic_add writes it."""

    kind: str
    devid: int
    frontend: str
    backend: str
    libxl: str
    front: tuple[tuple[str, str], ...]  # WRITE + SET_PERMS each
    back: tuple[tuple[str, str], ...]  # WRITE under backend, then under libxl
    front_readonly: bool  # console 0: the guest may not write its frontend
    guest_keys: tuple[tuple[str, str], ...]  # what the guest frontend writes (ring mode)


def vm_devices(vm: VmSpec) -> list[Device]:
    """Console 0, one disk and one NIC, with the keys libxl 4.22 writes (§11.2 sizes)."""
    d = vm.domid
    dom = f"/local/domain/{d}"
    mac = f"00:16:3e:{(d >> 16) & 0xFF:02x}:{(d >> 8) & 0xFF:02x}:{d & 0xFF:02x}"

    def paths(kind: str, devid: int, frontend: str) -> tuple[str, str, str]:
        return frontend, f"{BACKEND_ROOT}/{kind}/{d}/{devid}", f"/libxl/{d}/device/{kind}/{devid}"

    common_back = (("frontend-id", str(d)), ("online", "1"), ("state", "1"))
    console = Device(
        "console",
        0,
        *paths("console", 0, f"{dom}/console"),
        front=(
            ("backend-id", "0"),
            ("limit", "1048576"),
            ("type", "xenconsoled"),
            ("output", "pty"),
            ("tty", ""),
            ("port", str(2000 + d)),
            ("ring-ref", str(0x200000 + d)),
            ("state", "1"),
        ),
        back=(*common_back, ("protocol", "vt100")),
        front_readonly=True,
        guest_keys=(),
    )
    vbd = Device(
        "vbd",
        51712,
        *paths("vbd", 51712, f"{dom}/device/vbd/51712"),
        front=(
            ("backend-id", "0"),
            ("state", "1"),
            ("virtual-device", "51712"),
            ("device-type", "disk"),
            ("trusted", "1"),
        ),
        back=(
            *common_back,
            ("params", f"/dev/vg0/vm{d}-disk"),
            ("script", "/etc/xen/scripts/block"),
            ("physical-device", f"fe:{d & 0xFF:x}"),
            ("physical-device-path", f"/dev/dm-{d}"),
            ("mode", "w"),
            ("device-type", "disk"),
            ("discard-enable", "1"),
            ("specification", "xen"),
            ("type", "phy"),
            ("dev", "xvda"),
            ("removable", "0"),
            ("bootable", "1"),
        ),
        front_readonly=False,
        guest_keys=(
            ("ring-ref", str(8 + d)),
            ("event-channel", "15"),
            ("protocol", "x86_64-abi"),
            ("feature-persistent", "1"),
        ),
    )
    vif = Device(
        "vif",
        0,
        *paths("vif", 0, f"{dom}/device/vif/0"),
        front=(
            ("backend-id", "0"),
            ("state", "1"),
            ("handle", "0"),
            ("mac", mac),
            ("trusted", "1"),
            ("mtu", "1500"),
        ),
        back=(
            *common_back,
            ("script", "/etc/xen/scripts/vif-bridge"),
            ("mac", mac),
            ("bridge", "xenbr0"),
            ("handle", "0"),
            ("type", "vif"),
            ("hotplug-status", ""),
        ),
        front_readonly=False,
        guest_keys=(
            ("tx-ring-ref", str(768 + d)),
            ("rx-ring-ref", str(769 + d)),
            ("event-channel", "17"),
            ("request-rx-copy", "1"),
            ("feature-rx-notify", "1"),
            ("feature-sg", "1"),
        ),
    )
    return [console, vbd, vif]


@dataclass
class Settings:
    """What every worker needs (picklable)."""

    socket: str
    transport: str
    fakexen_dir: str
    vcpus: int
    scan: str
    timeout: float
    concurrency: int  # per worker; 0 = all at once
    release_watchers: bool


@dataclass
class WorkerResult:
    index: int
    vms: int = 0
    completed: int = 0
    failed: int = 0
    unfinished: int = 0
    requests: int = 0  # toolstack connections
    watch_requests: int = 0  # @releaseDomain connections
    guest_requests: int = 0  # guests' rings (ring mode)
    release_events: int = 0
    eagain: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TXN_KINDS, 0))
    commits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TXN_KINDS, 0))
    eagain_detail: dict[str, int] = field(default_factory=dict)  # by device kind
    stuck: dict[str, int] = field(default_factory=dict)
    introduce_ok: int = 0
    introduce_errors: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    cpu: float = 0.0
    failure: str | None = None


#: the progress counters each worker keeps in its own slots of a shared array
TALLY_COMPLETED, TALLY_FAILED, TALLY_EAGAIN = range(3)
TALLY_SLOTS = 3
#: seconds between two progress lines of a run (stderr; none with --quiet)
PROGRESS_INTERVAL = 5.0


class Worker:
    """One process's share of the VM starts (single asyncio loop, no locking needed)."""

    def __init__(self, settings: Settings, result: WorkerResult, tally: Any = None) -> None:
        self.s = settings
        self.r = result
        # Shared progress counters (a RawArray; this worker writes only its own slots,
        # so no lock): what the controller's progress line adds up.
        self.tally = tally
        self.tally_base = result.index * TALLY_SLOTS
        self.toolstack_counter = [0]
        self.watch_counter = [0]
        self.guest_counter = [0]
        self.keep: list[Callable[[], Awaitable[None] | None]] = []  # closed at the end
        self.watchers: list[SocketConn] = []
        self.ring: Any = None  # pyxenstored.client.ring, ring mode only
        self.aio: Any = None  # pyxenstored.client.aio, ring mode only
        self.phase: dict[int, str] = {}  # domid -> the step a VM start is in

    def count(self, slot: int) -> None:
        if self.tally is not None:
            self.tally[self.tally_base + slot] += 1

    # -- transactions ---------------------------------------------------------------
    async def transaction(
        self, conn: Conn, kind: str, body: Callable[[int], Awaitable[None]], sub: str = ""
    ) -> None:
        """libxl's retry_transaction loop: start, body, commit; again at once on EAGAIN."""
        while True:
            reply = await request(conn, XS_TRANSACTION_START, b"\0")
            assert reply is not None
            tx = int(reply.rstrip(b"\0"))
            try:
                await body(tx)
            except XsError as err:
                with contextlib.suppress(XsError):
                    await request(conn, XS_TRANSACTION_END, b"F\0", tx)
                if err.name != "EAGAIN":
                    raise
                self.note_eagain(kind, sub)
                continue
            rtype, payload = await conn.call(XS_TRANSACTION_END, b"T\0", tx)
            if rtype != XS_ERROR:
                self.r.commits[kind] += 1
                return
            name = error_name(payload)
            if name != "EAGAIN":
                raise XsError(name, XS_TRANSACTION_END, b"T\0")
            self.note_eagain(kind, sub)

    def note_eagain(self, kind: str, sub: str) -> None:
        self.r.eagain[kind] += 1
        self.count(TALLY_EAGAIN)
        if sub:
            self.r.eagain_detail[sub] = self.r.eagain_detail.get(sub, 0) + 1

    # -- the steps of one VM start ----------------------------------------------------
    async def mknod(self, conn: Conn, tx: int, path: str, perms: Sequence[str]) -> None:
        """libxl__xs_mknod: WRITE "" then SET_PERMS."""
        await request(conn, XS_WRITE, write_arg(path, ""), tx)
        await request(conn, XS_SET_PERMS, perms_arg(path, perms), tx)

    async def name_scan(self, conn: Conn, vm: VmSpec) -> None:
        """libxl_name_to_domid: list the domains, READ each one's name (tx 0)."""
        listing = await request(conn, XS_DIRECTORY, path_arg("/local/domain"))
        assert listing is not None
        for entry in listing.split(b"\0"):
            if not entry:
                continue
            name = await request(conn, XS_READ, b"/local/domain/" + entry + b"/name\0", 0, ENOENT)
            if name == vm.name.encode() and entry != str(vm.domid).encode():
                raise XsError("name clash", XS_READ, b"/local/domain/" + entry + b"/name\0")

    async def t1(self, conn: Conn, vm: VmSpec) -> None:
        d = vm.domid
        dom = f"/local/domain/{d}"
        vm_path = f"/vm/{vm.uuid}"
        lx = f"/libxl/{d}"
        roperm = ("n0", f"r{d}")
        rwperm = (f"n{d}",)
        noperm = ("n0",)

        async def body(tx: int) -> None:
            await request(conn, XS_RM, path_arg(dom), tx, ENOENT)
            await self.mknod(conn, tx, dom, roperm)
            await request(conn, XS_RM, path_arg(vm_path), tx, ENOENT)
            await self.mknod(conn, tx, vm_path, roperm)
            await request(conn, XS_RM, path_arg(lx), tx, ENOENT)
            await self.mknod(conn, tx, lx, noperm)
            await self.mknod(conn, tx, f"{lx}/device", noperm)
            await request(conn, XS_WRITE, write_arg(f"{dom}/vm", vm_path), tx)
            # libxl__domain_rename(gc, domid, NULL, name, t)
            await request(conn, XS_READ, path_arg(f"{dom}/image/device-model-domid"), 0, ENOENT)
            if self.s.scan == "in-t1":
                await self.name_scan(conn, vm)
            await request(conn, XS_WRITE, write_arg(f"{dom}/name", vm.name), tx)
            await request(conn, XS_WRITE, write_arg(f"{vm_path}/name", vm.name), tx)
            for sub, perms in (
                ("cpu", roperm),
                ("memory", roperm),
                ("device", roperm),
                ("device/suspend/event-channel", rwperm),
                ("control", roperm),
                ("control/shutdown", rwperm),
                ("control/feature-poweroff", rwperm),
                ("control/feature-reboot", rwperm),
                ("control/feature-suspend", rwperm),
                ("control/sysrq", rwperm),
                ("data", rwperm),
                ("drivers", rwperm),
                ("feature", rwperm),
                ("attr", rwperm),
                ("error", rwperm),
            ):
                await self.mknod(conn, tx, f"{dom}/{sub}", perms)
            await request(conn, XS_WRITE, write_arg(f"{vm_path}/uuid", vm.uuid), tx)
            await request(conn, XS_WRITE, write_arg(f"{vm_path}/name", vm.name), tx)
            for feature in ("multiprocessor-suspend", "xs_reset_watches"):
                path = f"{dom}/control/platform-feature-{feature}"
                await request(conn, XS_WRITE, write_arg(path, "1"), tx)
            await request(conn, XS_WRITE, write_arg(f"{lx}/type", "pv"), tx)

        if self.s.scan == "before-t1":
            await self.name_scan(conn, vm)
        await self.transaction(conn, "T1", body)

    async def t2(self, conn: Conn, vm: VmSpec) -> None:
        d = vm.domid
        dom = f"/local/domain/{d}"
        # libxl__build_pre, then libxl__build_post's READ of ~/vm.
        await request(conn, XS_READ, path_arg("/tool/xenstored/domid"), 0, ENOENT)
        await request(conn, XS_READ, path_arg("/tool/xenconsoled/domid"), 0, ENOENT)
        vm_path = (await request(conn, XS_READ, path_arg(f"{dom}/vm")) or b"").decode()
        now = time.time()
        local = [
            ("memory/static-max", "1048576"),
            ("memory/target", "1047552"),
            ("memory/videoram", "0"),
            ("domid", str(d)),
            ("store/port", str(1000 + d)),
            ("store/ring-ref", str(0x100000 + d)),
        ]
        local += [(f"cpu/{i}/availability", "online") for i in range(self.s.vcpus)]
        vment = [
            ("image/ostype", "linux"),
            ("image/kernel", "/boot/vmlinuz-6.1.0-18-amd64"),
            ("start_time", f"{int(now)}.{int(now * 100) % 100:02d}"),
            ("image/ramdisk", "/boot/initrd.img-6.1.0-18-amd64"),
            ("image/cmdline", "root=/dev/xvda1 ro console=hvc0"),
        ]

        async def body(tx: int) -> None:
            for key, value in local:
                await request(conn, XS_WRITE, write_arg(f"{dom}/{key}", value), tx)
            for key, value in vment:
                await request(conn, XS_WRITE, write_arg(f"{vm_path}/{key}", value), tx)

        await self.transaction(conn, "T2", body)

    async def introduce(self, conn: Conn, vm: VmSpec) -> bool:
        d = vm.domid
        payload = f"{d}\0{0x100000 + d}\0{1000 + d}\0".encode()
        rtype, reply = await conn.call(XS_INTRODUCE, payload)
        if rtype != XS_ERROR:
            self.r.introduce_ok += 1
            return True
        name = error_name(reply)
        self.r.introduce_errors[name] = self.r.introduce_errors.get(name, 0) + 1
        if self.s.transport == "ring":
            raise XsError(name, XS_INTRODUCE, payload)
        return False

    async def add_device(self, conn: Conn, vm: VmSpec, dev: Device) -> None:
        d = vm.domid
        fe_perms = ("n0", f"r{d}") if dev.front_readonly else (f"n{d}", "r0")
        be_perms = ("n0", f"r{d}")

        async def body(tx: int) -> None:
            await request(conn, XS_READ, path_arg(dev.libxl), tx, ENOENT)  # libxl__device_exists
            await request(conn, XS_RM, path_arg(dev.libxl), tx, ENOENT)
            await request(conn, XS_WRITE, write_arg(f"{dev.libxl}/frontend", dev.frontend), tx)
            await request(conn, XS_WRITE, write_arg(f"{dev.libxl}/backend", dev.backend), tx)
            await request(conn, XS_RM, path_arg(dev.frontend), tx, ENOENT)
            await request(conn, XS_MKDIR, path_arg(dev.frontend), tx)
            await request(conn, XS_SET_PERMS, perms_arg(dev.frontend, fe_perms), tx)
            await request(conn, XS_WRITE, write_arg(f"{dev.frontend}/backend", dev.backend), tx)
            for key, value in dev.front:
                path = f"{dev.frontend}/{key}"
                await request(conn, XS_WRITE, write_arg(path, value), tx)
                await request(conn, XS_SET_PERMS, perms_arg(path, fe_perms), tx)
            await request(conn, XS_RM, path_arg(dev.backend), tx, ENOENT)
            await request(conn, XS_MKDIR, path_arg(dev.backend), tx)
            await request(conn, XS_SET_PERMS, perms_arg(dev.backend, be_perms), tx)
            await request(conn, XS_WRITE, write_arg(f"{dev.backend}/frontend", dev.frontend), tx)
            for key, value in dev.back:
                await request(conn, XS_WRITE, write_arg(f"{dev.backend}/{key}", value), tx)
            for key, value in dev.back:
                await request(conn, XS_WRITE, write_arg(f"{dev.libxl}/{key}", value), tx)

        await self.transaction(conn, "device", body, dev.kind)

    async def guest_frontend(self, gconn: Conn, dev: Device) -> None:
        """A guest frontend driver connecting to its backend, through the guest's ring."""
        await request(gconn, XS_READ, path_arg(f"{dev.frontend}/backend"))
        await request(gconn, XS_READ, path_arg(f"{dev.frontend}/backend-id"))
        await request(gconn, XS_READ, path_arg(f"{dev.backend}/state"))

        async def body(tx: int) -> None:
            for key, value in dev.guest_keys:
                await request(gconn, XS_WRITE, write_arg(f"{dev.frontend}/{key}", value), tx)

        await self.transaction(gconn, "guest", body, f"guest {dev.kind}")
        await request(gconn, XS_WRITE, write_arg(f"{dev.frontend}/state", "3"))

    async def release_watcher(self, vm: VmSpec) -> None:
        """xl's daemonised child: a new connection watching @releaseDomain, kept open."""
        conn = await SocketConn.open(self.s.socket, self.watch_counter)
        self.watchers.append(conn)
        await request(conn, XS_WATCH, watch_arg("@releaseDomain", f"xl-{vm.domid}"))

    async def start_vm(self, vm: VmSpec) -> None:
        t0 = time.monotonic()
        guest: Any = None
        devices = vm_devices(vm)
        phase = self.phase
        phase[vm.domid] = "connect"
        conn = await SocketConn.open(self.s.socket, self.toolstack_counter)
        try:
            phase[vm.domid] = "T1"
            await self.t1(conn, vm)
            phase[vm.domid] = "dm-version"
            dm_version = f"/libxl/{vm.domid}/dm-version"
            await request(conn, XS_WRITE, write_arg(dm_version, "qemu_xen"))
            phase[vm.domid] = "T2"
            await self.t2(conn, vm)
            if self.s.transport == "ring":
                guest = self.ring.SimGuest(self.s.fakexen_dir, vm.domid)
                self.keep.append(guest.close)
            phase[vm.domid] = "INTRODUCE"
            await self.introduce(conn, vm)
            for dev in devices:
                phase[vm.domid] = f"device {dev.kind}"
                await self.add_device(conn, vm, dev)
        finally:
            conn.close()
        if guest is not None:
            client = self.aio.Client(self.ring.RingChannel(guest))
            self.keep.append(client.close)
            gconn = GuestConn(client, self.guest_counter)
            for dev in devices:
                if not dev.front_readonly:
                    phase[vm.domid] = f"guest {dev.kind}"
                    await self.guest_frontend(gconn, dev)
        if self.s.release_watchers:
            phase[vm.domid] = "@releaseDomain watch"
            await self.release_watcher(vm)
        del phase[vm.domid]
        t1 = time.monotonic()
        self.r.latencies.append(t1 - t0)
        self.r.ended = max(self.r.ended, t1)
        self.r.completed += 1
        self.count(TALLY_COMPLETED)

    async def guarded_start(self, vm: VmSpec, gate: asyncio.Semaphore | None) -> None:
        try:
            if gate is None:
                await self.start_vm(vm)
            else:
                async with gate:
                    await self.start_vm(vm)
        except (XsError, OSError, ValueError, AssertionError) as err:
            self.phase.pop(vm.domid, None)
            self.r.failed += 1
            self.count(TALLY_FAILED)
            self.r.errors += 1
            if len(self.r.error_samples) < MAX_ERROR_SAMPLES:
                self.r.error_samples.append(f"domid {vm.domid}: {type(err).__name__}: {err}")

    async def run(self, vms: Sequence[VmSpec], stop: Event, results: Queue[WorkerResult]) -> None:
        if self.s.transport == "ring":
            self.ring, self.aio = import_client()
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.s.concurrency) if self.s.concurrency else None
        cpu0 = time.process_time()
        self.r.started = time.monotonic()
        tasks = [loop.create_task(self.guarded_start(vm, gate)) for vm in vms]
        _done, pending = await asyncio.wait(tasks, timeout=self.s.timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        self.r.unfinished = len(pending)
        for step in self.phase.values():  # where the unfinished VM starts were stuck
            self.r.stuck[step] = self.r.stuck.get(step, 0) + 1
        self.r.cpu = time.process_time() - cpu0
        self.r.requests = self.toolstack_counter[0]
        self.r.watch_requests = self.watch_counter[0]
        self.r.guest_requests = self.guest_counter[0]
        results.put(self.r)
        # Keep the @releaseDomain watchers (and the guests) until the controller is done.
        await loop.run_in_executor(None, stop.wait, self.s.timeout + 300)
        for conn in self.watchers:
            conn.close()
        for close in reversed(self.keep):
            with contextlib.suppress(Exception):
                outcome = close()
                if outcome is not None:
                    await outcome


def worker_main(
    index: int,
    parent: int,
    settings: Settings,
    vms: list[VmSpec],
    start: Barrier,
    stop: Event,
    results: Queue[WorkerResult],
    tally: Any = None,
) -> None:
    result = WorkerResult(index, vms=len(vms))
    posted = False
    try:
        die_with_parent(parent)
        raise_nofile_limit()
        start.wait(timeout=CONNECT_TIMEOUT)
        worker = Worker(settings, result, tally)

        async def main() -> None:
            nonlocal posted
            await worker.run(vms, stop, results)
            posted = True

        asyncio.run(main())
    except BaseException as exc:  # reported to the controller, which fails the run
        result.failure = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            start.abort()
        if not posted:
            results.put(result)


# --------------------------------------------------------------------------
# The backend watcher (its own process)
# --------------------------------------------------------------------------

# Shared counters of the watcher: events, READs, unexpected errors.
W_EVENTS, W_READS, W_ERRORS = range(3)


def backend_watcher_main(
    parent: int, path: str, counters: Any, messages: Queue[tuple[str, str]]
) -> None:
    """Watch /local/domain/0/backend; READ the node of every event, one at a time."""
    die_with_parent(parent)

    async def main() -> None:
        conn = await SocketConn.open(path, [0])
        queue: collections.deque[bytes] = collections.deque()
        wake = asyncio.Event()

        def on_event(payload: bytes) -> None:
            queue.append(payload)
            wake.set()

        conn.proto.on_event = on_event
        await request(conn, XS_WATCH, watch_arg(BACKEND_ROOT, "backend"))
        messages.put(("ready", ""))
        marker = MARKER.encode()
        while True:
            while not queue:
                wake.clear()
                await wake.wait()
            node = queue.popleft().split(b"\0", 1)[0]
            counters[W_EVENTS] += 1
            if node == marker:
                messages.put(("drained", ""))
                continue
            rtype, reply = await conn.call(XS_READ, node + b"\0")
            counters[W_READS] += 1
            if rtype == XS_ERROR and reply.rstrip(b"\0") != b"ENOENT":
                counters[W_ERRORS] += 1

    try:
        asyncio.run(main())
    except BaseException as exc:
        messages.put(("failed", f"{type(exc).__name__}: {exc}"))


# --------------------------------------------------------------------------
# Controller
# --------------------------------------------------------------------------


def make_vms(count: int, first_domid: int) -> list[VmSpec]:
    vms = []
    for i in range(count):
        domid = first_domid + i
        vms.append(VmSpec(domid, str(uuid.uuid4()), f"bootstorm-{domid}"))
    return vms


def setup_tree(path: str, warm: bool) -> None:
    """What a host has before the storm: dom0's name and the shared parents.

    ``warm``: also the per-kind backend directories, which exist once a host has
    run a VM with that kind of device (nothing removes them).
    """
    with Connection(path) as conn:
        conn.sock.settimeout(30)
        conn.write("/local/domain/0/name", b"Domain-0")
        conn.write("/local/domain/0/domid", b"0")
        directories = [BACKEND_ROOT, "/vm", "/libxl"]
        if warm:
            directories += [f"{BACKEND_ROOT}/{kind}" for kind in ("console", "vbd", "vif")]
        for directory in directories:
            conn.request(XS_MKDIR, path_arg(directory))


def write_marker(path: str) -> None:
    with Connection(path, timeout=10) as conn:
        conn.sock.settimeout(10)
        conn.write(MARKER, str(time.time()).encode())


def summarize_s(values: Sequence[float]) -> JsonDict:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "median": None, "p95": None, "min": None, "max": None, "mean": None}
    return {
        "count": len(ordered),
        "median": statistics.median(ordered),
        "p95": percentile(ordered, 0.95),
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def run_bootstorm(args: argparse.Namespace, cpu: DaemonCpu) -> JsonDict:
    raise_nofile_limit()
    if args.transport == "ring":
        import_client()  # fail early, before any process starts
        if not Path(args.fakexen_dir).is_dir():
            raise RuntimeError(
                f"--transport ring: {args.fakexen_dir} is not a directory; start the daemon "
                "with the simulated Xen there (pyxenstored --sim-xen DIR, or reference/rings.sh)"
            )
    setup_tree(args.socket, args.warm_host)
    vms = make_vms(args.vms, args.first_domid)
    workers = min(args.workers, len(vms))
    shares = [vms[i::workers] for i in range(workers)]
    per_worker_gate = math.ceil(args.concurrency / workers) if args.concurrency else 0
    settings = Settings(
        socket=args.socket,
        transport=args.transport,
        fakexen_dir=args.fakexen_dir,
        vcpus=args.vcpus,
        scan=args.scan,
        timeout=args.timeout,
        concurrency=per_worker_gate,
        release_watchers=not args.no_release_watchers,
    )
    ctx = multiprocessing.get_context("fork")
    watcher = None
    counters = ctx.RawArray("q", 3)
    messages: Queue[tuple[str, str]] = ctx.Queue()
    if not args.no_backend_watcher:
        watcher = ctx.Process(
            target=backend_watcher_main,
            args=(os.getpid(), args.socket, counters, messages),
            daemon=True,
        )
        watcher.start()
        kind, text = messages.get(timeout=CONNECT_TIMEOUT)
        if kind != "ready":
            raise RuntimeError(f"backend watcher: {text}")
    start = ctx.Barrier(workers + 1)
    stop = ctx.Event()
    tally = ctx.RawArray("q", workers * TALLY_SLOTS)
    results: Queue[WorkerResult] = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker_main,
            args=(i, os.getpid(), settings, share, start, stop, results, tally),
            daemon=True,
        )
        for i, share in enumerate(shares)
    ]
    for proc in procs:
        proc.start()
    collected: list[WorkerResult] = []
    drain: JsonDict = {"drained": None, "drain_s": None, "error": None}
    try:
        cpu_before = cpu.seconds()
        start.wait(timeout=CONNECT_TIMEOUT)
        t_released = time.monotonic()
        with show_progress(args, tally, t_released):
            collected = collect(results, len(procs), args.timeout + 60)
        cpu_after = cpu.seconds()
        cpu_at = time.monotonic()
        if watcher is not None:
            drain = drain_watcher(args, messages)
    finally:
        stop.set()
        reap(procs, 15)
        if watcher is not None:
            watcher.kill()
            watcher.join()
    return build_report(
        args, workers, collected, counters, drain, t_released, cpu_before, cpu_after, cpu_at
    )


@contextlib.contextmanager
def show_progress(args: argparse.Namespace, tally: Any, t0: float) -> Iterator[None]:
    """Every PROGRESS_INTERVAL s while the VMs start, one line on stderr (not with --quiet):
    VMs started and failed so far, EAGAINs, seconds since the start."""
    if args.quiet:
        yield
        return
    done = threading.Event()

    def report() -> None:
        while not done.wait(PROGRESS_INTERVAL):
            counts = [sum(tally[slot::TALLY_SLOTS]) for slot in range(TALLY_SLOTS)]
            print(
                f"bootstorm: {counts[TALLY_COMPLETED]}/{args.vms} VMs started, "
                f"{counts[TALLY_FAILED]} failed, {counts[TALLY_EAGAIN]} EAGAIN, "
                f"{time.monotonic() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    thread = threading.Thread(target=report, name="bootstorm-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def drain_watcher(args: argparse.Namespace, messages: Queue[tuple[str, str]]) -> JsonDict:
    """Write the marker node; time until the backend watcher reaches its event."""
    drain: JsonDict = {"drained": False, "drain_s": None, "error": None}
    t0 = time.monotonic()
    try:
        write_marker(args.socket)
    except (OSError, XsError) as err:
        drain["error"] = f"marker write failed: {err}"
        return drain
    deadline = t0 + args.drain_timeout
    while True:
        try:
            kind, text = messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:
            drain["error"] = f"not drained within {args.drain_timeout:.0f} s"
            return drain
        if kind == "drained":
            drain["drained"] = True
            drain["drain_s"] = time.monotonic() - t0
            return drain
        if kind == "failed":
            drain["error"] = f"backend watcher failed: {text}"
            return drain


def merge_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Counters by name, summed over the workers."""
    merged: dict[str, int] = {}
    for part in counts:
        for name, n in part.items():
            merged[name] = merged.get(name, 0) + n
    return merged


def build_report(
    args: argparse.Namespace,
    workers: int,
    collected: list[WorkerResult],
    counters: Any,
    drain: JsonDict,
    t_released: float,
    cpu_before: float | None,
    cpu_after: float | None,
    cpu_at: float,
) -> JsonDict:
    failures = [f"worker {w.index}: {w.failure}" for w in collected if w.failure]
    missing = workers - len(collected)
    if missing:
        failures.append(f"{missing} worker(s) sent no result")
    latencies = [x for w in collected for x in w.latencies]
    started = min((w.started for w in collected if w.started), default=t_released)
    ended = max((w.ended for w in collected if w.ended), default=started)
    wall = ended - started if ended > started else math.nan
    eagain = {k: sum(w.eagain[k] for w in collected) for k in TXN_KINDS}
    commits = {k: sum(w.commits[k] for w in collected) for k in TXN_KINDS}
    eagain_detail = merge_counts(w.eagain_detail for w in collected)
    intro_errors = merge_counts(w.introduce_errors for w in collected)
    watcher_on = not args.no_backend_watcher
    breakdown = {
        "toolstack": sum(w.requests for w in collected),
        "release_watchers": sum(w.watch_requests for w in collected),
        "guests": sum(w.guest_requests for w in collected),
        # The WATCH, then one READ per event (the marker's event excluded).
        "backend_watcher": (1 + counters[W_READS]) if watcher_on else 0,
    }
    total = sum(breakdown.values())
    completed = sum(w.completed for w in collected)
    failed = sum(w.failed for w in collected)
    unfinished = args.vms - completed - failed  # cancelled at the timeout, or lost
    errors = sum(w.errors for w in collected) + len(failures)
    samples = [s for w in collected for s in w.error_samples][:MAX_ERROR_SAMPLES]
    stuck = merge_counts(w.stuck for w in collected)
    client_cpu = sum(w.cpu for w in collected)
    daemon_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    cores = load_cores()
    results: JsonDict = {
        "vms": args.vms,
        "completed": completed,
        "failed": failed,
        "unfinished": unfinished,
        "timed_out": unfinished > 0,
        "unfinished_at": stuck,
        "wall_s": wall,
        "requests": total,
        "requests_by_source": breakdown,
        "req_per_s": total / wall if wall and not math.isnan(wall) else None,
        "eagain": sum(eagain.values()),
        "eagain_by_kind": eagain,
        "eagain_by_device": eagain_detail,
        "commits_by_kind": commits,
        "vm_latency_s": summarize_s(latencies),
        "errors": errors,
        "error_samples": failures + samples,
        "introduce": {"ok": sum(w.introduce_ok for w in collected), "errors": intro_errors},
        "backend_watcher": {
            "enabled": watcher_on,
            "events": counters[W_EVENTS] if watcher_on else None,
            "reads": counters[W_READS] if watcher_on else None,
            "errors": counters[W_ERRORS] if watcher_on else None,
            **drain,
        },
        "release_watchers": 0 if args.no_release_watchers else completed,
        "daemon_cpu_s": daemon_cpu,
        "daemon_cpu_us_per_req": cpu_per_request_us(cpu_before, cpu_after, total),
        "daemon_busy": daemon_cpu / (cpu_at - t_released) if daemon_cpu is not None else None,
        "client_cpu_s": client_cpu,
        "client_busy": client_cpu / wall / cores if wall and not math.isnan(wall) else None,
    }
    metrics: JsonDict = {
        "wall_s": metric(wall, "s", "lower"),
        "eagain": metric(results["eagain"], "count", "lower"),
        "req_per_s": metric(results["req_per_s"], "req/s", "higher"),
        "requests": metric(total, "count", "lower"),
        "vm_latency.median_s": metric(results["vm_latency_s"]["median"], "s", "lower"),
        "vm_latency.p95_s": metric(results["vm_latency_s"]["p95"], "s", "lower"),
        "errors": metric(errors, "count", "lower"),
        "introduce_errors": metric(sum(intro_errors.values()), "count", "lower"),
    }
    if results["daemon_cpu_us_per_req"] is not None:
        metrics["cpu_us_per_req"] = metric(results["daemon_cpu_us_per_req"], "us", "lower")
    if watcher_on:
        metrics["watcher.drain_s"] = metric(drain["drain_s"], "s", "lower")
    return {
        "params": {
            "vms": args.vms,
            "workers": workers,
            "first_domid": args.first_domid,
            "vcpus": args.vcpus,
            "scan": args.scan,
            "warm_host": args.warm_host,
            "transport": args.transport,
            "concurrency": args.concurrency,
            "backend_watcher": watcher_on,
            "release_watchers": not args.no_release_watchers,
            "timeout_s": args.timeout,
            "load_cores": cores,
        },
        "results": results,
        "metrics": metrics,
    }


def print_report(report: JsonDict) -> None:
    r = report["results"]
    p = report["params"]
    lat = r["vm_latency_s"]
    bw = r["backend_watcher"]
    src = r["requests_by_source"]
    by_kind = ", ".join(str(r["eagain_by_kind"][k]) for k in TXN_KINDS)
    by_device = r["eagain_by_device"]
    print(
        f"{p['vms']} VMs, {p['workers']} worker processes, transport {p['transport']}, "
        f"scan {p['scan']}, {'warm' if p['warm_host'] else 'fresh'} host, "
        f"backend watcher {'on' if p['backend_watcher'] else 'off'}, "
        f"@releaseDomain watchers {'on' if p['release_watchers'] else 'off'}"
    )
    rows = [
        ["wall time s", fmt(r["wall_s"], 2)],
        [
            "VMs completed / failed / unfinished",
            f"{r['completed']} / {r['failed']} / {r['unfinished']}",
        ],
        ["EAGAIN (T1, T2, device, guest)", f"{r['eagain']} ({by_kind})"],
        *(
            [["  device EAGAIN by kind", ", ".join(f"{k} {v}" for k, v in by_device.items())]]
            if by_device
            else []
        ),
        ["requests", str(r["requests"])],
        [
            "  toolstack / release / backend / guests",
            f"{src['toolstack']} / {src['release_watchers']} / {src['backend_watcher']} / "
            f"{src['guests']}",
        ],
        ["requests/s", fmt(r["req_per_s"], 0)],
        ["VM start latency median / p95 s", f"{fmt(lat['median'], 3)} / {fmt(lat['p95'], 3)}"],
        ["errors", str(r["errors"])],
        *(
            [
                [
                    "unfinished VMs were at",
                    ", ".join(f"{k} {v}" for k, v in r["unfinished_at"].items()),
                ]
            ]
            if r["unfinished_at"]
            else []
        ),
        [
            "INTRODUCE ok / errors",
            f"{r['introduce']['ok']} / "
            + (", ".join(f"{k} {v}" for k, v in r["introduce"]["errors"].items()) or "0"),
        ],
        ["daemon CPU µs/req", fmt(r["daemon_cpu_us_per_req"], 1)],
        ["daemon busy %", fmt_pct(r["daemon_busy"])],
        ["client busy %", fmt_pct(r["client_busy"])],
    ]
    if bw["enabled"]:
        rows.append(
            [
                "backend watcher events / READs / drain s",
                f"{bw['events']} / {bw['reads']} / "
                + (fmt(bw["drain_s"], 3) if bw["drained"] else f"({bw['error']})"),
            ]
        )
    print_table(["bootstorm", "value"], rows)
    for sample in r["error_samples"]:
        print(f"  error: {sample}")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Bootstorm: N concurrent libxl-style VM starts against a xenstore daemon",
        epilog="See benchmarks/README.md.",
    )
    cli.add_common_arguments(parser, with_defaults=True, socket_required=True)
    parser.add_argument(
        "--vms", type=cli.positive_int, default=200, help="VM starts (default %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=cli.positive_int,
        default=4,
        help="client processes sharing the VM starts (default %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="VM starts in progress at once, over all workers (default 0: all of them)",
    )
    parser.add_argument(
        "--first-domid", type=cli.positive_int, default=1, help="domid of the first VM"
    )
    parser.add_argument(
        "--vcpus", type=cli.positive_int, default=2, help="vCPUs per VM (default 2)"
    )
    parser.add_argument(
        "--scan",
        choices=("in-t1", "before-t1"),
        default="in-t1",
        help="where the name-uniqueness scan runs: while T1 is open and again on every "
        "retry, as libxl__domain_rename does (default), or once before T1",
    )
    parser.add_argument(
        "--warm-host",
        action="store_true",
        help="create /local/domain/0/backend/{console,vbd,vif} before the storm, as on a "
        "host that has run VMs before (default: a freshly booted host, where the first "
        "device transactions of every kind create them)",
    )
    parser.add_argument(
        "--no-backend-watcher",
        action="store_true",
        help="no connection watching /local/domain/0/backend",
    )
    parser.add_argument(
        "--no-release-watchers",
        action="store_true",
        help="no @releaseDomain watcher connection per VM",
    )
    parser.add_argument(
        "--transport",
        choices=("socket", "ring"),
        default="socket",
        help="socket: dom0 traffic only; ring: every VM is also a simulated guest whose "
        "frontends talk through its ring (daemon with the simulated Xen)",
    )
    cli.add_fakexen_dir(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds allowed for the VM starts; unfinished ones are reported (default 600)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the backend watcher to catch up (default 60)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.default_fakexen_dir(args)
    if args.concurrency < 0:
        parser.error("--concurrency must be >= 0")
    if not Path(args.socket).exists():
        parser.error(f"--socket {args.socket}: no such socket (is the daemon running?)")
    report = run_and_report(
        "bootstorm", "bootstorm", f"on {args.socket}", args, run_bootstorm, print_report
    )
    r = report["results"]
    if r["unfinished"] or r["failed"] or r["errors"]:
        first = r["error_samples"][0] if r["error_samples"] else ""
        print(
            f"bootstorm incomplete: {r['completed']}/{r['vms']} VMs started, {r['failed']} "
            f"failed, {r['unfinished']} unfinished"
            + (f" (timed out after {args.timeout:.0f} s)" if r["timed_out"] else "")
            + (f"; first error: {first}" if first else ""),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
