"""The compiled load generator (``loadgen.c``) behind ``xsload.py throughput --native``.

Sixteen Python client processes on one core spend about as much CPU on a request as the
daemon does, so the socket throughput workload partly measures them. ``--native`` runs
the same requests (one key per connection, an evenly spread READ/WRITE mix, ``--pipeline``
in flight) from one C process with epoll instead, so that the daemon sets the pace. The
report says how busy each side was; a native run whose load core is near 100 % busy is
again measuring the load.

The program is built on first use with the system's C compiler (``$CC``, else ``cc``)
into ``$XDG_CACHE_HOME/pyxenstored-bench`` (else ``~/.cache``), named by a hash of its
source, so that an edit rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from xsbench.measure import DaemonCpu

SOURCE = Path(__file__).with_name("loadgen.c")
#: how long the generator may take to connect and write its keys, and to finish
SETUP_TIMEOUT = 60.0


@dataclass
class NativeRun:
    """One measured phase of the generator, seen from the parent (workloads makes it a
    ``procs.Phase`` of one worker per connection)."""

    clients: list[dict[str, int]] = field(default_factory=list)  # counters per connection
    wall: float = 0.0  # from "go" to the report
    cpu_before: float | None = None  # the daemon's CPU seconds at "go"
    cpu_after: float | None = None  # and at the report
    load_cpu: float = 0.0  # the generator's own CPU seconds in the phase
    failure: str | None = None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pyxenstored-bench"


def build() -> Path:
    """The generator's executable, built now if this source has not been built yet.

    Raises:
        RuntimeError: no C compiler, or the build failed (its output in the message).
    """
    source = SOURCE.read_bytes()
    exe = cache_dir() / f"xsloadgen-{hashlib.sha256(source).hexdigest()[:16]}"
    if exe.exists():
        return exe
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("--native needs a C compiler (cc or $CC) to build xsbench/loadgen.c")
    exe.parent.mkdir(parents=True, exist_ok=True)
    partial = exe.with_name(f"{exe.name}.{os.getpid()}.tmp")
    done = subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(partial), str(SOURCE), "-lm"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"building {SOURCE.name} failed:\n{done.stderr}")
    os.replace(partial, exe)  # atomic: a concurrent build leaves one whole executable
    return exe


def run(
    socket_path: str,
    key_prefix: str,
    clients: int,
    seconds: float,
    depth: int,
    read_fraction: float,
    value_size: int,
    cpu: DaemonCpu,
) -> NativeRun:
    """One closed-loop phase of ``clients`` connections from the compiled generator; a
    failure of the generator is the result's ``failure``."""
    exe = build()
    phase = NativeRun()
    argv = [
        str(exe),
        socket_path,
        str(clients),
        repr(seconds),
        str(depth),
        repr(read_fraction),
        str(value_size),
        key_prefix,
    ]
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            if proc.stdout.readline().strip() != "ready":
                proc.wait(SETUP_TIMEOUT)
                phase.failure = _why(proc)
                return phase
            phase.cpu_before = cpu.seconds()
            t0 = time.perf_counter()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            report = proc.stdout.readline()
            phase.wall = time.perf_counter() - t0
            phase.cpu_after = cpu.seconds()
            proc.wait(SETUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            phase.failure = "the native load generator did not finish"
            return phase
        if proc.returncode != 0 or not report:
            phase.failure = _why(proc)
            return phase
    parsed = json.loads(report)
    phase.clients = parsed["clients"]
    phase.load_cpu = float(parsed["cpu"])
    return phase


def _why(proc: subprocess.Popen[str]) -> str:
    err = proc.stderr.read().strip() if proc.stderr is not None else ""
    return f"the native load generator failed (status {proc.returncode}): {err or 'no message'}"
