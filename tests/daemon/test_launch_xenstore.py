"""Xen's start scripts starting pyxenstored as their ``XENSTORED``.

Xen's /etc/xen/scripts/launch-xenstore (xenstored.service's ExecStart upstream; Debian
installs it), unmodified but for its absolute paths, which point into a temporary
directory (nothing outside it is written), in both of its modes: systemd
(``systemd-notify --booted`` succeeds, the unit waits for READY=1) and plain (it polls
for the pid file). And the start line of Debian 12's own /etc/init.d/xen."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import FakeSystemd, Pids, alive, answers, clean_env

SCRIPT = Path("/etc/xen/scripts/launch-xenstore")
PYXENSTORED = Path(sys.executable).parent / "pyxenstored"

#: the script's absolute paths -> where they point in the test directory ({d}).
REWRITES = {
    "/etc/xen/scripts/hotplugpath.sh": "{d}/hotplugpath.sh",
    "/etc/default/xencommons": "{d}/xencommons",
    "/var/run/xen": "{d}/run/xen",
    "/var/log/xen": "{d}/log",
    "/proc/$XS_PID/oom_score_adj": "{d}/oom_score_adj",
}
#: absolute paths the script may keep: only read or executed, never written
READ_ONLY = re.compile(r"^(/bin/|/usr/|/proc/sys/|/dev/null$)")


def _prerequisites() -> None:
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is absent (Debian's xen-utils-common installs it)")
    for tool in ("bash", "prlimit"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not PYXENSTORED.exists():
        pytest.skip(f"{PYXENSTORED}: pyxenstored's console script is not installed here")


def _open_files_limit() -> int:
    """A value prlimit may set without privileges: at most our hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    return nr_open if hard == resource.RLIM_INFINITY else min(hard, nr_open)


