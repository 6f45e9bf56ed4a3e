"""The daemons under test: compare.py's presets, and starting, checking and stopping one.

A daemon is a command template.  It is split like a shell command line, then ``{dir}``
(a fresh directory per run; the daemon must serve ``{dir}/socket``), ``{repo}`` (this
repository) and ``{shared}`` (the shared directory beside it) are substituted.  It is
run without a shell, and it must ``exec`` into the daemon so that the process started
is the daemon whose CPU time is measured.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from xsbench.measure import JsonDict
from xsbench.report import metric
from xsbench.wire import XS_DIRECTORY, Connection

REPO = Path(__file__).resolve().parent.parent.parent

PRESETS: dict[str, str] = {
    # Debian's C xenstored and oxenstored, the hypervisor faked by the LD_PRELOAD shim.
    "cxenstored": "{shared}/reference/peer.sh cxenstored {dir}",
    "oxenstored": "{shared}/reference/peer.sh oxenstored {dir}",
    # -N: in the foreground (it detaches otherwise, and the process started would be gone).
    "pyxenstored": "{repo}/.venv/bin/python -m pyxenstored -N --socket {dir}/socket",
    # The crash journal's cost (issue 9): without it, and with it on tmpfs as on a host
    # (its default place is the socket's directory, /run/xenstored there; {dir} is on
    # whatever /tmp is).
    "pyxenstored-nojournal": "{repo}/.venv/bin/python -m pyxenstored -N --no-journal "
    "--socket {dir}/socket",
    "pyxenstored-shm": "{repo}/.venv/bin/python -m pyxenstored -N --state-dir /dev/shm{dir} "
    "--socket {dir}/socket",
    # C's conflict rule (generation counts), for the bootstorm workload.
    "pyxenstored-generation": "{repo}/.venv/bin/python -m pyxenstored -N "
    "--transaction-conflicts generation --socket {dir}/socket",
    # With the simulated Xen in {dir}/fakexen, for the ring-* workloads (rings.py);
    # FAKEXEN_NDOMS: the domids that exist (both SimXen and the reference fakexen.c read it).
    "cxenstored-rings": "env FAKEXEN_NDOMS=4096 {shared}/reference/rings.sh {dir}",
    "pyxenstored-rings": "env FAKEXEN_NDOMS=4096 {repo}/.venv/bin/python -m pyxenstored -N "
    "--socket {dir}/socket --sim-xen {dir}/fakexen",
}
DEFAULT_DAEMONS = ("cxenstored", "oxenstored")


@dataclass(frozen=True)
class DaemonSpec:
    """How to start one daemon under test."""

    name: str
    template: str

    def argv(self, run_dir: Path, shared: Path) -> list[str]:
        values = {"dir": str(run_dir), "repo": str(REPO), "shared": str(shared)}
        return [token.format(**values) for token in shlex.split(self.template)]


def parse_daemon(text: str) -> DaemonSpec:
    """A preset name or ``NAME=TEMPLATE``; ValueError says what is wrong."""
    if "=" in text:
        name, template = text.split("=", 1)
        name = name.strip()
        if not name or not template.strip():
            raise ValueError(f"expected NAME=TEMPLATE, got {text!r}")
        if "{dir}" not in template:
            raise ValueError(f"template for {name} lacks {{dir}}: {template!r}")
        return DaemonSpec(name, template)
    if text not in PRESETS:
        raise ValueError(
            f"unknown preset {text!r} (presets: {', '.join(PRESETS)}; or give NAME=TEMPLATE)"
        )
    return DaemonSpec(text, PRESETS[text])


@dataclass
class RunningDaemon:
    spec: DaemonSpec
    proc: subprocess.Popen[bytes]
    run_dir: Path
    log: IO[bytes]
    comm: str = ""

    @property
    def socket(self) -> Path:
        return self.run_dir / "socket"

    @property
    def pid(self) -> int:
        return self.proc.pid


def log_tail(path: Path, lines: int = 15) -> str:
    """The end of a log file, formatted to be appended to an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    tail = text.splitlines()[-lines:]
    return "; log:\n" + "\n".join(tail) if tail else "; empty log"


def daemon_answers(sock_path: Path) -> bool:
    """True once the daemon accepts a connection and answers a request."""
    try:
        with Connection(str(sock_path), timeout=1.0) as conn:
            conn.sock.settimeout(2.0)
            conn.request_raw(XS_DIRECTORY, b"/\0")
        return True
    except (OSError, TimeoutError):
        return False


def start_daemon(
    spec: DaemonSpec, prefix: list[str], shared: Path, timeout: float
) -> RunningDaemon:
    """Start one daemon in a fresh directory and its own session; wait until it serves."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"xsbench-{spec.name}-", dir="/tmp"))
    argv = prefix + spec.argv(run_dir, shared)
    log = (run_dir / "daemon.log").open("wb")
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise RuntimeError(f"cannot start {spec.name}: {shlex.join(argv)}: {exc}") from exc
    daemon = RunningDaemon(spec, proc, run_dir, log)
    try:
        wait_until_serving(daemon, timeout, shlex.join(argv))
    except RuntimeError:
        stop_daemon(daemon)  # run_dir is kept: the error names it
        raise
    except BaseException:  # interrupted
        stop_daemon(daemon)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):
        daemon.comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
    return daemon


def wait_until_serving(daemon: RunningDaemon, timeout: float, command: str) -> None:
    """Wait until the daemon answers on its socket; RuntimeError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while not (daemon.socket.exists() and daemon_answers(daemon.socket)):
        if daemon.proc.poll() is not None:
            why = f"exited with status {daemon.proc.returncode} before serving its socket"
        elif time.monotonic() > deadline:
            why = f"did not answer on {daemon.socket} within {timeout:.0f} s"
        else:
            time.sleep(0.05)
            continue
        log = log_tail(daemon.run_dir / "daemon.log")
        raise RuntimeError(f"{daemon.spec.name} {why} ({command}); kept {daemon.run_dir}{log}")


def stop_daemon(daemon: RunningDaemon, grace: float = 5.0) -> None:
    """Stop the daemon: SIGTERM, then SIGKILL, to the process group we created for it.

    The group is signalled only while its leader (the daemon, not yet
    reaped) exists, so the id cannot belong to anyone else.
    """
    proc = daemon.proc
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    daemon.log.close()


def shutdown_metrics(log: Path) -> JsonDict:
    """Counters a daemon logs when it stops: pyxenstored's "look at every ring" sweeps."""
    try:
        found = re.search(r"rings closed: \d+ turns, (\d+) sweeps", log.read_text(errors="replace"))
    except OSError:
        return {}
    return {"daemon_ring_sweeps": metric(int(found[1]), "sweeps", "lower")} if found else {}
