"""kill -9 in the middle of a bootstorm (issue 9 part 3): toolstack threads start VMs
as libxl does (a transaction per step: the domain's directories and keys, the
dm-version write, the build keys, one transaction per device), each retrying a step on
EAGAIN and, when the daemon dies, reconnecting and redoing the step it had no answer
for. The daemon is killed with SIGKILL when about a third of the steps are done and
started again with the same command line. Every VM then finishes, and the store holds
exactly each VM's nodes: none lost, none twice, nothing else."""

from __future__ import annotations

import signal
import threading
import time

from domains.test_rings_processes import Procs

from pyxenstored import errors
from pyxenstored.client.sync import Client

from .test_crash_e2e import connect, start

VMS = 30
THREADS = 5
DEVICES = ("console", "vbd", "vif")
ROOTS = ("/local/domain", "/vm", "/libxl")


def steps(d: int) -> list[dict[str, str]]:
    """Each step's nodes: written in one transaction (or one WRITE)."""
    home = f"/local/domain/{d}"
    t1 = {
        home: "",
        f"/vm/uuid-{d}": "",
        f"/libxl/{d}": "",
        f"{home}/name": f"vm{d}",
        f"{home}/vm": f"/vm/uuid-{d}",
        f"/vm/uuid-{d}/name": f"vm{d}",
        f"/libxl/{d}/type": "pv",
    }
    t1 |= {f"{home}/{sub}": "" for sub in ("control", "data", "device", "memory", "drivers")}
    out = [t1, {f"/libxl/{d}/dm-version": "qemu_xen"}]
    out.append(
        {
            f"{home}/memory/static-max": "1048576",
            f"{home}/memory/target": "1048576",
            f"{home}/domid": str(d),
            f"{home}/store/port": "1",
            f"/vm/uuid-{d}/start_time": "1.0",
        }
    )
    for i, dev in enumerate(DEVICES):
        fe = f"{home}/device/{dev}/{i}"
        be = f"/local/domain/0/backend/{dev}/{d}/{i}"
        out.append(
            {
                fe: "",
                f"{fe}/backend": be,
                f"{fe}/state": "1",
                be: "",
                f"{be}/frontend": fe,
                f"{be}/state": "1",
                f"{be}/online": "1",
            }
        )
    return out


def expected() -> dict[str, str]:
    """Every VM's nodes, with the parents a write creates on its way ("")."""
    out: dict[str, str] = {}
    for d in range(1, VMS + 1):
        for step in steps(d):
            for path, value in step.items():
                parent = path.rsplit("/", 1)[0]
                while parent not in ROOTS and parent not in out:
                    out[parent] = ""
                    parent = parent.rsplit("/", 1)[0]
                out[path] = value
    return out


class Storm:
    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.done = 0
        self.total = VMS * len(steps(1))
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.reconnects = 0

    def client(self) -> Client:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = Client(self.sock, timeout=30)
                c.read("/")
                return c
            except (OSError, errors.XenstoreError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def step(self, c: Client, nodes: dict[str, str]) -> None:
        while True:
            tx = c.transaction_start()
            try:
                for path, value in nodes.items():
                    c.write(path, value, tx=tx)
                c.transaction_end(tx)
                return
            except errors.Again:
                continue

    def vm_thread(self, domids: list[int]) -> None:
        c = self.client()
        try:
            for d in domids:
                for nodes in steps(d):
                    while True:
                        try:
                            self.step(c, nodes)
                            break
                        except OSError:  # the daemon died: reconnect, redo this step
                            c.close()
                            with self.lock:
                                self.reconnects += 1
                            c = self.client()
                    with self.lock:
                        self.done += 1
        except Exception as err:  # reported by the test
            self.failures.append(repr(err))
        finally:
            c.close()


def test_kill_9_mid_bootstorm_every_vm_finishes_exactly(procs: Procs) -> None:
    daemon, sock = start(procs)
    connect(sock, procs, daemon).close()
    storm = Storm(sock)
    threads = [
        threading.Thread(target=storm.vm_thread, args=(list(range(1 + t, VMS + 1, THREADS)),))
        for t in range(THREADS)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while storm.done < storm.total // 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    killed_at = storm.done
    assert 0 < killed_at < storm.total
    daemon, sock = start(procs)
    for t in threads:
        t.join(120)
    assert not storm.failures, storm.failures
    assert storm.done == storm.total
    assert storm.reconnects >= 1
    want = expected()
    with connect(sock, procs, daemon) as c:
        got: dict[str, str] = {}
        stack = list(ROOTS)
        while stack:
            path = stack.pop()
            got[path] = c.read(path).decode()
            stack.extend(f"{path}/{name}" for name in c.directory(path))
    got = {p: v for p, v in got.items() if p not in ROOTS}
    assert got == want
    assert "recovered from a crash" in procs.errors()
