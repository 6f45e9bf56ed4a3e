"""benchmarks/ringpath.py still runs: a real server, domain 1's ring, its requests
answered through RingManager's one-ring fast path (the kick syscalls taken out)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .simharness import subprocess_env

RINGPATH = Path(__file__).resolve().parents[2] / "benchmarks" / "ringpath.py"


def test_ringpath_benchmark_answers_reads_and_writes() -> None:
    for journal in ([], ["--no-journal"]):
        out = subprocess.run(
            [sys.executable, str(RINGPATH), "--iterations", "200", "--repeat", "1", *journal],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
            check=True,
        ).stdout
        rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
        assert set(rows) == {"read", "write"}, out
        assert all(float(v) > 0 for cols in rows.values() for v in cols), out


RINGFLOOR = RINGPATH.parent / "ringfloor.py"
RINGS = RINGPATH.parent / "rings.py"


def test_ringfloor_daemon_serves_the_ring_latency_workload() -> None:
    """benchmarks/ringfloor.py (the daemon with a canned turn) carries rings.py's latency
    workload: its READs return what its WRITEs wrote, as the workload checks."""
    run_dir = Path(tempfile.mkdtemp(prefix="pyxs-floor-", dir="/tmp"))
    env = subprocess_env()
    env["FAKEXEN_NDOMS"] = "16"
    sock = run_dir / "socket"
    daemon = subprocess.Popen(
        [
            sys.executable,
            str(RINGFLOOR),
            "-N",
            "--socket",
            str(sock),
            "--sim-xen",
            str(run_dir / "fakexen"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert daemon.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        out = subprocess.run(
            [
                sys.executable,
                str(RINGS),
                "--socket",
                str(sock),
                "--daemon-pid",
                str(daemon.pid),
                "--json",
                str(run_dir / "out.json"),
                "latency",
                "--iterations",
                "200",
                "--warmup",
                "20",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        ops = [line.split()[0] for line in out.stdout.splitlines() if line[:4] in ("READ", "WRIT")]
        assert ops == ["READ", "WRITE"], out.stdout
        # The daemon's CPU per request, and its split into user and system time.
        metrics = json.loads((run_dir / "out.json").read_text())["metrics"]
        for op in ("read", "write"):
            parts = [metrics[f"{op}.{m}_us_per_req"]["value"] for m in ("cpu", "user", "system")]
            assert all(v >= 0 for v in parts) and parts[0] > 0, metrics
    finally:
        daemon.terminate()
        daemon.wait(10)
        shutil.rmtree(run_dir, ignore_errors=True)
