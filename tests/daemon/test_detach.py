"""Detaching like C xenstored: the command returns once the daemon serves (or fails
with one line), the daemon is a new session's, away from the caller's files, and its
log goes where the options and the host say."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyxenstored.runtime import daemon as daemon_mod
from pyxenstored.runtime.daemon import configure_logging, log_target

from .helpers import Pids, alive, answers, run, start_detached, until


def test_returns_only_once_serving_with_a_live_daemon_pid(tmp: Path, pids: Pids) -> None:
    pid, out = start_detached(tmp, pids)
    # No waiting here: the command returned, so the daemon serves now.
    assert answers(str(tmp / "socket"))
    assert alive(pid)
    assert out == ""
    assert os.getsid(pid) != os.getsid(0), "the daemon runs in a session of its own"
    assert os.getsid(pid) != pid, "... and does not lead it (no terminal can be regained)"
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == os.devnull
    assert pids.stop(pid)
    assert not (tmp / "socket").exists() and not (tmp / "pid").exists()
    log = (tmp / "log").read_text()
    assert "ready: serving" in log and "stopped" in log


def test_output_pid_prints_the_daemon_pid(tmp: Path, pids: Pids) -> None:
    pid, out = start_detached(tmp, pids, "-P")
    assert out == f"{pid}\n"


def test_relative_paths_survive_the_chdir(tmp: Path, pids: Pids) -> None:
    result = run(
        "--socket", "socket", "--pid-file", "pid", "--log-file", "log", "-T", "trace",
        cwd=tmp,
    )  # fmt: skip
    pid = pids.adopt(tmp / "pid")
    assert result.returncode == 0, result.stderr
    assert pid is not None and answers(str(tmp / "socket"))
    assert pids.stop(pid)
    assert "WRITE" in (tmp / "trace").read_text()
    assert "ready" in (tmp / "log").read_text()


def test_sighup_reopens_the_log_file(tmp: Path, pids: Pids) -> None:
    pid, _ = start_detached(tmp, pids)
    (tmp / "log").rename(tmp / "log.1")  # what logrotate does
    os.kill(pid, signal.SIGHUP)
    assert until(lambda: (tmp / "log").exists())
    assert pids.stop(pid)
    assert "stopped" in (tmp / "log").read_text()
    assert "stopped" not in (tmp / "log.1").read_text()


def blocked(tmp: Path) -> str:
    """A socket path whose directory cannot be created (its parent is a file)."""
    (tmp / "file").write_text("")
    return str(tmp / "file" / "dir" / "socket")


@pytest.mark.parametrize("mode", [["-N"], []], ids=["foreground", "detached"])
@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--socket", "BLOCKED"], "cannot listen on "),
        (["--log-file", "/nonexistent-dir/log"], "cannot open the log file: "),
        (["--access-log", "/nonexistent-dir/log"], "cannot open the access log: "),
        (["--sim-xen", "BLOCKED"], "cannot open Xen: "),
        (["--stub-domain", "--xen", "none"], "stub-domain mode needs a hypervisor"),
        (["-E", "x"], 'invalid parameter value "x"'),
    ],
    ids=["socket", "log-file", "access-log", "sim-xen", "stub", "option"],
)
def test_a_start_up_failure_is_one_line_and_exit_1(
    tmp: Path, mode: list[str], extra: list[str], reason: str
) -> None:
    args = [blocked(tmp) if a == "BLOCKED" else a for a in extra]
    if "--socket" not in args and "--stub-domain" not in args:
        args += ["--socket", str(tmp / "socket")]
    if "--log-file" not in args:  # not the host's syslog or /var/log/xen
        args += ["--log-file", str(tmp / "log")]
    result = run(*mode, "--pid-file", str(tmp / "pid"), *args)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pyxenstored: {reason}"), lines[0]
    assert not (tmp / "pid").exists(), "no pid file unless serving"


def test_the_failed_daemon_leaves_no_process_behind(tmp: Path) -> None:
    result = run("--socket", blocked(tmp), "--log-file", str(tmp / "log"))
    assert result.returncode == 1
    assert "start-up failed: cannot listen on" in (tmp / "log").read_text()
    assert until(lambda: not any(_daemons_logging_to(tmp / "log")), 5)


def _daemons_logging_to(log: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(log).encode() in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_log_target_choices(tmp: Path) -> None:
    dev_log = tmp / "devlog"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(dev_log))
        assert log_target("/x/log", True, str(dev_log), str(tmp)) == ("file", "/x/log")
        assert log_target("/x/log", False, str(dev_log), str(tmp)) == ("file", "/x/log")
        assert log_target(None, False, str(dev_log), str(tmp)) == ("stderr", None)
        assert log_target(None, True, str(dev_log), str(tmp)) == ("syslog", str(dev_log))
    missing = str(tmp / "no-dev-log")
    assert log_target(None, True, missing, str(tmp)) == (
        "file",
        str(tmp / "pyxenstored.log"),
    )
    assert log_target(None, True, missing, str(tmp / "no-dir")) == ("none", None)
    (tmp / "plain").write_text("")  # /dev/log as a plain file is no syslog
    assert log_target(None, True, str(tmp / "plain"), str(tmp / "no-dir")) == ("none", None)


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


@pytest.mark.usefixtures("root_handlers")
def test_detached_logs_go_to_syslog(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev_log = tmp / "devlog"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(dev_log))
        syslog.settimeout(5)
        monkeypatch.setattr(daemon_mod, "DEV_LOG", str(dev_log))
        assert configure_logging(None, detached=True) == f"syslog {dev_log}"
        logging.getLogger("pyxenstored").warning("hello syslog")
        data = syslog.recv(4096).decode()
    # <facility*8+severity>: daemon (3) warning (4) = 28
    assert data.startswith(f"<28>pyxenstored[{os.getpid()}]: pyxenstored WARNING hello syslog")


@pytest.mark.usefixtures("root_handlers")
def test_detached_logs_fall_back_to_var_log_xen(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_mod, "DEV_LOG", str(tmp / "none"))
    monkeypatch.setattr(daemon_mod, "XEN_LOG_DIR", str(tmp))
    assert configure_logging(None, detached=True) == f"file {tmp / 'pyxenstored.log'}"
    logging.getLogger("pyxenstored").warning("hello file")
    assert "hello file" in (tmp / "pyxenstored.log").read_text()
    monkeypatch.setattr(daemon_mod, "XEN_LOG_DIR", str(tmp / "absent"))
    assert configure_logging(None, detached=True) == "none"


def test_a_second_start_leaves_the_serving_daemon_alone(tmp: Path, pids: Pids) -> None:
    """As C xenstored: the pid file is locked; a second daemon given it exits 0 before
    it binds a socket (the first keeps serving)."""
    first, _ = start_detached(tmp, pids)
    for mode in ([], ["-N"]):
        result = run(
            *mode, "--socket", str(tmp / "other"), "--pid-file", str(tmp / "pid"),
            "--log-file", str(tmp / "log2"),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stderr == f"pyxenstored: already running as pid {first} ({tmp / 'pid'})\n"
        assert not (tmp / "other").exists()
    assert answers(str(tmp / "socket"))
    assert int((tmp / "pid").read_text()) == first
    assert pids.stop(first)


def test_a_pid_file_locked_by_c_xenstored_counts(tmp: Path) -> None:
    """C xenstored holds a lockf() lock on its pid file; we see it the same way."""
    with open(tmp / "pid", "w") as held:
        held.write("4242\n")
        held.flush()
        fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run("-N", "--socket", str(tmp / "socket"), "--pid-file", str(tmp / "pid"))
    assert result.returncode == 0
    assert result.stderr.startswith("pyxenstored: already running as pid 4242")


def test_a_stale_pid_file_is_replaced(tmp: Path, pids: Pids) -> None:
    (tmp / "pid").write_text("999999\n")  # a daemon killed -9: nobody holds the lock
    pid, _ = start_detached(tmp, pids)
    assert pid != 999999 and alive(pid)
    assert pids.stop(pid)


def test_python_dash_m_stays_in_the_foreground(tmp: Path) -> None:
    """``python -m pyxenstored`` (no -N) serves from the process it started in, so that
    harnesses which start and stop the daemon by its pid (the conformance runner) keep
    working; only the installed command detaches like C."""
    sock = tmp / "socket"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyxenstored", "--socket", str(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert until(lambda: answers(str(sock)))
        assert proc.poll() is None, "python -m pyxenstored detached"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert not sock.exists()