class Host:
    """The script and everything it reads or writes, in one temporary directory."""

    def __init__(self, directory: Path, pids: Pids, booted: bool, poll_seconds: int = 30) -> None:
        _prerequisites()
        self.dir = directory
        self.pids = pids
        text = SCRIPT.read_text().replace("local timeout=30", f"local timeout={poll_seconds}")
        for old, new in REWRITES.items():
            text = text.replace(old, new.format(d=directory))
        code = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        paths = re.findall(r"(?<![\w$}./-])/[\w./$-]+", code)
        written = [p for p in paths if not p.startswith(f"{directory}/")]
        written = [p for p in written if not READ_ONLY.match(p)]
        assert not written, f"unrewritten absolute paths in {SCRIPT}: {written}"
        self.script = directory / "launch-xenstore"
        self.script.write_text(text)
        (directory / "hotplugpath.sh").write_text(f'LIBEXEC_BIN="{directory}/libexec"\n')
        (directory / "log").mkdir()
        self.socket = directory / "socket"
        self.pid_file = directory / "run" / "xen" / "xenstored.pid"
        (directory / "xencommons").write_text(
            "XENSTORETYPE=daemon\n"
            f"XENSTORED={PYXENSTORED}\n"
            f'XENSTORED_ARGS="--socket {self.socket} --log-file {directory}/daemon.log'
            ' --xen none"\n'
            f"XENSTORED_MAX_OPEN_FDS={_open_files_limit()}\n"
            "XENSTORED_TRACE=1\n"
        )
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "systemd-notify"  # answers --booted: are we under systemd?
        fake.write_text(f'#!/bin/sh\n[ "$1" = --booted ] && exit {0 if booted else 1}\nexit 0\n')
        fake.chmod(0o755)
        self.path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"

    def launch(self, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.monotonic()
        result = subprocess.run(
            ["bash", str(self.script)],
            env=clean_env(PATH=self.path, **env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.pids.adopt(self.pid_file)
        return result, time.monotonic() - t0

    def daemon_pid(self) -> int:
        return int(self.pid_file.read_text())


def check_serving(host: Host) -> int:
    pid = host.daemon_pid()
    assert alive(pid)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(PYXENSTORED).encode() in cmdline and str(host.pid_file).encode() in cmdline
    assert answers(str(host.socket))
    # The script's -T (XENSTORED_TRACE) became our access log; its oom_score_adj write
    # went to the test directory.
    assert "WRITE" in (host.dir / "log" / "xenstored-trace.log").read_text()
    assert (host.dir / "oom_score_adj").read_text().strip() == "-500"
    return pid


def test_launch_xenstore_under_systemd(tmp: Path, pids: Pids) -> None:
    host = Host(tmp, pids, booted=True)
    systemd = FakeSystemd(str(tmp / "notify"))
    try:
        result, _ = host.launch(NOTIFY_SOCKET=systemd.path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Starting {PYXENSTORED}" in result.stdout
        # READY=1 came from the daemon before the script went on (the unit's start).
        ready = [m for m in systemd.pending() if m.get("READY") == "1"]
        assert ready and ready[0]["STATUS"].startswith(f"serving {host.socket}")
        pid = check_serving(host)
        assert pids.stop(pid)
        assert systemd.wait_for("STOPPING")["STOPPING"] == "1"
    finally:
        systemd.close()
    assert not host.pid_file.exists() and not host.socket.exists()
    assert "Traceback" not in (tmp / "daemon.log").read_text()


def test_launch_xenstore_polling_for_the_pid_file(tmp: Path, pids: Pids) -> None:
    host = Host(tmp, pids, booted=False)
    result, elapsed = host.launch()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Could not start" not in result.stdout
    # The pid file existed when our command returned: the script never slept (one dot
    # per second of polling would follow its "...").
    assert result.stdout == f"Starting {PYXENSTORED}...\n"
    assert elapsed < 20
    pid = check_serving(host)
    # Run again, as systemd may: the pid file says a xenstored is up, nothing starts.
    again, _ = host.launch()
    assert again.returncode == 0 and "Starting" not in again.stdout
    assert host.daemon_pid() == pid
    assert pids.stop(pid)
    assert not host.pid_file.exists()


def test_launch_xenstore_reports_a_daemon_that_cannot_start(tmp: Path, pids: Pids) -> None:
    host = Host(tmp, pids, booted=False, poll_seconds=2)  # its 30 s of polling, shortened
    (tmp / "blocker").write_text("")  # the socket's directory cannot be created
    commons = (tmp / "xencommons").read_text()
    (tmp / "xencommons").write_text(commons.replace(str(host.socket), f"{tmp}/blocker/s"))
    result, _ = host.launch()
    # The script ignores the command's status and polls, then says "Could not start".
    # What we check is our one line on its stderr, and that no daemon was left.
    assert "pyxenstored: cannot listen on" in result.stderr
    assert "Traceback" not in result.stderr
    assert not host.pid_file.exists()
    assert result.returncode == 1 and "Could not start" in result.stdout


def test_debian_init_script_start_line(tmp: Path, pids: Pids) -> None:
    """Debian 12 starts xenstored from /etc/init.d/xen (settings in /etc/default/xen):

        start-stop-daemon --start --quiet --pidfile /run/xenstore.pid \\
            --exec /usr/bin/choom -- -n -1000 "$XENSTORED" -- \\
            $XENSTORED_ARGS --pid-file /run/xenstore.pid

    then polls ``xenstore-read -s /`` for up to 30 s. The same line here, with the pid
    file in the test directory and oom score 0 (-1000 needs root)."""
    tools = {t: shutil.which(t) for t in ("start-stop-daemon", "choom")}
    missing = [t for t, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    if not PYXENSTORED.exists():
        pytest.skip(f"{PYXENSTORED}: pyxenstored's console script is not installed here")
    pid_file, sock = tmp / "xenstore.pid", tmp / "socket"
    args = f"--socket {sock} --log-file {tmp}/daemon.log --xen none".split()
    line = [
        str(tools["start-stop-daemon"]), "--start", "--quiet", "--pidfile", str(pid_file),
        "--exec", str(tools["choom"]), "--", "-n", "0", str(PYXENSTORED), "--",
        *args, "--pid-file", str(pid_file),
    ]  # fmt: skip
    env = clean_env(PATH=os.environ.get("PATH", "/usr/bin:/bin"))
    result = subprocess.run(line, env=env, capture_output=True, text=True, timeout=60)
    pid = pids.adopt(pid_file)
    assert result.returncode == 0, result.stderr
    assert pid is not None and alive(pid)
    reader = shutil.which("xenstore-read")
    if reader is not None:  # the script's own readiness test, at once
        probe = subprocess.run(
            [reader, "-s", "/"], env=clean_env(XENSTORED_PATH=str(sock)), timeout=10
        )
        assert probe.returncode == 0
    assert answers(str(sock))
    # The script's "already running?" test cannot recognise a Python daemon by its
    # executable, so a second start runs us again: we exit 0 and leave the first alone.
    again = subprocess.run(line, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already running" in again.stderr
    assert pids.stop(pid)
