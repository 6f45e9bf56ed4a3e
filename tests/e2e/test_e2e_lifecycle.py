"""The daemon process: signals, files it writes, the socket it creates, its limits."""

from __future__ import annotations

import os
import resource
import signal
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pyxenstored.client import ConnectionClosed, SyncClient

if TYPE_CHECKING:
    from conftest import DaemonFactory, DaemonProcess


def _wait_for(predicate: object, timeout: float = 5.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly_and_removes_socket_and_pid_file(
    daemon_factory: DaemonFactory, sig: int
) -> None:
    tmp = daemon_factory.new_dir()
    pid_file = tmp / "xenstored.pid"
    d = daemon_factory("--pid-file", str(pid_file))
    client = SyncClient(d.socket, timeout=5)
    client.write("/x", b"1")
    assert Path(d.socket).exists() and pid_file.exists()
    d.signal(sig)
    assert d.proc.wait(10) == 0
    assert not Path(d.socket).exists(), "the socket must be removed at shutdown"
    assert not pid_file.exists(), "the pid file must be removed at shutdown"
    with pytest.raises(ConnectionClosed):
        client.read("/x")
    client.close()
    assert "Traceback" not in d.stderr()


def test_pid_file_holds_the_daemon_pid(daemon_factory: DaemonFactory) -> None:
    pid_file = daemon_factory.new_dir() / "run" / "pid"
    pid_file.parent.mkdir()
    d = daemon_factory("--pid-file", str(pid_file))
    assert _wait_for(pid_file.exists)
    assert pid_file.read_text().strip() == str(d.pid)


def test_socket_mode_0600_and_directory_created(daemon_factory: DaemonFactory) -> None:
    base = daemon_factory.new_dir()
    path = base / "not" / "yet" / "socket"
    d = daemon_factory(socket_path=str(path))
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert path.parent.is_dir()
    with SyncClient(d.socket, timeout=5) as xs:
        xs.write("/ok", b"")


def test_stale_socket_file_is_replaced(daemon_factory: DaemonFactory) -> None:
    path = daemon_factory.new_dir() / "socket"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()  # the file stays, nobody listens: a crashed daemon's socket
    d = daemon_factory(socket_path=str(path))
    with SyncClient(d.socket, timeout=5) as xs:
        xs.write("/fresh", b"1")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_access_log_has_one_line_per_request(daemon_factory: DaemonFactory) -> None:
    log = daemon_factory.new_dir() / "access.log"
    d = daemon_factory("--access-log", str(log))
    with SyncClient(d.socket, timeout=5) as xs:
        xs.write("/logged/a", b"hello")
        xs.read("/logged/a")
        with pytest.raises(Exception):  # noqa: B017 - any refusal is logged too
            xs.read("/logged/missing")
        xs.directory("/logged")
        tid = xs.transaction_start()
        xs.write("/logged/b", b"x", tx=tid)
        xs.transaction_end(tid)
    assert _wait_for(lambda: len(_lines(log)) >= 7)
    lines = _lines(log)
    assert len(lines) == 7, lines
    ops = [next(w for w in line.split() if w.isupper() and "=" not in w) for line in lines]
    assert ops == [
        "WRITE",
        "READ",
        "READ",
        "DIRECTORY",
        "TRANSACTION_START",
        "WRITE",
        "TRANSACTION_END",
    ]
    assert "/logged/a" in lines[0] and "ENOENT" in lines[2]


def test_sighup_reopens_the_access_log(daemon_factory: DaemonFactory) -> None:
    log = daemon_factory.new_dir() / "access.log"
    d: DaemonProcess = daemon_factory("--access-log", str(log))
    with SyncClient(d.socket, timeout=5) as xs:
        xs.write("/before-hup", b"")
        assert _wait_for(lambda: any("/before-hup" in x for x in _lines(log)))
        rotated = log.with_name("access.log.1")
        log.rename(rotated)
        d.signal(signal.SIGHUP)
        i = 0

        def new_file_used() -> bool:
            nonlocal i
            i += 1
            xs.write(f"/after-hup-{i}", b"")
            return log.exists() and any("/after-hup-" in x for x in _lines(log))

        assert _wait_for(new_file_used), "requests after SIGHUP must go to a new file"
        xs.write("/definitely-new", b"")
        assert _wait_for(lambda: any("/definitely-new" in x for x in _lines(log)))
        assert any("/before-hup" in x for x in _lines(rotated))
        assert not any("/definitely-new" in x for x in _lines(rotated))
        assert not any("/before-hup" in x for x in _lines(log))
    assert d.alive()


def _nofile_limits(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no 'Max open files' line")


def test_daemon_raises_open_file_limit_to_hard(daemon_factory: DaemonFactory) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 64:
        pytest.skip(f"hard RLIMIT_NOFILE is only {hard}")
    low = 64

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    d = daemon_factory(preexec_fn=lower)
    got_soft, got_hard = _nofile_limits(d.pid)
    assert got_soft == got_hard, f"soft {got_soft} was not raised to hard {got_hard}"
    assert got_soft != str(low)
