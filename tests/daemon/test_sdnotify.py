"""systemd's readiness protocol, natively: READY=1 once serving, STOPPING=1 at SIGTERM,
WATCHDOG=1 at half of WATCHDOG_USEC; a missing or broken notify socket changes nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyxenstored.runtime.sdnotify import Notifier, notify_address, watchdog_interval

from .helpers import (
    COMMAND,
    FakeSystemd,
    Pids,
    alive,
    answers,
    clean_env,
    fake_systemd,
    start_detached,
)


def test_notify_socket_addresses() -> None:
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": ""}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@abstract"}) == "\0abstract"
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None


def test_watchdog_interval_is_half_the_timeout_and_only_for_us() -> None:
    pid = os.getpid()
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}, pid) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(pid)}, pid) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, pid) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid) is None
    assert watchdog_interval({}, pid) is None


def test_send_to_a_path_and_to_an_abstract_socket(tmp: Path) -> None:
    with fake_systemd(tmp) as systemd:
        notifier = Notifier({"NOTIFY_SOCKET": systemd.path})
        assert notifier.send("READY=1", "STATUS=up")
        assert systemd.receive(5) == {"READY": "1", "STATUS": "up"}
        notifier.close()
    name = f"pyxs-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send("STOPPING=1")
        assert abstract.recv(100) == b"STOPPING=1"
        notifier.close()


def test_failures_are_quiet(tmp: Path) -> None:
    assert not Notifier({}).send("READY=1")  # no systemd: nothing to do
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp / "nobody-listens")})
    assert not notifier.send("READY=1")
    notifier.stopping()  # no exception either
    notifier.close()


@contextlib.contextmanager
def foreground(tmp: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``pyxenstored -N`` serving ``tmp/socket`` with ``env``; killed at the end."""
    with open(tmp / "daemon.err", "wb") as err:
        proc = subprocess.Popen(
            [*COMMAND, "-N", "--socket", str(tmp / "socket")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def stops_with_stopping(proc: subprocess.Popen[bytes], systemd: FakeSystemd) -> None:
    """SIGTERM: STOPPING=1, then a clean exit."""
    proc.send_signal(signal.SIGTERM)
    assert systemd.wait_for("STOPPING")["STOPPING"] == "1"
    assert proc.wait(10) == 0


def test_ready_when_serving_then_stopping_at_sigterm(tmp: Path) -> None:
    with (
        fake_systemd(tmp) as systemd,
        foreground(tmp, clean_env(NOTIFY_SOCKET=systemd.path)) as proc,
    ):
        ready = systemd.wait_for("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"] == f"serving {tmp / 'socket'}, 0 domains"
        assert answers(str(tmp / "socket"))  # READY=1 means it serves, now
        stops_with_stopping(proc, systemd)
        assert "WATCHDOG" not in str(systemd.messages)  # nobody asked for it


def test_watchdog_every_half_interval(tmp: Path) -> None:
    with fake_systemd(tmp) as systemd:
        env = clean_env(NOTIFY_SOCKET=systemd.path, WATCHDOG_USEC="100000")
        with foreground(tmp, env) as proc:
            systemd.wait_for("READY")
            t0 = time.monotonic()
            for _ in range(4):
                assert systemd.wait_for("WATCHDOG", 5)["WATCHDOG"] == "1"
            assert time.monotonic() - t0 < 2.0  # every 0.05 s, with much slack
            stops_with_stopping(proc, systemd)


def test_no_watchdog_when_systemd_watches_another_pid(tmp: Path) -> None:
    with fake_systemd(tmp) as systemd:
        env = clean_env(NOTIFY_SOCKET=systemd.path, WATCHDOG_USEC="20000", WATCHDOG_PID="1")
        with foreground(tmp, env):
            systemd.wait_for("READY")
            time.sleep(0.3)
            assert not [m for m in systemd.pending() if "WATCHDOG" in m]


def test_a_broken_notify_socket_does_not_stop_the_daemon(tmp: Path, pids: Pids) -> None:
    env = clean_env(NOTIFY_SOCKET=str(tmp / "nobody-listens"), WATCHDOG_USEC="20000")
    pid, _ = start_detached(tmp, pids, env=env)
    time.sleep(0.2)
    assert alive(pid) and answers(str(tmp / "socket"))
    assert pids.stop(pid)


def test_detached_daemon_is_ready_before_the_command_returns(tmp: Path, pids: Pids) -> None:
    """What upstream Xen's xenstored.service relies on: READY=1 from the serving process
    (NotifyAccess=all), sent before launch-xenstore goes on."""
    with fake_systemd(tmp) as systemd:
        pid, _ = start_detached(tmp, pids, env=clean_env(NOTIFY_SOCKET=systemd.path))
        queued = systemd.pending()
        assert any(m.get("READY") == "1" for m in queued), queued
        assert pids.stop(pid)
        assert systemd.wait_for("STOPPING")["STOPPING"] == "1"


def test_real_systemd_notify_reaches_the_fake(tmp: Path) -> None:
    """The fake speaks systemd's protocol: systemd-notify's own message arrives."""
    tool = shutil.which("systemd-notify")
    if tool is None:
        pytest.skip("systemd-notify is not installed")
    with fake_systemd(tmp) as systemd:
        result = subprocess.run(
            [tool, "--ready", "--status=hello", "--no-block"],
            env=clean_env(NOTIFY_SOCKET=systemd.path),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"systemd-notify cannot run here: {result.stderr.strip()}")
        fields = systemd.receive(5)
        assert fields.get("READY") == "1" and fields.get("STATUS") == "hello"
