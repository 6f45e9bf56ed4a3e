"""Starting the real command as a host does, and a fake systemd notify socket."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

#: the installed command, which detaches like C xenstored (``python -m`` does not)
COMMAND = [str(Path(sys.executable).with_name("pyxenstored"))]


def short_dir() -> Path:
    """A fresh directory with a path short enough for AF_UNIX sockets."""
    base = tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="pyxd-", dir=base if len(base) < 60 else "/tmp"))


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without systemd's variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "XENSTORED_PATH")
    }
    env.update(extra)
    return env


def until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def answers(path: str) -> bool:
    """Whether the daemon socket at ``path`` answers a request now (no waiting)."""
    from pyxenstored.client import SyncClient

    try:
        with SyncClient(path, timeout=5) as xs:
            xs.write("/probe", b"1")
            return xs.read("/probe") == b"1"
    except OSError:
        return False


class Pids:
    """Detached daemons started by a test, stopped by pid at teardown."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def add(self, pid: int) -> int:
        self.pids.append(pid)
        return pid

    def adopt(self, pid_file: Path) -> int | None:
        """The pid in ``pid_file`` (if any), stopped at teardown. Call it before any
        assertion, so that a failing test leaves no daemon behind."""
        try:
            text = pid_file.read_text().strip()
        except OSError:
            return None
        return self.add(int(text)) if text.isdigit() else None

    def stop(self, pid: int, timeout: float = 10.0) -> bool:
        """SIGTERM, then wait until it is gone; True if it went by itself."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        return until(lambda: not alive(pid), timeout)

    def cleanup(self) -> None:
        for pid in self.pids:
            if alive(pid) and not self.stop(pid, 5):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class FakeSystemd:
    """A datagram socket standing for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[dict[str, str]] = []

    def receive(self, timeout: float = 10.0) -> dict[str, str]:
        """The next notification, as KEY -> VALUE."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.split("\n") if line)
        self.messages.append(fields)
        return fields

    def wait_for(self, key: str, timeout: float = 10.0) -> dict[str, str]:
        """Skip notifications until one with ``key``."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.receive(max(0.01, deadline - time.monotonic()))
            if key in fields:
                return fields

    def pending(self) -> list[dict[str, str]]:
        """Every notification already queued (no waiting)."""
        out = []
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                data = self.sock.recv(4096).decode()
                out.append(dict(line.split("=", 1) for line in data.split("\n") if line))
        self.messages += out
        return out

    def close(self) -> None:
        self.sock.close()


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion (a detaching start returns once it serves)."""
    assert "-N" in args or "--log-file" in args, "detached without --log-file logs to the host"
    return subprocess.run(
        [*COMMAND, *args],
        env=env or clean_env(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def fake_systemd(directory: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(directory / "notify"))
    try:
        yield fake
    finally:
        fake.close()


def start_detached(
    tmp: Path, pids: Pids, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Start detached (no -N) serving ``tmp/socket``, with ``tmp/pid`` and ``tmp/log``;
    returns the daemon's pid (read from the pid file) and the command's stdout."""
    result = run(
        "--socket", str(tmp / "socket"), "--pid-file", str(tmp / "pid"),
        "--log-file", str(tmp / "log"), *extra, env=env,
    )  # fmt: skip
    pid = pids.adopt(tmp / "pid")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and pid is not None
    return pid, result.stdout
