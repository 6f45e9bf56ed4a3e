"""Crash recovery end to end (issue 9 part 3): a daemon serving a socket and simulated
guests is killed with SIGKILL and started again with the same command line. Committed
nodes, permissions and settings are back, the guests' rings are mapped and their event
channels bound again, their watches fire, and they finish their work; a clean stop
removes the journal, and --no-recover starts empty."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from domains.simharness import subprocess_env
from domains.test_rings_processes import KEYS, Procs, start_guests
from liveupdate.test_live_update_e2e import BINARY

from pyxenstored import errors
from pyxenstored.client.sync import Client


def start(procs: Procs, *extra: str) -> tuple[subprocess.Popen[str], str]:
    sock = str(procs.dir / "socket")
    env = dict(subprocess_env(), XENSTORED_RUNDIR=str(procs.dir))
    daemon = procs.spawn(
        "-m",
        "pyxenstored",
        "-N",
        "--sim-xen",
        str(procs.fakexen),
        "--socket",
        sock,
        *extra,
        env=env,
    )
    return daemon, sock


def connect(sock: str, procs: Procs, daemon: subprocess.Popen[str]) -> Client:
    """A client once the daemon serves (a socket file may be left by the killed one)."""
    deadline = time.monotonic() + 20
    while True:
        assert daemon.poll() is None, procs.errors()
        try:
            c = Client(sock, timeout=20)
            c.read("/")  # serving, not just bound
            return c
        except (OSError, errors.XenstoreError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_kill_9_then_restart_guests_go_on(procs: Procs) -> None:
    daemon, sock = start(procs)
    journal = procs.dir / "journal"
    with connect(sock, procs, daemon) as dom0:
        guests = start_guests(procs, dom0, [1, 2])  # each waits on a watch, over its ring
        dom0.write("/crash/a", "1")
        dom0.set_perms("/crash/a", ["n0", "r1"])
        dom0.write("/tool/xenstored/quota/nodes", "777")
        dom0.write("/tool/xenstored/domain/2/quota/watches", "9")
        tx = dom0.transaction_start()
        dom0.write("/crash/in-tx", "committed", tx=tx)
        dom0.transaction_end(tx)
        dom0.rm("/local/domain/1/data/k0")
        assert journal.exists()
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)

    daemon, sock = start(procs)
    with connect(sock, procs, daemon) as dom0:
        assert dom0.read("/crash/a") == b"1"
        assert dom0.get_perms("/crash/a") == ["n0", "r1"]
        assert dom0.read("/crash/in-tx") == b"committed"
        assert dom0.read("/tool/xenstored/quota/nodes") == b"777"
        assert dom0.read("/tool/xenstored/domain/2/quota/watches") == b"9"
        with pytest.raises(errors.NoEntry):
            dom0.read("/local/domain/1/data/k0")
        assert dom0.is_domain_introduced(1) and dom0.is_domain_introduced(2)
        # The guests' watches fire over their re-mapped rings: they finish.
        for domid in guests:
            dom0.write(f"/local/domain/{domid}/control/cmd", f"stop-{domid}")
        for domid, proc in guests.items():
            assert proc.wait(20) == 0, procs.errors()
            assert dom0.read(f"/local/domain/{domid}/data/done") == f"stop-{domid}".encode()
        assert len(dom0.directory("/local/domain/2/data")) == KEYS + 1
        dom0.write("/crash/after", "2")
    assert "recovered from a crash" in procs.errors()
    # The recovered daemon went on with the same journal: a second crash loses nothing.
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    daemon, sock = start(procs)
    with connect(sock, procs, daemon) as dom0:
        assert dom0.read("/crash/a") == b"1" and dom0.read("/crash/after") == b"2"
        assert dom0.read("/local/domain/1/data/done") == b"stop-1"
        assert dom0.get_perms("/local/domain/1") == ["n1"]
    # A clean stop removes the journal: the next start is empty.
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert not journal.exists()
    daemon, sock = start(procs)
    with connect(sock, procs, daemon) as dom0, pytest.raises(errors.NoEntry):
        dom0.read("/crash/a")
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)


def test_no_recover_starts_empty(procs: Procs) -> None:
    daemon, sock = start(procs)
    with connect(sock, procs, daemon) as dom0:
        dom0.write("/crash/a", "1")
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    daemon, sock = start(procs, "--no-recover")
    with connect(sock, procs, daemon) as dom0, pytest.raises(errors.NoEntry):
        dom0.read("/crash/a")
    assert "--no-recover: crash journal" in procs.errors()
    assert "ignored" in procs.errors()
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    # The journal there now is the new daemon's own (empty) one.
    daemon, sock = start(procs)
    with connect(sock, procs, daemon) as dom0, pytest.raises(errors.NoEntry):
        dom0.read("/crash/a")
    assert os.path.exists(procs.dir / "journal")


def test_a_crash_after_a_live_update_loses_nothing(procs: Procs) -> None:
    """A live update is not a crash (it starts from state_dump); the new process goes on
    journaling, so a crash after it recovers what came before and after the update."""
    daemon, sock = start(procs)
    with connect(sock, procs, daemon) as dom0:
        dom0.write("/lu/before", "1")
        assert dom0.control("live-update", "-f", BINARY) == b"OK"
        assert dom0.control("live-update", "-s", "-t", "5") == b"OK"  # from the new process
        dom0.write("/lu/after", "2")
    assert not (procs.dir / "state_dump").exists()
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    daemon, sock = start(procs)
    with connect(sock, procs, daemon) as dom0:
        assert dom0.read("/lu/before") == b"1"
        assert dom0.read("/lu/after") == b"2"
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)


def test_a_second_daemon_leaves_the_running_ones_journal_alone(procs: Procs) -> None:
    pid_file = str(procs.dir / "pid")
    daemon, sock = start(procs, "--pid-file", pid_file)
    with connect(sock, procs, daemon) as dom0:
        dom0.write("/crash/a", "1")
    second, _ = start(procs, "--pid-file", pid_file, "--no-recover")
    assert second.wait(20) == 0  # "already running"
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    daemon, sock = start(procs, "--pid-file", pid_file)
    with connect(sock, procs, daemon) as dom0:
        assert dom0.read("/crash/a") == b"1"
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
