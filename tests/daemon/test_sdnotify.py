"""systemd's readiness protocol, natively: READY=1 once serving, STOPPING=1 at SIGTERM,
WATCHDOG=1 at half of WATCHDOG_USEC; a missing or broken notify socket changes nothing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyxenstored.runtime.sdnotify import Notifier, notify_address, watchdog_interval

from .helpers import clean_env, fake_systemd, short_dir


@pytest.fixture
def tmp() -> Iterator[Path]:
    directory = short_dir()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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
